"""Execution targets: which onnxruntime provider runs a package, with which options.
May import nanoedge.core only (and onnxruntime); never the runtime, torch, export or quantize.

The runtime asks this package for a :class:`TargetProfile` and for sessions; it never talks
to onnxruntime provider names itself. Never imports torch.
"""

from .detect import TargetStatus, detect
from .profiles import TargetProfile, get_profile, known_targets
from .resolve import resolve_target
from .session import create_session

__all__ = ["TargetProfile", "TargetStatus", "detect", "get_profile", "known_targets", "resolve_target", "create_session"]

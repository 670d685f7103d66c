"""Training nanoedge's built-in demo model (torch; part of the ``export`` extra).
May import nanoedge.runtime (the demo world), targets and core; never nanoedge.quantize.

``python -m nanoedge.export.training -o DIR`` runs the whole recipe; see docs/demo-model.md.
"""

from .recipe import TrainConfig
from .train import train_demo

__all__ = ["TrainConfig", "train_demo"]

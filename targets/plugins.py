"""Execution providers shipped as plugin libraries (onnxruntime's EP-library interface).

``onnxruntime-qnn`` is not built into onnxruntime: its provider library is registered once
per process with ``register_execution_provider_library`` and then attached to a session
through ``SessionOptions.add_provider_for_devices`` with the HTP backend library's path.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import threading
from typing import Iterator

from .profiles import TargetProfile

log = logging.getLogger(__name__)
_registered: set[str] = set()
_lock = threading.Lock()


@contextlib.contextmanager
def native_stdout_to_stderr() -> Iterator[None]:
    """Send what native plugin code prints on stdout to stderr while it runs.

    The QNN backend prints a configuration notice on stdout when it loads, which would
    corrupt ``--json`` output and anything piped from our commands.
    """
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no real stdout (embedded): nothing to protect
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _qnn_module():
    return importlib.import_module("onnxruntime_qnn")


def register(profile: TargetProfile) -> None:
    """Register the profile's plugin library with onnxruntime (idempotent)."""
    import onnxruntime as ort

    with _lock:
        if profile.accelerator in _registered:
            return
        module = importlib.import_module(profile.plugin or "")
        ort.set_default_logger_severity(3)  # the plugin warns about Windows-only features at load
        try:
            ort.register_execution_provider_library(profile.accelerator, module.get_library_path())
        except Exception as exc:  # already registered by someone else in this process
            if "already" not in str(exc).lower():
                raise
        _registered.add(profile.accelerator)


def plugin_devices(profile: TargetProfile) -> list:
    """The onnxruntime EP devices the plugin offers (raises ImportError if not installed)."""
    import onnxruntime as ort

    register(profile)
    return [d for d in ort.get_ep_devices() if d.ep_name == profile.accelerator]


def plugin_provider_options(profile: TargetProfile) -> dict[str, str]:
    """Options for add_provider_for_devices, including the backend library path for QNN."""
    options = dict(profile.provider_options.get(profile.accelerator, {}))
    if profile.plugin == "onnxruntime_qnn":
        options.setdefault("backend_path", _qnn_module().get_qnn_htp_path())
    return options

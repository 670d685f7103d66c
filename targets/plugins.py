"""Execution providers shipped as plugin libraries (onnxruntime's EP-library interface).

``onnxruntime-qnn`` and ``onnxruntime-ep-openvino`` are not built into onnxruntime: their
provider library is registered once per process with ``register_execution_provider_library``
and then attached to a session through ``SessionOptions.add_provider_for_devices`` (QNN with
the HTP backend library's path; OpenVINO with its CPU device and precision).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import sys
import threading
from typing import Iterator

from nanoedge.core import settings
from nanoedge.core.errors import InvalidRequestError
from nanoedge.core.settings import cache_dir

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
        # Registered by someone else in this process: its devices are listed already. Asking
        # onnxruntime first beats registering and matching the error's text.
        if not any(d.ep_name == profile.accelerator for d in ort.get_ep_devices()):
            module = importlib.import_module(profile.plugin or "")
            ort.set_default_logger_severity(3)  # the plugin warns about Windows-only features at load
            ort.register_execution_provider_library(profile.accelerator, module.get_library_path())
        _registered.add(profile.accelerator)


def plugin_devices(profile: TargetProfile) -> list:
    """The onnxruntime EP devices the plugin offers (raises ImportError if not installed)."""
    import onnxruntime as ort

    register(profile)
    wanted = profile.plugin_device.items()
    return [d for d in ort.get_ep_devices() if d.ep_name == profile.accelerator and all(d.ep_metadata.get(k) == v for k, v in wanted)]


#: NANOEDGE_OPENVINO_PRECISION values -> OpenVINO's INFERENCE_PRECISION_HINT.
OPENVINO_PRECISIONS = {"f32": "f32", "fp32": "f32", "bf16": "bf16", "f16": "f16", "fp16": "f16"}


def openvino_precision_hint() -> str | None:
    """NANOEDGE_OPENVINO_PRECISION as OpenVINO's INFERENCE_PRECISION_HINT (None: OpenVINO's default).

    Shared by the plugin EP (openvino-cpu) and OpenVINO's own runtime (openvino-native), so the
    variable means the same on both; a value OpenVINO does not know is refused with the list.
    """
    precision = settings.openvino_precision()
    if not precision:
        return None
    if precision not in OPENVINO_PRECISIONS:
        raise InvalidRequestError(
            f"NANOEDGE_OPENVINO_PRECISION={precision!r} is not a precision OpenVINO knows",
            hint=f"use one of {', '.join(sorted(set(OPENVINO_PRECISIONS)))}",
        )
    return OPENVINO_PRECISIONS[precision]


def plugin_provider_options(profile: TargetProfile, threads: int | None = None) -> dict[str, str]:
    """Options for add_provider_for_devices: QNN's backend library; OpenVINO's threads, cache, precision."""
    options = dict(profile.provider_options.get(profile.accelerator, {}))
    if profile.plugin == "onnxruntime_qnn":
        options.setdefault("backend_path", _qnn_module().get_qnn_htp_path())
    if profile.plugin == "onnxruntime_ep_openvino":
        options.update(_openvino_options(profile, threads))
    return options


def _openvino_options(profile: TargetProfile, threads: int | None) -> dict[str, str]:
    """OpenVINO plugin options from the runtime's settings.

    OpenVINO schedules its own threads, so the runtime's thread count (``threads`` /
    NANOEDGE_THREADS) is passed as ``num_of_threads`` rather than onnxruntime's intra-op pool.
    Compiled models are cached under the nanoedge cache folder (``NANOEDGE_OPENVINO_CACHE=0``:
    off): a later load of the same model skips compilation (BK-SDM-Tiny's INT8 UNet: 4.7 s ->
    1.2 s) for about the model's size on disk. ``NANOEDGE_OPENVINO_PRECISION=f32`` keeps float
    ops in FP32 instead of OpenVINO's BF16 default on AMX CPUs (exact against the CPU provider,
    about 4x slower here). Both go through ``load_config``: the plugin ignored its ``cache_dir``
    and ``precision`` options.
    """
    options: dict[str, str] = {}
    if threads:
        options["num_of_threads"] = str(threads)
    config: dict[str, str] = {}
    if settings.openvino_cache():
        folder = cache_dir() / "openvino-cpu"
        folder.mkdir(parents=True, exist_ok=True)
        config["CACHE_DIR"] = str(folder)
    precision = openvino_precision_hint()
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    if config:
        options["load_config"] = json.dumps({profile.plugin_device.get("ov_device", "CPU"): config})
    return options

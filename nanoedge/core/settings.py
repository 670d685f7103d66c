"""Every ``NANOEDGE_*`` environment variable, read in one place.

Each setting is a function read at call time (not at import), so a test or a long-lived
server that changes the environment sees the new value. A variable that is unset or empty
means "use the default"; what each one does is said where it is used:

=============================== ===============================================================
``NANOEDGE_CACHE_DIR``          the user's cache folder (verified hashes, provider caches)
``NANOEDGE_DEFAULT_MODEL``      the package used when no ``-m`` is given
``NANOEDGE_THREADS``            intra-op threads when the caller passes none
``NANOEDGE_SPIN``               ``1``: idle onnxruntime pool threads spin (default: they sleep)
``NANOEDGE_OPENVINO_DEVICE``    OpenVINO's device (CPU, GPU, NPU) for the openvino target
``NANOEDGE_OPENVINO_CACHE``     ``0``: no OpenVINO model cache for openvino-cpu and openvino-native
``NANOEDGE_OPENVINO_PRECISION`` OpenVINO's inference precision for openvino-cpu and openvino-native (f32, bf16, f16)
``NANOEDGE_AUTO_MEASURE``       ``0``: target auto takes the first usable CPU target instead of timing them
``NANOEDGE_API_KEYS``           comma-separated bearer keys accepted by ``nanoedge serve``
=============================== ===============================================================
"""

from __future__ import annotations

import os
from pathlib import Path


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def cache_dir() -> Path:
    """The nanoedge cache folder: ``NANOEDGE_CACHE_DIR`` or ``~/.cache/nanoedge``."""
    base = os.environ.get("NANOEDGE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "nanoedge")
    return Path(base)


def default_model() -> Path | None:
    """The package folder ``NANOEDGE_DEFAULT_MODEL`` names, or None."""
    value = os.environ.get("NANOEDGE_DEFAULT_MODEL")
    return Path(value) if value else None


def threads() -> int | None:
    """``NANOEDGE_THREADS`` as an int, or None (the provider's default: all cores)."""
    value = os.environ.get("NANOEDGE_THREADS")
    return int(value) if value else None


def spin() -> bool:
    """Whether idle onnxruntime pool threads spin (``NANOEDGE_SPIN=1``)."""
    return os.environ.get("NANOEDGE_SPIN", "0") == "1"


def openvino_device() -> str:
    """``NANOEDGE_OPENVINO_DEVICE`` upper-cased, or "" for the profile's own device."""
    return _env("NANOEDGE_OPENVINO_DEVICE").upper()


def openvino_cache() -> bool:
    """Whether openvino-cpu caches compiled models (``NANOEDGE_OPENVINO_CACHE=0`` turns it off)."""
    return os.environ.get("NANOEDGE_OPENVINO_CACHE", "1") != "0"


def openvino_precision() -> str:
    """``NANOEDGE_OPENVINO_PRECISION`` lower-cased, or "" for OpenVINO's default."""
    return _env("NANOEDGE_OPENVINO_PRECISION").lower()


def auto_measure() -> bool:
    """Whether target auto times the usable CPU targets on the package (``NANOEDGE_AUTO_MEASURE=0``: no)."""
    return os.environ.get("NANOEDGE_AUTO_MEASURE", "1") != "0"


def api_keys() -> list[str]:
    """The keys in ``NANOEDGE_API_KEYS`` (comma-separated), stripped, blanks kept out."""
    return [k.strip() for k in os.environ.get("NANOEDGE_API_KEYS", "").split(",") if k.strip()]

"""INT8 quantization of nanoedge packages, calibrated on real trajectories and gated on quality.
May import nanoedge.runtime, nanoedge.targets and nanoedge.core; never nanoedge.export or torch.

    from nanoedge.quantize import QuantizeOptions, quantize_package
    result = quantize_package("pkg-fp32", "pkg-int8", QuantizeOptions(scheme="int8"))
    result.report["end_to_end"]["image_psnr_db"]

Schemes: ``int8`` (static W8A8 QDQ), ``w8a16`` (INT8 weights, 16-bit activations, for
NPUs), ``dynamic`` (CPU) and ``weight-only``; per component, or ``fp32`` to leave one alone.
Needs the ``[quantize]`` extra (onnx); never imports torch. Names load lazily so importing
the package does not load onnx.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "QuantizeOptions": ".options",
    "QuantizeResult": ".options",
    "GateMissed": ".api",
    "QualityGateError": ".api",
    "quantize_package": ".api",
    "resolve_schemes": ".checks",
    "QualityGate": ".gate",
    "Recipe": ".recipes",
    "recipe_for": ".recipes",
    "SCHEMES": ".recipes",
    "COMPONENT_SCHEMES": ".recipes",
    "format_report": ".summary",
    "describe_quantization": ".summary",
    "load_prompts": ".prompts",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module 'nanoedge.quantize' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

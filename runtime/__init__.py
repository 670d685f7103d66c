"""The lean on-device runtime: onnxruntime + numpy + tokenizers + Pillow, never torch.

    from nanoedge.runtime import Pipeline
    pipe = Pipeline.load("my-package", target="cpu")
    images = pipe.generate("a red circle on the left", seed=1)

Names are imported lazily, so ``import nanoedge.runtime.errors`` (used by every stage) does
not load onnxruntime.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Pipeline": ".pipeline",
    "GenerationRequest": ".pipeline",
    "GenerationResult": ".pipeline",
    "ResolvedRequest": ".pipeline",
    "Manifest": ".manifest",
    "Size": ".sizes",
    "parse_size": ".sizes",
    "NanoedgeError": ".errors",
    "InvalidRequestError": ".errors",
    "PackageError": ".errors",
    "MissingDependencyError": ".errors",
    "TargetUnavailableError": ".errors",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module 'nanoedge.runtime' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

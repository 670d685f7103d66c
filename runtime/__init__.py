"""The lean on-device runtime: onnxruntime + numpy + tokenizers + Pillow, never torch.
May import nanoedge.targets and nanoedge.core only; never torch, export or quantize.

    from nanoedge.runtime import Pipeline
    pipe = Pipeline.load("my-package", target="cpu")
    images = pipe.generate("a red circle on the left", seed=1)

Lives here: the pipeline, its sessions, schedulers, tokenizer, images, the HTTP server, the demo.

Names are imported lazily, so importing this package does not load onnxruntime. The package
format, sizes and errors live in :mod:`nanoedge.core`; they are re-exported here because the
public API documents them under ``nanoedge.runtime``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Pipeline": ".pipeline",
    "GenerationRequest": ".pipeline",
    "GenerationResult": ".pipeline",
    "ResolvedRequest": ".pipeline",
    "Manifest": "nanoedge.core.manifest",
    "Size": "nanoedge.core.sizes",
    "parse_size": "nanoedge.core.sizes",
    "NanoedgeError": "nanoedge.core.errors",
    "InvalidRequestError": "nanoedge.core.errors",
    "PackageError": "nanoedge.core.errors",
    "MissingDependencyError": "nanoedge.core.errors",
    "TargetUnavailableError": "nanoedge.core.errors",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module 'nanoedge.runtime' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

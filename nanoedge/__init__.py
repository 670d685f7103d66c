"""nanoedge: a ~0.5B text-to-image diffusion model from PyTorch to the edge.
Top-level package, part of the base layer: holds ``__version__`` and imports nothing.

Subpackages: ``nanoedge.export`` (checkpoint -> ONNX package), ``nanoedge.quantize``
(package -> INT8 package), ``nanoedge.targets`` (execution-provider profiles) and
``nanoedge.runtime`` (the lean, torch-free runtime). This top-level module stays tiny so that
importing any subpackage costs nothing extra.
"""

__version__ = "0.1.0"

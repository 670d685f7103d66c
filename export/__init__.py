"""Checkpoint -> ONNX package. Needs the ``[export]`` extra (torch, diffusers, transformers, onnx).
May import nanoedge.runtime, nanoedge.targets and nanoedge.core; never nanoedge.quantize.

Importing this package is cheap; torch loads only when an export runs.
"""

from .exporter import ExportOptions, export_package

__all__ = ["ExportOptions", "export_package"]

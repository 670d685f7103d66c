"""Checkpoint -> ONNX package. Needs the ``[export]`` extra (torch, diffusers, transformers, onnx).

Importing this package is cheap; torch loads only when an export runs.
"""

from .exporter import ExportOptions, export_package

__all__ = ["ExportOptions", "export_package"]

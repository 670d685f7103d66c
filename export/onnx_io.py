"""Writing one torch module as an ONNX file, with external data for big weights.

The TorchScript exporter (opset 17) is the default: on this class of CPU it exports a 0.5 B
UNet in under a minute, and its graphs (plain MatMul/Softmax attention, InstanceNorm-based
GroupNorm) are what onnxruntime's quantizer and the QNN HTP accept. The dynamo exporter
(opset 18) is available with ``exporter="dynamo"``; it needs ~3x less memory.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from .components import ComponentSpec

log = logging.getLogger(__name__)

TWO_GB = 2**31
EXTERNAL_DATA_SUFFIX = "_data"


def export_component(
    spec: ComponentSpec,
    out_file: Path,
    trace_inputs: tuple[torch.Tensor, ...],
    static: bool,
    opset: int = 17,
    exporter: str = "torchscript",
    external_data: bool | None = None,
    graph_pass: "Callable[[Any], None] | None" = None,
) -> list[Path]:
    """Export ``spec`` to ``out_file``; returns the files written (model + external data).

    ``external_data``: ``True`` always puts weights in ``<file>_data`` (optimum's layout for
    the UNet), ``None`` only when the graph would pass protobuf's 2 GB limit.
    ``graph_pass`` rewrites the loaded ``onnx.ModelProto`` in place before it is saved (e.g.
    attention fusion), so the rewrite costs no extra load/save of the weights.
    """
    import onnx

    out_file.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="export-", dir=out_file.parent))
    try:
        raw = scratch / "model.onnx"
        axes = None if static else spec.dynamic_axes
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about python-bool shape checks
            if exporter == "dynamo":
                dynamic_shapes = None
                if not static:
                    dynamic_shapes = {
                        name: {axis: torch.export.Dim.AUTO for axis in spec.dynamic_axes.get(name, {})}
                        for name in spec.input_names
                    }
                torch.onnx.export(
                    spec.module, trace_inputs, str(raw), input_names=spec.input_names, output_names=spec.output_names,
                    opset_version=max(opset, 18), dynamo=True, dynamic_shapes=dynamic_shapes, external_data=True, verbose=False,
                )
            else:
                torch.onnx.export(
                    spec.module, trace_inputs, str(raw), input_names=spec.input_names, output_names=spec.output_names,
                    dynamic_axes=axes, opset_version=opset, do_constant_folding=True, dynamo=False,
                )
        model = onnx.load(str(raw), load_external_data=True)
        if graph_pass is not None:
            graph_pass(model)
        weight_bytes = sum(len(t.raw_data) for t in model.graph.initializer)
        use_external = weight_bytes > TWO_GB - (64 << 20) if external_data is None else external_data
        if out_file.exists():
            out_file.unlink()
        data_name = out_file.name + EXTERNAL_DATA_SUFFIX
        if use_external:
            onnx.save_model(
                model, str(out_file), save_as_external_data=True, all_tensors_to_one_file=True, location=data_name, size_threshold=1024
            )
            written = [out_file, out_file.parent / data_name]
        else:
            onnx.save_model(model, str(out_file))
            written = [out_file]
        del model
        for path in written:
            os.chmod(path, 0o644)
        return written
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

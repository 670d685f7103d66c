"""Graph rewrites that let NPU providers take a static-shape graph whole.

What the QNN HTP rejected in our static exports (measured with the onnxruntime-qnn
simulator): the ``Shape -> Gather -> Concat -> Reshape`` chains that the TorchScript exporter
writes around GroupNorm (as Reshape + InstanceNormalization + Reshape), the VAE's upsampler
``Resize`` fed by computed sizes, and ``Identity``/``Constant`` clutter. With static shapes
all of that is constant, so onnxruntime's provider-independent (basic) optimizer folds it:
constant folding, shape elimination, redundant-node removal. The result is still a plain
ONNX graph that runs anywhere and is re-verified against PyTorch by the exporter.
"""

from __future__ import annotations

import collections
import os
import tempfile
from pathlib import Path


def fold_static_graph(model_file: Path, external_data: bool) -> dict[str, int]:
    """Fold ``model_file`` in place (via a temporary file); returns op counts removed."""
    import onnx
    import onnxruntime as ort

    before = collections.Counter(n.op_type for n in onnx.load(str(model_file), load_external_data=False).graph.node)
    folder = model_file.parent
    handle, tmp_name = tempfile.mkstemp(prefix="folded-", suffix=".onnx", dir=folder)
    os.close(handle)
    tmp = Path(tmp_name)
    data_name = tmp.name + "_data"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp)
    options.log_severity_level = 3
    if external_data:
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", data_name)
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    ort.InferenceSession(str(model_file), sess_options=options, providers=["CPUExecutionProvider"])
    # Re-save through onnx so the external data file gets the package's canonical name.
    model = onnx.load(str(tmp), load_external_data=True)
    tmp.unlink()
    (folder / data_name).unlink(missing_ok=True)
    data_file = folder / (model_file.name + "_data")
    if data_file.exists():
        data_file.unlink()
    if external_data:
        onnx.save_model(
            model, str(model_file), save_as_external_data=True, all_tensors_to_one_file=True, location=data_file.name, size_threshold=1024
        )
    else:
        onnx.save_model(model, str(model_file))
    after = collections.Counter(n.op_type for n in model.graph.node)
    return {op: before[op] - after.get(op, 0) for op in before if before[op] > after.get(op, 0)}

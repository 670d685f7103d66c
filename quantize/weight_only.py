"""The weight-only scheme: INT8 weights + DequantizeLinear, float activations.

onnxruntime has no INT8 weight-only mode (its weight-only quantizers are 4-bit, blockwise),
so this small pass writes it: every Conv / Gemm / MatMul weight becomes a per-channel
symmetric INT8 initializer, a float scale per output channel and a DequantizeLinear whose
output keeps the original weight's name, so the consuming nodes are untouched. The graph
stays valid ONNX (opset >= 13 for per-axis DequantizeLinear) that any runtime can run.
"""

from __future__ import annotations

import logging
from pathlib import Path

from nanoedge.core.onnx_graph import initializer_uses

from .graphs import load_model, save_model, weight_axis
from .qmath import quantize, weight_params
from .recipes import Recipe

log = logging.getLogger(__name__)


def quantize_weights_only(source: Path, target: Path, recipe: Recipe, nodes: "set[str] | frozenset[str]") -> Path:
    """Write ``source`` to ``target`` with the weights of ``nodes`` in INT8.

    A weight shared with a node outside ``nodes`` (kept float) stays float for all of them.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = load_model(source)
    graph = model.graph
    initializers, uses = initializer_uses(graph)

    new_nodes, converted = [], 0
    for name, consumers in uses.items():
        tensor = initializers[name]
        if tensor.data_type != onnx.TensorProto.FLOAT:
            continue
        axes = set()
        eligible = True
        for node, slot in consumers:
            axis = weight_axis(node, slot, len(tensor.dims))
            if not recipe.quantizes(node.op_type) or node.name not in nodes or axis is False:
                eligible = False
                break
            axes.add(axis)
        if not eligible:
            continue
        axis = axes.pop() if len(axes) == 1 else None  # consumers disagree: one scale for all
        weight = numpy_helper.to_array(tensor)
        params = weight_params(weight, axis, "int8", symmetric=True)
        q = quantize(weight, params, axis)
        per_axis = axis is not None
        scale = params.scale if per_axis else params.scale.reshape(())
        zero = params.zero_point if per_axis else params.zero_point.reshape(())
        graph.initializer.remove(tensor)
        graph.initializer.extend([
            numpy_helper.from_array(q, f"{name}_quantized"),
            numpy_helper.from_array(scale, f"{name}_scale"),
            numpy_helper.from_array(zero, f"{name}_zero_point"),
        ])
        attrs = {"axis": axis} if per_axis else {}
        new_nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [f"{name}_quantized", f"{name}_scale", f"{name}_zero_point"],
                [name],
                name=f"{name}_DequantizeLinear",
                **attrs,
            )
        )
        converted += 1
    # The DequantizeLinear nodes read only initializers: put them first to keep topological order.
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend(new_nodes + existing)
    _ensure_opset(model, 13)
    log.info("weight-only: %d weight tensors stored as INT8", converted)
    save_model(model, target, external=True)
    return target


def _ensure_opset(model, minimum: int) -> None:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version < minimum:
            raise ValueError(f"per-channel DequantizeLinear needs opset >= {minimum}, the model has {opset.version}")

"""Running onnxruntime's quantizers for a :class:`~.recipes.Recipe`, and the graph fixes after.

The recipe says what to do; this module does it: the QDQ / dynamic quantizer call with the
recipe's options (plus onnxruntime's QNN helper for the NPU recipes), our weight-only pass,
float inputs restored for float-kept nodes, embedding tables, and shape hints dropped.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Iterator, Sequence

from .recipes import Recipe

log = logging.getLogger(__name__)


def quantize_model(
    recipe: Recipe, source: Path, target: Path, ranges_file: Path | None, nodes: Sequence[str], float_nodes: Sequence[str] = ()
) -> Path:
    """Quantize the nodes named in ``nodes`` of the (pre-processed) model ``source`` into ``target``.

    The caller lists the nodes explicitly (all quantizable nodes minus those mixed precision
    keeps in float): onnxruntime's QDQ quantizer ignores ``MatMulConstBOnly``, so an allowlist
    is the only way to keep attention-score MatMuls out of the int8 scheme. onnxruntime's
    quantizer writes helper files next to its input, so ``source`` must live in a scratch
    folder. ``float_nodes`` (static schemes) get their float inputs back, see
    :func:`restore_float_inputs`. Returns ``target`` (weights in external data next to it).
    """
    selected = list(dict.fromkeys(nodes))
    if not selected:
        # onnxruntime reads an empty allowlist as "everything": copy the float model instead.
        from .graphs import load_model, save_model

        save_model(load_model(source), target, external=True)
        return target
    if recipe.kind == "weight-only":
        from .weight_only import quantize_weights_only

        quantize_weights_only(source, target, recipe, set(selected))
    else:
        with _onnxruntime_warnings_as_debug():
            _run_onnxruntime_quantizer(recipe, source, target, ranges_file, selected)
        if recipe.kind == "static" and float_nodes:
            restore_float_inputs(target, set(float_nodes))
    if not recipe.qnn_compatible:  # NPU recipes keep their graphs as the QNN quantizer wrote them
        from .embeddings import quantize_embedding_tables

        quantize_embedding_tables(target)
        drop_shape_hints(target)
    return target


def drop_shape_hints(model_path: Path) -> int:
    """Remove the intermediate tensors' ``value_info`` (shape hints) that pre-processing wrote.

    onnxruntime infers every shape itself; the hints only steer its planning, and with the
    symbolic shapes onnxruntime's pre-processing writes for a fused-attention UNet they made a
    512x512 INT8 step peak at 1180 MiB instead of 658 MiB (same graph, same nodes, hints
    removed; measured one process each). Only the graph is rewritten; weights stay in place.
    """
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    count = len(model.graph.value_info)
    if count:
        del model.graph.value_info[:]
        onnx.save_model(model, str(model_path))
    return count


def restore_float_inputs(model_path: Path, float_nodes: "set[str]") -> int:
    """Make nodes kept in float read float tensors again; returns how many inputs changed.

    onnxruntime's QDQ quantizer puts one QuantizeLinear/DequantizeLinear pair on a tensor and
    routes *every* consumer through it, so a node excluded from quantization still reads
    rounded activations when a quantized neighbour shares its input (q/k/v projections share
    the normed hidden state). Mixed precision keeps a node in float to remove exactly that
    error, so its inputs are rewired to the tensor in front of the pair, and pairs nobody
    reads any more are dropped. Only the graph is rewritten; the weight file is untouched.
    """
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    graph = model.graph
    from .graphs import read_inputs_before_qdq

    changed = read_inputs_before_qdq(graph, float_nodes)
    if changed:
        from nanoedge.core.onnx_graph import remove_unread_nodes

        remove_unread_nodes(graph, ("QuantizeLinear", "DequantizeLinear"))
        onnx.save_model(model, str(model_path))
    log.debug("%s: %d inputs of float-kept nodes read float tensors again", model_path.name, changed)
    return changed


@contextlib.contextmanager
def _onnxruntime_warnings_as_debug() -> Iterator[None]:
    """onnxruntime's quantizer warns on the root logger about things we handle on purpose
    (tensors we chose not to calibrate, per-channel axes of norm weights, pre-processing
    advice); show them only with ``-v``."""
    root = logging.getLogger()
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    previous = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(previous)


def _run_onnxruntime_quantizer(recipe: Recipe, source: Path, target: Path, ranges_file: Path | None, selected: list[str]) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    qtypes = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8, "int16": QuantType.QInt16, "uint16": QuantType.QUInt16}
    extra: dict[str, Any] = {"MatMulConstBOnly": recipe.const_weight_only, "WeightSymmetric": recipe.weight_symmetric}
    op_types = list(recipe.op_types)
    if recipe.qnn_compatible:
        op_types, overrides = _qnn_options(recipe, source, qtypes)
        extra.update(overrides)
    if recipe.kind == "static":
        if ranges_file is None:
            raise ValueError("static quantization needs calibrated ranges")
        extra["ActivationSymmetric"] = recipe.activation_symmetric
        quantize_static(
            str(source),
            str(target),
            calibration_data_reader=None,
            calibration_cache_path=str(ranges_file),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=op_types,
            per_channel=recipe.per_channel,
            reduce_range=recipe.reduce_range,
            activation_type=qtypes[recipe.activation_type or "uint8"],
            weight_type=qtypes[recipe.weight_type],
            nodes_to_quantize=selected,
            use_external_data_format=True,
            extra_options=extra,
        )
    elif recipe.kind == "dynamic":
        quantize_dynamic(
            str(source),
            str(target),
            op_types_to_quantize=op_types,
            per_channel=recipe.per_channel,
            reduce_range=recipe.reduce_range,
            weight_type=qtypes[recipe.weight_type],
            nodes_to_quantize=selected,
            use_external_data_format=True,
            extra_options=extra,
        )
    else:
        raise ValueError(f"recipe kind {recipe.kind!r} does not quantize")


def _qnn_options(recipe: Recipe, source: Path, qtypes: dict) -> tuple[list[str], dict[str, Any]]:
    """Operator types and quantizer options onnxruntime's QNN helper chooses for this graph.

    ``get_qnn_qdq_config`` only reads the graph here; calibration is ours (its reader stays
    unused), so just the per-tensor overrides and options that make HTP accept the graph are
    taken over.
    """
    import onnx
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config

    graph = onnx.load(str(source), load_external_data=False).graph
    wide = sixteen_bit_tensors(graph, recipe.sixteen_bit)
    # add_qtype_converts (on by default) inserts the 8 <-> 16-bit conversions around them.
    init = {name: [{"quant_type": qtypes["uint16"]}] for name in wide} or None
    config = get_qnn_qdq_config(
        str(source),
        calibration_data_reader=None,
        activation_type=qtypes[recipe.activation_type or "uint16"],
        weight_type=qtypes[recipe.weight_type],
        per_channel=recipe.per_channel,
        weight_symmetric=recipe.weight_symmetric,
        activation_symmetric=recipe.activation_symmetric,
        init_overrides=init,
    )
    keys = ("MinimumRealRange", "DedicatedQDQPair", "QDQKeepRemovableActivations", "TensorQuantOverrides", "UseQDQContribOps")
    op_types = [t for t in config.op_types_to_quantize if recipe.quantizes(t)]
    options = {k: config.extra_options[k] for k in keys if k in config.extra_options}
    # With per-channel weights the helper skips LayerNorm, whose scale would then be signed
    # INT8; the HTP rejects that next to 16-bit activations (measured with `nanoedge check
    # --target qnn`), so LayerNorm scales get the unsigned 8-bit type it accepts.
    initializers = {t.name for t in graph.initializer}
    overrides = dict(options.get("TensorQuantOverrides") or {})
    for node in graph.node:
        if node.op_type == "LayerNormalization" and len(node.input) > 1 and node.input[1] in initializers:
            overrides.setdefault(node.input[1], [{"quant_type": qtypes["uint8"], "symmetric": False}])
    options["TensorQuantOverrides"] = overrides
    return op_types, options


def sixteen_bit_tensors(graph, rules: "tuple[str, ...]") -> list[str]:
    """Activation tensors that the named rules keep at 16 bits in an otherwise 8-bit graph.

    ``io``: the graph's inputs and outputs (latents, timestep, text states, noise, image);
    ``residual``: outputs of an Add of two computed tensors (the skip connections that carry
    the signal from block to block); ``softmax``: attention scores and probabilities;
    ``norm``: GroupNorm (InstanceNormalization) and LayerNorm outputs; ``silu``: x*sigmoid(x);
    ``concat``: Concat outputs. A UNet's up blocks concatenate the skip connection with the
    upsampled path; even with 16-bit residuals, the quantizer converted the concatenation to 8
    bits for its readers (the up-block ResNets' GroupNorm and 1x1 shortcut), one scale for both
    halves, so the smaller-range half sat on a few levels. With this rule they read it at 16
    bits and the shortcut writes 16 bits. (Only the timestep embedding's Concat at 16 bits,
    without the readers, gained nothing: 28.4/30.2 dB.)
    """
    if not rules:
        return []
    inits = {t.name for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    chosen: list[str] = []
    if "io" in rules:
        chosen += [i.name for i in graph.input if i.name not in inits] + [o.name for o in graph.output]
    if "residual" in rules:
        for node in graph.node:
            if (
                node.op_type == "Add"
                and len(node.input) == 2
                and all(i in producers and i not in inits and producers[i].op_type not in ("Constant",) for i in node.input)
            ):
                chosen.append(node.output[0])
    if "softmax" in rules:
        for node in graph.node:
            if node.op_type == "Softmax":
                chosen += [node.input[0], node.output[0]]
    if "norm" in rules:
        for node in graph.node:
            if node.op_type in ("InstanceNormalization", "LayerNormalization"):
                chosen.append(node.output[0])
    if "concat" in rules:
        for node in graph.node:
            if node.op_type == "Concat":
                chosen.append(node.output[0])
    if "silu" in rules:
        for node in graph.node:
            if node.op_type == "Mul" and any(producers.get(i) is not None and producers[i].op_type == "Sigmoid" for i in node.input):
                chosen.append(node.output[0])
    return list(dict.fromkeys(chosen))

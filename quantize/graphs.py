"""ONNX file handling for quantization: copies, pre-processing, saving, node inventory.

Everything here works on copies in a scratch folder: onnxruntime's quantization tools write
helper files next to their input (``model-inferred.onnx``) and ``quant_pre_process`` leaves
0600 files, so an input package is only ever read, never handed to them.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from nanoedge.core.manifest import Manifest

log = logging.getLogger(__name__)

EXTERNAL_SUFFIX = "_data"  # optimum's layout: model.onnx + model.onnx_data


def load_model(path: Path, weights: bool = True):
    import onnx

    return onnx.load(str(path), load_external_data=weights)


def save_model(model, path: Path, external: bool) -> list[Path]:
    """Save ``model``; with ``external`` its weights go to ``<name>_data`` next to it."""
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    data = path.with_name(path.name + EXTERNAL_SUFFIX)
    for stale in (path, data):
        if stale.exists():
            stale.unlink()
    if external:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data.name,
            size_threshold=1024,
            convert_attribute=False,
        )
    else:
        onnx.save_model(model, str(path))
    written = [p for p in (path, data) if p.exists()]
    for p in written:
        os.chmod(p, 0o644)
    return written


def model_files(path: Path) -> list[Path]:
    """The model file and its external data file, if any."""
    data = path.with_name(path.name + EXTERNAL_SUFFIX)
    return [path, data] if data.exists() else [path]


def copy_component(manifest: Manifest, name: str, folder: Path) -> Path:
    """Copy one component's model files out of a package (read-only copies); returns the .onnx path."""
    assert manifest.root is not None
    folder.mkdir(parents=True, exist_ok=True)
    component = manifest.component(name)
    model_rel = component["model"]
    for rel in component.get("files", [model_rel]):
        source = manifest.root / rel
        if source.suffix == ".json":
            continue
        target = folder / Path(rel).name
        shutil.copyfile(source, target)
        os.chmod(target, 0o444)
    return folder / Path(model_rel).name


def preprocess(source: Path, target: Path, qnn: bool = False) -> Path:
    """onnxruntime's recommended pre-processing (``quant_pre_process``): basic graph optimisation
    plus shape inference, so the quantizer knows every tensor's type.

    ONNX shape inference types every tensor of our exported graphs (checked on the tiny and
    the BK-SDM-Tiny UNet: the same coverage as symbolic inference), while onnxruntime's
    symbolic shape inference costs 5-16 s of pure Python per graph and gives up on some UNets
    ("Incomplete symbolic shape inference"). So it runs only when ONNX inference leaves node
    outputs untyped, with merged symbolic dims. Weights always go to external data, so later
    passes (range collection, sensitivity probes) share one weight file instead of copying it.
    With ``qnn``, onnxruntime's QNN pre-processing runs first (Erf chains fused into Gelu, which
    the HTP runs and a quantized Erf chain does not).
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    target.parent.mkdir(parents=True, exist_ok=True)
    fused: Path | None = None
    if qnn:
        # Before quant_pre_process: onnxruntime 1.32's QNN pass fails on models that already
        # carry metadata properties (quant_pre_process adds one).
        from onnxruntime.quantization.execution_providers.qnn import qnn_preprocess_model

        fused = target.with_name("qnn-" + target.name)
        if qnn_preprocess_model(
            str(source),
            str(fused),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            external_data_location=fused.name + EXTERNAL_SUFFIX,
        ):
            source = fused
    common = {"save_as_external_data": True, "all_tensors_to_one_file": True, "external_data_location": target.name + EXTERNAL_SUFFIX}
    quant_pre_process(str(source), str(target), skip_symbolic_shape=True, **common)
    untyped = untyped_outputs(load_model(target, weights=False))
    if untyped:
        log.info(
            "%s: %d tensors untyped after ONNX shape inference (e.g. %s): running symbolic shape inference",
            source.name,
            len(untyped),
            untyped[0],
        )
        symbolic = target.with_name("symbolic-" + target.name)
        try:
            quant_pre_process(
                str(source), str(symbolic), auto_merge=True, **{**common, "external_data_location": symbolic.name + EXTERNAL_SUFFIX}
            )
        except Exception as exc:  # onnxruntime raises bare Exception here
            log.info("symbolic shape inference failed (%s); keeping ONNX shape inference", exc)
        else:
            if len(untyped_outputs(load_model(symbolic, weights=False))) < len(untyped):
                for path in model_files(target):
                    path.unlink()
                model = load_model(symbolic)
                save_model(model, target, external=True)
            for path in model_files(symbolic):
                path.unlink()
    if fused is not None:
        for path in model_files(fused):
            path.unlink(missing_ok=True)
    import onnx

    model = load_model(target, weights=False)
    if ensure_node_names(model):
        onnx.save_model(model, str(target))  # graph only: the weight references stay as they are
    for path in model_files(target):
        os.chmod(path, 0o644)
    return target


def untyped_outputs(model) -> list[str]:
    """Node outputs whose element type shape inference could not determine."""
    types = tensor_types(model)
    return [name for node in model.graph.node for name in node.output if name and name not in types]


def tensor_types(model) -> dict[str, int]:
    """Element type of every tensor whose type is known (inputs, outputs, value_info, initializers)."""
    types: dict[str, int] = {}
    graph = model.graph
    for info in (*graph.input, *graph.output, *graph.value_info):
        if info.type.HasField("tensor_type"):
            types[info.name] = info.type.tensor_type.elem_type
    for tensor in graph.initializer:
        types[tensor.name] = tensor.data_type
    return types


def weight_axis(node, slot: int, rank: int) -> "int | None | bool":
    """Output-channel axis of the weight in input ``slot`` of ``node``.

    Returns an axis, ``None`` for per-tensor, or ``False`` when the slot is not a weight
    (a bias, or an operator this module does not treat as weighted).
    """
    if node.op_type in ("Conv",) and slot == 1:
        return 0
    if node.op_type == "ConvTranspose" and slot == 1:
        return 1
    if node.op_type == "Gemm" and slot == 1:
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    if node.op_type == "MatMul" and slot == 1:
        return rank - 1 if rank >= 2 else None
    if node.op_type == "MatMul" and slot == 0:
        return None
    return False


@dataclass(frozen=True)
class QuantNode:
    """One node a recipe quantizes: its float activation inputs, weights and output."""

    name: str
    op_type: str
    activations: tuple[str, ...]
    weights: tuple[tuple[int, str], ...]
    output: str
    weight_bytes: int
    more_outputs: tuple[str, ...] = ()  # float outputs after the first (Split): calibrated too

    @property
    def tensors(self) -> tuple[str, ...]:
        """Every activation this node reads or writes (what calibration must cover)."""
        return (*self.activations, self.output, *self.more_outputs)

    @property
    def has_weights(self) -> bool:
        return bool(self.weights)


def quantizable_nodes(model, recipe) -> list[QuantNode]:
    """The nodes a recipe would quantize, in graph order.

    Nodes need a float output; ``recipe.const_weight_only`` keeps MatMuls of two activations
    (attention scores) out; the weight-only scheme lists only nodes that have a weight.
    """
    import onnx

    initializers = {t.name: t for t in model.graph.initializer}
    types = tensor_types(model)
    const_weight_only = recipe.const_weight_only
    activations = recipe.kind != "weight-only"
    result = []
    for node in model.graph.node:
        if not recipe.quantizes(node.op_type) or not node.output:
            continue
        weights, acts = [], []
        for slot, name in enumerate(node.input):
            if not name:
                continue
            if name in initializers:
                if (
                    initializers[name].data_type == onnx.TensorProto.FLOAT
                    and weight_axis(node, slot, len(initializers[name].dims)) is not False
                ):
                    weights.append((slot, name))
            elif types.get(name) == onnx.TensorProto.FLOAT:
                acts.append(name)
        if node.op_type == "MatMul" and const_weight_only and not weights:
            continue
        if not activations and not weights:
            continue
        nbytes = sum(_tensor_bytes(initializers[w]) for _, w in weights)
        output = node.output[0]
        if types.get(output) not in (None, onnx.TensorProto.FLOAT):
            continue
        more = tuple(o for o in node.output[1:] if o and types.get(o) == onnx.TensorProto.FLOAT)
        result.append(QuantNode(node.name, node.op_type, tuple(acts) if activations else (), tuple(weights), output, nbytes, more))
    return result


def read_inputs_before_qdq(graph, node_names: "set[str]") -> int:
    """Rewire inputs of ``node_names`` that read through a QuantizeLinear -> DequantizeLinear pair
    to the float tensor in front of the pair, in place; returns how many inputs changed.

    Quantized weights (initializer -> DequantizeLinear, no QuantizeLinear) stay as they are.
    The pairs are left in the graph: the caller sweeps the ones nobody reads any more.
    """
    producers = {o: n for n in graph.node for o in n.output}
    changed = 0
    for node in graph.node:
        if node.name not in node_names:
            continue
        for slot, name in enumerate(node.input):
            dq = producers.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producers.get(dq.input[0])
            if q is None or q.op_type != "QuantizeLinear":
                continue  # a quantized weight (initializer) or something else: leave it
            node.input[slot] = q.input[0]
            changed += 1
    return changed


def _tensor_bytes(tensor) -> int:
    count = 1
    for dim in tensor.dims:
        count *= dim
    return 4 * count


def ensure_node_names(model) -> bool:
    """Give every unnamed node a unique name (exclusion lists and reports refer to names).

    Returns whether any name changed.
    """
    seen: set[str] = set()
    changed = False
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"nanoedge_{node.op_type}_{index}"
            changed = True
        seen.add(node.name)
    return changed


def _short(index: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        index, rest = divmod(index, 36)
        text = digits[rest] + text
        if index == 0:
            return text


def shorten_names(model) -> int:
    """Rename every node and every tensor but the graph's inputs and outputs, in graph order.

    onnxruntime's QDQ quantizer names each of its hundreds of Q/DQ nodes, scales and zero
    points after the tensor it quantizes (``/unet/up_blocks.3/.../conv_shortcut/Conv_output_0
    _QuantizeLinear_Output``): in the demo INT8 UNet the graph structure was 0.080 of the FP32
    bytes next to 0.237 for the weights. Names are ``n<k>`` (nodes) and ``t<k>`` (tensors),
    base 36 by first appearance, so the same graph always gets the same names. Graphs with
    subgraphs are left alone (their names are scoped). Returns how many names changed.
    """
    graph = model.graph
    for node in graph.node:
        if any(attr.g.node or attr.graphs for attr in node.attribute):
            return 0
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    names: dict[str, str] = {}

    def rename(name: str) -> str:
        if not name or name in keep:
            return name
        if name not in names:
            names[name] = "t" + _short(len(names))
        return names[name]

    for tensor in graph.initializer:
        tensor.name = rename(tensor.name)
    for tensor in graph.sparse_initializer:
        tensor.values.name = rename(tensor.values.name)
    for index, node in enumerate(graph.node):
        node.name = "n" + _short(index)
        for slot, name in enumerate(node.input):
            node.input[slot] = rename(name)
        for slot, name in enumerate(node.output):
            node.output[slot] = rename(name)
    for info in graph.value_info:
        info.name = rename(info.name)
    return len(names) + len(graph.node)

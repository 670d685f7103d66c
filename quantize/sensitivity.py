"""Which nodes suffer most from quantization: one probe run measures every node on its own.

"Quantize one node at a time and measure the output error" would need one model per node
(hundreds of UNet sessions). The probe gets the same figure from a single model: next to each
quantizable node it adds a copy that reads fake-quantized inputs (the calibrated scale and
zero point, or DynamicQuantizeLinear for the dynamic scheme) and fake-quantized weights (the
exact numbers the quantized graph will hold, see :mod:`.qmath`), fake-quantizes its output
like the QDQ graph does, and reports ``sum((copy - node)^2)`` and ``sum(node^2)``. Because the
copy reads the float graph's own activations, each node's error is its own, not the sum of
everything upstream. Run on real calibration calls, ``nmse = error / energy`` ranks nodes;
the mixed-precision search then checks the real end-to-end figures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .graphs import QuantNode, load_model, weight_axis
from .qmath import fake_quantize_weight, scale_zero_point
from .ranges import Ranges, analysis_session, place_after_producers, split_batch
from .recipes import Recipe

log = logging.getLogger(__name__)

_ERR = "__nanoedge_probe_err"
_REF = "__nanoedge_probe_ref"


@dataclass(frozen=True)
class NodeSensitivity:
    component: str
    node: str
    op_type: str
    nmse: float
    weight_bytes: int

    def as_dict(self) -> dict:
        return {
            "component": self.component,
            "node": self.node,
            "op_type": self.op_type,
            "nmse": self.nmse,
            "weight_bytes": self.weight_bytes,
        }


class _ProbeBuilder:
    def __init__(self, model, recipe: Recipe, ranges: Ranges | None, base_dir: Path) -> None:
        self.model = model
        self.recipe = recipe
        self.ranges = ranges or {}
        self.base_dir = base_dir
        self.nodes_by_name = {n.name: n for n in model.graph.node}
        self.initializers = {t.name: t for t in model.graph.initializer}
        self.new_nodes: list = []
        self.new_inits: list = []
        self._cache: dict[str, str] = {}

    def _const(self, name: str, value: float) -> str:
        from onnx import numpy_helper

        if name not in self._cache:
            self.new_inits.append(numpy_helper.from_array(np.array(value, dtype=np.float32), name))
            self._cache[name] = name
        return name

    def fake_activation(self, tensor: str) -> str:
        """Name of a tensor holding ``tensor`` after quantize + dequantize (cached per tensor)."""
        from onnx import helper

        key = f"{tensor}__fq"
        if key in self._cache:
            return self._cache[key]
        if self.recipe.kind == "dynamic":
            q, s, z = f"{key}_q", f"{key}_s", f"{key}_z"
            self.new_nodes.append(helper.make_node("DynamicQuantizeLinear", [tensor], [q, s, z], name=f"{key}_dql"))
            self.new_nodes.append(helper.make_node("DequantizeLinear", [q, s, z], [key], name=f"{key}_dq"))
        else:
            if tensor not in self.ranges:
                return tensor  # no range: the quantizer leaves it float too
            lo, hi = self.ranges[tensor]
            params = scale_zero_point(np.array(lo), np.array(hi), self.recipe.activation_type or "uint8", self.recipe.activation_symmetric)
            scale = self._const(f"{key}_scale", float(params.scale))
            zero = self._const(f"{key}_zero", float(params.zero_point))
            qmin = self._const(f"{key}_qmin", float(params.qmin))
            qmax = self._const(f"{key}_qmax", float(params.qmax))
            self.new_nodes.extend([
                helper.make_node("Div", [tensor, scale], [f"{key}_div"], name=f"{key}_div"),
                helper.make_node("Round", [f"{key}_div"], [f"{key}_round"], name=f"{key}_round"),
                helper.make_node("Add", [f"{key}_round", zero], [f"{key}_shift"], name=f"{key}_shift"),
                helper.make_node("Clip", [f"{key}_shift", qmin, qmax], [f"{key}_clip"], name=f"{key}_clip"),
                helper.make_node("Sub", [f"{key}_clip", zero], [f"{key}_unshift"], name=f"{key}_unshift"),
                helper.make_node("Mul", [f"{key}_unshift", scale], [key], name=f"{key}_mul"),
            ])
        self._cache[key] = key
        return key

    def fake_weight(self, node, slot: int, name: str) -> str:
        from onnx import numpy_helper

        key = f"{name}__fq_{slot}_{node.op_type}"
        if key in self._cache:
            return key
        tensor = self.initializers[name]
        weight = numpy_helper.to_array(tensor, base_dir=str(self.base_dir))
        axis = weight_axis(node, slot, weight.ndim)
        axis = axis if self.recipe.per_channel and isinstance(axis, int) else None
        if self.recipe.kind == "weight-only":
            fq = fake_quantize_weight(weight, axis, "int8", True)
        else:
            fq = fake_quantize_weight(weight, axis, self.recipe.weight_type, self.recipe.weight_symmetric, self.recipe.reduce_range)
        self.new_inits.append(numpy_helper.from_array(fq, key))
        self._cache[key] = key
        return key

    def add_probe(self, qnode: QuantNode) -> tuple[str, str]:
        from onnx import helper

        node = self.nodes_by_name[qnode.name]
        weights = dict(qnode.weights)
        activations = set(qnode.activations)
        inputs = []
        for slot, name in enumerate(node.input):
            if slot in weights:
                inputs.append(self.fake_weight(node, slot, name))
            elif name in activations:
                inputs.append(self.fake_activation(name))
            else:
                inputs.append(name)
        probe_out = f"{qnode.output}__probe"
        outputs = [probe_out] + [f"{o}__probe" for o in node.output[1:]]  # same arity (Split, ...)
        copy = helper.make_node(node.op_type, inputs, outputs, name=f"{node.name}__probe", domain=node.domain)
        copy.attribute.extend(node.attribute)
        self.new_nodes.append(copy)
        compared = probe_out
        if self.recipe.kind == "static" and qnode.output in self.ranges:
            # The QDQ graph quantizes the node's output too: include that rounding.
            saved = self.ranges.get(probe_out)
            self.ranges[probe_out] = self.ranges[qnode.output]
            compared = self.fake_activation(probe_out)
            if saved is None:
                del self.ranges[probe_out]
        err, ref = f"{qnode.name}{_ERR}", f"{qnode.name}{_REF}"
        self.new_nodes.extend([
            helper.make_node("Sub", [compared, qnode.output], [f"{err}_diff"], name=f"{err}_diff"),
            helper.make_node("ReduceSumSquare", [f"{err}_diff"], [err], name=err, keepdims=0),
            helper.make_node("ReduceSumSquare", [qnode.output], [ref], name=ref, keepdims=0),
        ])
        return err, ref


def build_probe(model_path: Path, nodes: list[QuantNode], recipe: Recipe, ranges: Ranges | None) -> tuple[Path, list[tuple[str, str]]]:
    """Write the probe model next to ``model_path`` (sharing its weight file); return it and its outputs."""
    import onnx
    from onnx import helper

    model = load_model(model_path, weights=False)
    builder = _ProbeBuilder(model, recipe, dict(ranges or {}), model_path.parent)
    pairs, added = [], {}
    for qnode in nodes:
        start = len(builder.new_nodes)
        pairs.append(builder.add_probe(qnode))
        added[qnode.name] = builder.new_nodes[start:]  # each probe next to the node it copies
    place_after_producers(model.graph, added)
    model.graph.initializer.extend(builder.new_inits)
    del model.graph.output[:]
    for err, ref in pairs:
        model.graph.output.extend(
            [helper.make_tensor_value_info(err, onnx.TensorProto.FLOAT, []), helper.make_tensor_value_info(ref, onnx.TensorProto.FLOAT, [])]
        )
    probe = model_path.with_name("sensitivity-probe.onnx")
    # Only the new fake-quantized weights are written; the originals stay in the shared file.
    onnx.save_model(
        model,
        str(probe),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=probe.name + "_data",
        size_threshold=1024,
        convert_attribute=False,
    )
    return probe, pairs


def rank_nodes(
    component: str,
    model_path: Path,
    nodes: list[QuantNode],
    recipe: Recipe,
    ranges: Ranges | None,
    samples: Iterable[dict[str, np.ndarray]],
    total: int,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[NodeSensitivity]:
    """Every node's own quantization error on ``samples``, most sensitive first."""
    if not nodes:
        return []
    probe, pairs = build_probe(model_path, nodes, recipe, ranges)
    try:
        session = analysis_session(probe, threads)
        names = [name for pair in pairs for name in pair]
        errors = np.zeros(len(pairs))
        energy = np.zeros(len(pairs))
        done = 0
        for feeds in samples:
            for part in split_batch(session, feeds):
                values = session.run(names, part)
                errors += np.array([float(v) for v in values[0::2]])
                energy += np.array([float(v) for v in values[1::2]])
            done += 1
            if progress is not None:
                progress(done, total)
        del session
    finally:
        for path in (probe, probe.with_name(probe.name + "_data")):
            path.unlink(missing_ok=True)
    result = []
    for qnode, err, ref in zip(nodes, errors, energy):
        nmse = float(err / ref) if ref > 0 else (0.0 if err == 0 else float("inf"))
        result.append(NodeSensitivity(component, qnode.name, qnode.op_type, nmse, qnode.weight_bytes))
    result.sort(key=lambda s: s.nmse, reverse=True)
    return result

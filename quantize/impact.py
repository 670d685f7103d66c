"""Which nodes to keep in float: each candidate's measured effect on its component's output.

A node's own (local) quantization error says little about what it does to the output: the
demo and tiny UNets' ``ff/net.2`` projections had the largest local error, yet keeping them
int8 cost the UNet output almost nothing (64 dB), while small convs that feed the whole
network (``conv_in``, the time embedding) matter far more than their local error suggests.
So candidates are ranked teacher-forced: the fully quantized QDQ graph is run with one node's
activations back in float (its inputs read the tensors in front of their Q/DQ pairs, its
readers read its float output), on recorded calibration calls, and compared with the FP32
component on the same inputs. The gain in output PSNR over the fully quantized graph ranks
the node. Only the graph is edited; every variant shares the quantized weight file.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .graphs import read_inputs_before_qdq
from .metrics import RunningError
from .ranges import analysis_session, split_batch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeImpact:
    """Output PSNR of ``component`` with ``node``'s activations in float, and its gain (dB)."""

    component: str
    node: str
    op_type: str
    psnr_db: float
    gain_db: float
    weight_bytes: int

    def as_dict(self) -> dict:
        def num(value: float) -> float | None:
            return round(value, 3) if math.isfinite(value) else None

        return {
            "component": self.component,
            "node": self.node,
            "op_type": self.op_type,
            "psnr_db": num(self.psnr_db),
            "gain_db": num(self.gain_db),
            "weight_bytes": self.weight_bytes,
        }


def float_activations(graph, node_names: "set[str]") -> int:
    """Route the activations of ``node_names`` around their Q/DQ pairs, in place.

    Inputs read the tensor in front of the QuantizeLinear; readers of the node's quantized
    output read the float output. Quantized weights (initializer -> DequantizeLinear) stay.
    Returns how many edges changed; pairs nobody reads are removed.
    """
    from nanoedge.core.onnx_graph import remove_unread_nodes

    readers: dict[str, list] = {}
    for n in graph.node:
        for slot, name in enumerate(n.input):
            readers.setdefault(name, []).append((n, slot))
    changed = read_inputs_before_qdq(graph, node_names)
    for node in graph.node:
        if node.name not in node_names:
            continue
        for out in node.output:
            for q, _ in readers.get(out, []):
                if q.op_type != "QuantizeLinear":
                    continue
                for dq, _ in readers.get(q.output[0], []):
                    if dq.op_type != "DequantizeLinear":
                        continue
                    for reader, slot in readers.get(dq.output[0], []):
                        if reader.input[slot] != out:  # a float-kept reader already rewired above
                            reader.input[slot] = out
                            changed += 1
    remove_unread_nodes(graph, ("QuantizeLinear", "DequantizeLinear"))
    return changed


def _output_error(session, references: Sequence[np.ndarray], samples: Sequence[dict[str, np.ndarray]]) -> float:
    running = RunningError()
    for reference, feeds in zip(references, samples):
        outputs = [session.run(None, part)[0] for part in split_batch(session, feeds)]
        running.add(reference, np.concatenate(outputs))
    return running.psnr()


def reference_outputs(float_model: Path, samples: Sequence[dict[str, np.ndarray]], threads: int | None = None) -> list[np.ndarray]:
    """The FP32 component's first output for each sample (the teacher-forced reference)."""
    session = analysis_session(float_model, threads)
    return [np.concatenate([session.run(None, part)[0] for part in split_batch(session, feeds)]) for feeds in samples]


def measure_groups(
    quantized_model: Path,
    groups: Sequence["set[str]"],
    samples: Sequence[dict[str, np.ndarray]],
    references: Sequence[np.ndarray],
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[float, list[float]]:
    """Output PSNR of the fully quantized graph, and of one variant per group of float nodes."""
    import onnx

    base = _output_error(analysis_session(quantized_model, threads), references, samples)
    model = onnx.load(str(quantized_model), load_external_data=False)
    variant_path = quantized_model.with_name("impact-variant.onnx")
    results = []
    try:
        for index, group in enumerate(groups):
            variant = onnx.ModelProto()
            variant.CopyFrom(model)
            if float_activations(variant.graph, set(group)):
                onnx.save_model(variant, str(variant_path))
                results.append(_output_error(analysis_session(variant_path, threads), references, samples))
            else:
                results.append(base)
            if progress is not None:
                progress(index + 1, len(groups))
    finally:
        variant_path.unlink(missing_ok=True)
    return base, results


# Above this many candidates, nodes are first measured in groups of GROUP consecutive nodes
# (graph order) and only the best groups' nodes one by one: ~N/8 + 4*8 runs instead of N.
MEASURE_ALL_UP_TO = 96
GROUP = 8
REFINED_GROUPS = 4


def rank_by_impact(
    component: str,
    quantized_model: Path,
    candidates: Sequence,
    samples: Sequence[dict[str, np.ndarray]],
    references: Sequence[np.ndarray],
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[float, list[NodeImpact]]:
    """Candidates ranked by the output PSNR their float activations win back, largest first.

    Returns ``(PSNR of the fully quantized graph, ranking)``. With many candidates, nodes of
    groups that were not refined are ranked after the refined ones, by their group's gain.
    """
    nodes = list(candidates)
    if len(nodes) <= MEASURE_ALL_UP_TO:
        base, psnrs = measure_groups(quantized_model, [{n.name} for n in nodes], samples, references, threads, progress)
        impacts = [NodeImpact(component, n.name, n.op_type, p, p - base, n.weight_bytes) for n, p in zip(nodes, psnrs)]
    else:
        chunks = [nodes[i : i + GROUP] for i in range(0, len(nodes), GROUP)]
        base, chunk_psnrs = measure_groups(quantized_model, [{n.name for n in c} for c in chunks], samples, references, threads, progress)
        order = sorted(range(len(chunks)), key=lambda i: -chunk_psnrs[i])
        refined = [n for i in order[:REFINED_GROUPS] for n in chunks[i]]
        _, psnrs = measure_groups(quantized_model, [{n.name} for n in refined], samples, references, threads, progress)
        impacts = [NodeImpact(component, n.name, n.op_type, p, p - base, n.weight_bytes) for n, p in zip(refined, psnrs)]
        impacts.sort(key=_order)
        rest = [
            NodeImpact(component, n.name, n.op_type, chunk_psnrs[i], (chunk_psnrs[i] - base) / GROUP, n.weight_bytes)
            for i in order[REFINED_GROUPS:]
            for n in chunks[i]
        ]
        return base, impacts + rest
    impacts.sort(key=_order)
    return base, impacts


def _order(impact: NodeImpact) -> tuple[float, str]:
    gain = impact.gain_db if math.isfinite(impact.gain_db) else 1e9
    return (-gain, impact.node)


# A node joins the nested list only if it wins back at least this much output PSNR on the
# ranking calls: smaller gains are within what changes from one set of calls to another
# (measured on tiny-random: a node gaining 0.01 dB on the ranking calls lost 0.002 dB on the
# held-out ones), and not worth its float bytes.
MIN_GAIN_DB = 0.05


def grow_nested(
    quantized_model: Path,
    ordered: Sequence[NodeImpact],
    samples: Sequence[dict[str, np.ndarray]],
    references: Sequence[np.ndarray],
    limit: int,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[NodeImpact]:
    """Walk ``ordered`` and keep a node only if adding it to the nodes kept so far raises the
    output PSNR by ``MIN_GAIN_DB`` or more (all of them in float together); at most ``limit``.

    Single-node gains do not add up: errors of different nodes partly cancel, so floating one
    more can lower the output PSNR. Measuring each prefix makes every nested set at least as
    good as the one before on the ranking calls. The returned impacts carry the cumulative
    PSNR and the node's incremental gain. At most ``3 * limit`` nodes are tried.
    """
    import onnx

    model = onnx.load(str(quantized_model), load_external_data=False)
    variant_path = quantized_model.with_name("impact-nested.onnx")
    current = _output_error(analysis_session(quantized_model, threads), references, samples)
    kept: list[NodeImpact] = []
    names: set[str] = set()
    tried = list(ordered)[: 3 * limit]
    try:
        for index, node in enumerate(tried):
            if len(kept) >= limit:
                break
            variant = onnx.ModelProto()
            variant.CopyFrom(model)
            float_activations(variant.graph, names | {node.node})
            onnx.save_model(variant, str(variant_path))
            psnr = _output_error(analysis_session(variant_path, threads), references, samples)
            if psnr >= current + MIN_GAIN_DB or (math.isinf(psnr) and psnr > 0):
                kept.append(NodeImpact(node.component, node.node, node.op_type, psnr, psnr - current, node.weight_bytes))
                names.add(node.node)
                current = psnr
            if progress is not None:
                progress(index + 1, len(tried))
    finally:
        variant_path.unlink(missing_ok=True)
    return kept

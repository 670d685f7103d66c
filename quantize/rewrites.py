"""Graph rewrites applied before Q/DQ insertion: same FP32 function, better 8-bit grids.

``split_concat_convs``: a UNet up-block concatenates the skip connection with the upsampled
path and its ResNet's 1x1 ``conv_shortcut`` reads the concatenation. A static 8-bit
activation has one scale per tensor, so both halves share it, and the half with the smaller
range sits on a few levels (measured in the last up-block of the demo UNet: an RMS of about
2 quantization steps). Those few convs alone in int8 cost the demo UNet's output 37.4 dB
(docs/quantization.md). A convolution is linear in its input channels, so
``conv(concat(a, b), W) + bias == conv(a, W[:, :Ca]) + conv(b, W[:, Ca:]) + bias``: the
rewrite replaces the conv by one conv per concatenated input, summed, and each input keeps
its own calibrated scale. The Concat stays for its other readers (the GroupNorm).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def _attribute(node, name: str, default: Any) -> Any:
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def _channels(model) -> dict[str, int]:
    """Channel count (dim 1) of every tensor whose 4-D shape shape inference recorded."""
    found: dict[str, int] = {}
    graph = model.graph
    for info in (*graph.input, *graph.output, *graph.value_info):
        if not info.type.HasField("tensor_type"):
            continue
        dims = info.type.tensor_type.shape.dim
        if len(dims) == 4 and dims[1].HasField("dim_value"):
            found[info.name] = dims[1].dim_value
    return found


def split_concat_convs(model, base_dir: str | None = None) -> list[str]:
    """Rewrite, in place, every Conv that reads a channel Concat into one Conv per input + Adds.

    Applies to group-1 Convs with a constant weight whose input is a Concat along axis 1 with
    known channel counts per input. The original output name is kept (the last Add writes
    it), so readers and graph outputs are unchanged. Returns the names of the split convs.
    The new weights are slices of the old one; the old weight is dropped when nothing else
    reads it. ``model`` must hold its weights (loaded with external data).
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    initializers = {t.name: t for t in graph.initializer}
    channels = _channels(model)
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    split: list[str] = []
    new_nodes: dict[str, list] = {}
    replaced: set[str] = set()
    dropped: set[str] = set()
    for node in graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        concat = producers.get(node.input[0])
        if concat is None or concat.op_type != "Concat" or _attribute(node, "group", 1) != 1:
            continue
        if _attribute(concat, "axis", None) not in (1, -3):
            continue
        parts = [channels.get(name) for name in concat.input]
        if len(parts) < 2 or any(c is None or c <= 0 for c in parts):
            continue
        weight = numpy_helper.to_array(initializers[node.input[1]], base_dir=base_dir or "")
        if weight.ndim != 4 or weight.shape[1] != sum(parts):  # type: ignore[arg-type]
            continue
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        added = []
        partial_outputs = []
        start = 0
        for index, (source, count) in enumerate(zip(concat.input, parts)):
            piece = np.ascontiguousarray(weight[:, start : start + count])  # type: ignore[operator]
            start += count  # type: ignore[operator]
            wname = f"{node.input[1]}__split{index}"
            graph.initializer.append(numpy_helper.from_array(piece, wname))
            inputs = [source, wname] + ([bias] if bias and index == 0 else [])
            out = f"{node.output[0]}__split{index}"
            conv = helper.make_node("Conv", inputs, [out], name=f"{node.name}__split{index}")
            conv.attribute.extend(node.attribute)
            added.append(conv)
            partial_outputs.append(out)
        total = partial_outputs[0]
        for index, out in enumerate(partial_outputs[1:], 1):
            last = index == len(partial_outputs) - 1
            result = node.output[0] if last else f"{node.output[0]}__sum{index}"
            added.append(helper.make_node("Add", [total, out], [result], name=f"{node.name}__sum{index}"))
            total = result
        new_nodes[node.name] = added
        replaced.add(node.name)
        split.append(node.name)
        readers[node.input[1]] -= 1
        if readers[node.input[1]] == 0:
            dropped.add(node.input[1])
    if not split:
        return split
    infos = {v.name: v for v in graph.value_info}
    for node_name in split:
        for added_node in new_nodes[node_name]:
            out = added_node.output[0]
            template = infos.get(new_nodes[node_name][-1].output[0])
            if template is not None and out not in infos:
                info = graph.value_info.add()
                info.CopyFrom(template)
                info.name = out
    original = list(graph.node)
    del graph.node[:]
    for node in original:
        if node.name in replaced:
            graph.node.extend(new_nodes[node.name])
        else:
            graph.node.append(node)
    if dropped:
        keep = [t for t in graph.initializer if t.name not in dropped]
        del graph.initializer[:]
        graph.initializer.extend(keep)
    log.info("split %d convs that read a channel concatenation into one conv per input", len(split))
    return split


REWRITES = {"split_concat_convs": split_concat_convs}


def apply_rewrites(model_path, rewrites: "tuple[str, ...]") -> dict[str, list[str]]:
    """Apply the named rewrites to the model file at ``model_path`` (weights external, rewritten
    in place); returns the nodes each rewrite changed."""
    from pathlib import Path

    from .graphs import load_model, save_model

    if not rewrites:
        return {}
    path = Path(model_path)
    model = load_model(path)
    changed = {name: REWRITES[name](model, str(path.parent)) for name in rewrites}
    if any(changed.values()):
        save_model(model, path, external=True)
    return changed

"""Fuse exported scaled-dot-product attention into onnxruntime's ``MultiHeadAttention``.

Why: PyTorch exports ``F.scaled_dot_product_attention`` as separate ``MatMul -> Softmax ->
MatMul`` nodes, so onnxruntime materialises the whole score matrix. At 512x512 the UNet's
first level attends over 4,096 tokens with 8 heads: with guidance (batch 2) that is one 1 GiB
float tensor per attention call, most of a step's activation memory (BK-SDM-Tiny FP32 step:
3.56 GB peak RSS unfused, 2.49 GB fused; docs/speed.md). The CPU and CUDA providers run
``com.microsoft.MultiHeadAttention`` blockwise without that matrix.

The pattern matched is the one torch's exporter writes for diffusers' attention processors:

    q (B,S,H*D) -> Reshape (B,S,H,D) -> Transpose(0,2,1,3) -> Mul(s) --+
    k (B,L,H*D) -> Reshape (B,L,H,D) -> Transpose(0,2,3,1) -> Mul(s) --+-> MatMul -> Softmax --+
    v (B,L,H*D) -> Reshape (B,L,H,D) -> Transpose(0,2,1,3) ---------------------------------- MatMul
        -> Transpose(0,2,1,3) -> Reshape (B,S,H*D)

with the same scale ``s`` on both sides (``s*s`` is the softmax scale). Only float
tensors inside that chain are touched, so the pass works on FP32 graphs and on QDQ INT8
graphs alike (where q, k and v are ``DequantizeLinear`` outputs and the score MatMuls stay
float). NPU providers (QNN HTP, OpenVINO NPU, Core ML) do not take this contrib op: exports
for them are not fused.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

MS_DOMAIN = "com.microsoft"


@dataclass
class _Graph:
    """Producer/consumer indexes and constant lookup over one ``onnx.GraphProto``."""

    graph: Any

    def __post_init__(self) -> None:
        from onnx import numpy_helper

        self.producer = {out: node for node in self.graph.node for out in node.output}
        self.consumers: dict[str, list] = collections.defaultdict(list)
        for node in self.graph.node:
            for name in node.input:
                self.consumers[name].append(node)
        self.constants = {init.name: init for init in self.graph.initializer}
        self._to_array = numpy_helper.to_array
        self.graph_outputs = {o.name for o in self.graph.output}

    def const(self, name: str):
        """The value of ``name`` if it is an initializer or a Constant node's output, else None."""
        if name in self.constants:
            return self._to_array(self.constants[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return self._to_array(attr.t)
        return None

    def single(self, name: str, op_type: str):
        """The producer of ``name`` if it has that op type, else None."""
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    def only_consumer(self, name: str):
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in self.graph_outputs else None


def _perm(node) -> list[int] | None:
    for attr in node.attribute:
        if attr.name == "perm":
            return list(attr.ints)
    return None


def _heads_from_reshape(g: _Graph, reshape) -> int | None:
    """H from a ``Reshape`` to (B, S, H, D): a constant shape or a Concat with a constant third entry."""
    import numpy as np

    shape = g.const(reshape.input[1])
    if shape is not None and shape.size == 4 and int(shape[2]) > 0:
        return int(shape[2])
    concat = g.single(reshape.input[1], "Concat")
    if concat is None or len(concat.input) != 4:
        return None
    value = g.const(concat.input[2])
    if value is None:
        return None
    value = np.asarray(value).reshape(-1)
    return int(value[0]) if value.size == 1 and int(value[0]) > 0 else None


def _split_heads(g: _Graph, tensor: str, perm: list[int]):
    """(input of the Reshape, Reshape, Transpose) for ``input -> Reshape -> Transpose(perm)``."""
    transpose = g.single(tensor, "Transpose")
    if transpose is None or _perm(transpose) != perm:
        return None
    reshape = g.single(transpose.input[0], "Reshape")
    if reshape is None:
        return None
    return reshape.input[0], reshape, transpose


def _match(g: _Graph, softmax) -> dict[str, Any] | None:
    """The attention chain around one Softmax, or None when it is not the exported SDPA pattern."""
    import numpy as np

    axis = next((a.i for a in softmax.attribute if a.name == "axis"), -1)
    if axis not in (-1, 3):
        return None
    scores = g.single(softmax.input[0], "MatMul")
    weighted = g.only_consumer(softmax.output[0])
    if scores is None or weighted is None or weighted.op_type != "MatMul" or weighted.input[0] != softmax.output[0]:
        return None
    if g.only_consumer(scores.output[0]) is not softmax:
        return None
    mul_q, mul_k = g.single(scores.input[0], "Mul"), g.single(scores.input[1], "Mul")
    if mul_q is None or mul_k is None:
        return None
    q = _split_heads(g, mul_q.input[0], [0, 2, 1, 3])
    k = _split_heads(g, mul_k.input[0], [0, 2, 3, 1])
    v = _split_heads(g, weighted.input[1], [0, 2, 1, 3])
    if q is None or k is None or v is None:
        return None
    merge_t = g.only_consumer(weighted.output[0])
    if merge_t is None or merge_t.op_type != "Transpose" or _perm(merge_t) != [0, 2, 1, 3]:
        return None
    merge_r = g.only_consumer(merge_t.output[0])
    if merge_r is None or merge_r.op_type != "Reshape":
        return None
    heads = {_heads_from_reshape(g, part[1]) for part in (q, k, v)}
    if len(heads) != 1 or None in heads:
        return None
    # The exporter writes the default scale as sqrt(1/sqrt(D)) computed from q's shape on each
    # side (MultiHeadAttention's default, 1/sqrt(D)); constant scales (an explicit ``scale=``)
    # are multiplied and passed on. The exporter re-verifies the fused graph against PyTorch.
    scale_q, scale_k = g.const(mul_q.input[1]), g.const(mul_k.input[1])
    scale = None
    if (scale_q is None) != (scale_k is None):
        return None
    if scale_q is not None:
        if np.asarray(scale_q).size != 1 or np.asarray(scale_k).size != 1:
            return None
        scale = float(np.asarray(scale_q).reshape(-1)[0]) * float(np.asarray(scale_k).reshape(-1)[0])
    chain = [q[1], q[2], mul_q, k[1], k[2], mul_k, scores, softmax, v[1], v[2], weighted, merge_t, merge_r]
    # Intermediate tensors must not be used outside the chain (or the fusion would drop them),
    # except by Shape nodes: the exporter reads q's shape to compute the scale, and that
    # arithmetic dies with the chain (``fuse_attention`` checks nothing is left dangling).
    inside = {id(n) for n in chain}
    for node in chain[:-1]:
        for out in node.output:
            outside = [user for user in g.consumers.get(out, []) if id(user) not in inside]
            if out in g.graph_outputs or any(user.op_type != "Shape" for user in outside):
                return None
    return {"q": q[0], "k": k[0], "v": v[0], "out": merge_r.output[0], "heads": heads.pop(), "scale": scale,
            "chain": chain, "name": softmax.name}


def fuse_attention(model) -> int:
    """Rewrite every matched attention chain of ``model`` (an ``onnx.ModelProto``) in place.

    Returns how many were fused. Unused initializers are left for the caller's save (onnx
    keeps them harmlessly); the graph stays topologically sorted because each fused node
    takes the place of its chain's last node.
    """
    import onnx
    from onnx import helper

    from nanoedge.core.onnx_graph import remove_unread_nodes

    g = _Graph(model.graph)
    matches = [m for m in (_match(g, node) for node in model.graph.node if node.op_type == "Softmax") if m is not None]
    if not matches:
        return 0
    for index, match in enumerate(matches):
        attributes: dict[str, Any] = {"num_heads": match["heads"]}
        if match["scale"] is not None:
            attributes["scale"] = match["scale"]
        name = match["name"].rsplit("/", 1)[0] + "/MultiHeadAttention" if "/" in match["name"] else f"MultiHeadAttention_{index}"
        fused = helper.make_node("MultiHeadAttention", [match["q"], match["k"], match["v"]], [match["out"]],
                                 name=name, domain=MS_DOMAIN, **attributes)
        last = match["chain"][-1]
        position = list(model.graph.node).index(last)
        model.graph.node.insert(position, fused)
        for node in match["chain"]:
            model.graph.node.remove(node)
    # the shape arithmetic the fused chains used is read by nobody now
    remove_unread_nodes(model.graph)
    gone = {out for match in matches for node in match["chain"][:-1] for out in node.output}
    dangling = sorted({name for node in model.graph.node for name in node.input if name in gone})
    if dangling:
        raise RuntimeError(f"attention fusion left {len(dangling)} tensors without a producer (first: {dangling[0]})")
    if not any(op.domain == MS_DOMAIN for op in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(MS_DOMAIN, 1))
    return len(matches)

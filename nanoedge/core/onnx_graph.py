"""Small edits on an ONNX graph proto, shared by the exporter and the quantizer.

These work on any object shaped like ``onnx.GraphProto`` (``node``, ``initializer``,
``output``) and need no import of onnx, so the base layer stays free of optional packages.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any


def initializer_uses(graph) -> tuple[dict[str, Any], dict[str, list[tuple[Any, int]]]]:
    """``(name -> initializer, name -> [(consuming node, input slot), ...])`` for a graph."""
    initializers = {t.name: t for t in graph.initializer}
    uses: dict[str, list[tuple[Any, int]]] = defaultdict(list)
    for node in graph.node:
        for slot, name in enumerate(node.input):
            if name in initializers:
                uses[name].append((node, slot))
    return initializers, uses


def remove_unread_nodes(graph, op_types: "tuple[str, ...] | None" = None) -> int:
    """Drop nodes (of ``op_types``, or any) whose outputs nobody reads, until none is left.

    Returns how many were removed. Rewrites leave such nodes behind: QDQ pairs no node reads
    any more, the shape arithmetic of a fused attention chain.
    """
    removed = 0
    outputs = {o.name for o in graph.output}
    while True:
        read = {name for node in graph.node for name in node.input} | outputs
        dead = [node for node in graph.node
                if (op_types is None or node.op_type in op_types) and not any(out in read for out in node.output if out)]
        if not dead:
            return removed
        for node in dead:
            graph.node.remove(node)
        removed += len(dead)

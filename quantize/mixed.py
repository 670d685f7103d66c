"""Mixed precision: which float sets to try, nested, within a size budget.

Given each component's candidates ranked by their measured effect on its output and grown
into a nested list whose every prefix was measured not to lower it (see :mod:`.impact`), and
how many bytes each component may still grow (its FP32 bytes x
``max_size_ratio`` minus the bytes of its fully quantized QDQ file, graph included), the
admissible nodes are taken greedily in rank order, skipping any whose float weights would
not fit; the steps are prefixes of that one list, doubling in length (1, 2, 4, 8, ...). So
each step keeps in float everything the step before did, plus the next best nodes: keeping
more never drops a node that helped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from .impact import NodeImpact

# Keeping a node float stores its weights as 4-byte floats instead of 1-byte integers.
FLOAT_EXTRA_PER_FLOAT_BYTE = 0.75


@dataclass(frozen=True)
class Step:
    keep_float: dict[str, frozenset[str]]
    extra_bytes: dict[str, int]

    @property
    def node_count(self) -> int:
        return sum(len(v) for v in self.keep_float.values())


def extra_bytes(node: NodeImpact) -> int:
    return int(math.ceil(node.weight_bytes * FLOAT_EXTRA_PER_FLOAT_BYTE))


def admissible(ranking: Sequence[NodeImpact], budgets: dict[str, int]) -> list[NodeImpact]:
    """Nodes that gain output PSNR, in rank order, whose float weights fit their component's budget."""
    used: dict[str, int] = {}
    chosen = []
    for node in ranking:
        if not node.gain_db > 0:
            continue
        cost = extra_bytes(node)
        if used.get(node.component, 0) + cost > max(budgets.get(node.component, 0), 0):
            continue
        used[node.component] = used.get(node.component, 0) + cost
        chosen.append(node)
    return chosen


def nested_steps(ranking: Sequence[NodeImpact], budgets: dict[str, int], max_steps: int) -> list[Step]:
    """Up to ``max_steps`` nested float sets, prefix lengths 1, 2, 4, ...; the last takes every
    admissible node when the doubling would pass it."""
    nodes = admissible(ranking, budgets)
    steps: list[Step] = []
    length = 1
    while nodes and len(steps) < max_steps:
        prefix = nodes[: min(length, len(nodes))]
        keep: dict[str, set[str]] = {}
        extra: dict[str, int] = {}
        for node in prefix:
            keep.setdefault(node.component, set()).add(node.node)
            extra[node.component] = extra.get(node.component, 0) + extra_bytes(node)
        steps.append(Step({c: frozenset(v) for c, v in keep.items()}, extra))
        if length >= len(nodes):
            break
        length *= 2
    return steps


def merge_by_gain(lists: Sequence[Sequence[NodeImpact]]) -> list[NodeImpact]:
    """One list from per-component nested lists: each component's order is kept, and at each
    point the head with the larger incremental gain goes first."""
    heads = [list(items) for items in lists]
    merged = []
    while any(heads):
        best = max((h for h in heads if h), key=lambda h: h[0].gain_db)
        merged.append(best.pop(0))
    return merged

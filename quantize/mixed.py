"""Mixed precision: which nodes to keep in float, in growing steps, within a size budget.

Given the nodes ranked by sensitivity (all quantized components together, most sensitive
first) and, per component, how many extra bytes float weights may take, each step keeps a
larger share of the ranking in float: step ``k`` may use ``fractions[k]`` of every
component's byte budget and of the ranked nodes. The caller builds and measures each step
and stops at the first that passes the gate, so the package keeps as little float as the
measured figures allow; the last step uses the whole budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from .sensitivity import NodeSensitivity

DEFAULT_FRACTIONS = (0.125, 0.25, 0.5, 1.0)
# Keeping a node float stores its weights as 4-byte floats instead of 1-byte integers.
FLOAT_EXTRA_PER_FLOAT_BYTE = 0.75


@dataclass(frozen=True)
class Step:
    fraction: float
    keep_float: dict[str, frozenset[str]]
    extra_bytes: dict[str, int]

    @property
    def node_count(self) -> int:
        return sum(len(v) for v in self.keep_float.values())


def extra_bytes(node: NodeSensitivity) -> int:
    return int(math.ceil(node.weight_bytes * FLOAT_EXTRA_PER_FLOAT_BYTE))


def plan_steps(ranking: Sequence[NodeSensitivity], budgets: dict[str, int], fractions: Sequence[float] = DEFAULT_FRACTIONS) -> list[Step]:
    """The float-kept node sets to try, smallest first; duplicates and empty sets are dropped.

    ``budgets[component]`` is how many bytes that component may grow by (its FP32 bytes x the
    size ratio, minus its fully quantized bytes); nodes of a component without budget can
    only be kept float if they hold no weights.
    """
    candidates = [n for n in ranking if n.nmse > 0]
    steps: list[Step] = []
    seen: set[tuple] = set()
    for fraction in fractions:
        limit = max(1, math.ceil(fraction * len(candidates)))
        used = {c: 0 for c in budgets}
        kept: dict[str, set[str]] = {c: set() for c in budgets}
        count = 0
        for node in candidates:
            if count >= limit:
                break
            cost = extra_bytes(node)
            allowed = max(budgets.get(node.component, 0), 0) * fraction
            if used.get(node.component, 0) + cost > allowed:
                continue
            kept.setdefault(node.component, set()).add(node.node)
            used[node.component] = used.get(node.component, 0) + cost
            count += 1
        key = tuple(sorted((c, tuple(sorted(v))) for c, v in kept.items()))
        if count == 0 or key in seen:
            continue
        seen.add(key)
        steps.append(Step(fraction, {c: frozenset(v) for c, v in kept.items() if v}, {c: u for c, u in used.items() if u}))
    return steps

"""``nanoedge check``: will this package run well on that target?

For each component we open a session on the target's provider with CPU fallback allowed and
onnxruntime's graph-assignment recording on, then count which nodes the accelerator took and
which ops fell back to CPU. That is the real partitioner's answer, not a table of supported
ops that drifts with SDK versions. Package-level needs (static shapes, precision) are
checked from the manifest.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

from nanoedge.core.manifest import Manifest

from .profiles import TargetProfile, package_misfit
from .session import create_session


@dataclass
class ComponentPlacement:
    component: str
    total_nodes: int = 0
    accelerator_nodes: int = 0
    fallback_ops: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    #: executed layers per precision (OpenVINO backend only: shows INT8/BF16 really ran)
    precisions: dict[str, int] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        return self.accelerator_nodes / self.total_nodes if self.total_nodes else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "total_nodes": self.total_nodes,
            "accelerator_nodes": self.accelerator_nodes,
            "placement": round(self.fraction, 6),
            "fallback_ops": self.fallback_ops,
            "error": self.error,
            **({"precisions": self.precisions} if self.precisions else {}),
        }


@dataclass
class CheckReport:
    target: str
    accelerator: str
    components: list[ComponentPlacement]
    problems: list[str]
    full_offload_required: bool

    @property
    def fully_offloaded(self) -> bool:
        return all(c.error is None and c.accelerator_nodes == c.total_nodes > 0 for c in self.components)

    @property
    def ok(self) -> bool:
        if self.problems:
            return False
        if self.full_offload_required:
            return self.fully_offloaded
        return all(c.error is None for c in self.components)

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "accelerator": self.accelerator,
            "ok": self.ok,
            "full_offload_required": self.full_offload_required,
            "fully_offloaded": self.fully_offloaded,
            "problems": self.problems,
            "components": [c.as_dict() for c in self.components],
        }


def _open(manifest: Manifest, component: str, profile: TargetProfile, allow_fallback: bool):
    record = {"session.record_ep_graph_assignment_info": "1"}
    # log level 4: the refusals we are probing for would otherwise be printed as errors
    return create_session(manifest.component_path(component), profile, extra_config=record, allow_fallback=allow_fallback, log_level=4)


def placement(manifest: Manifest, component: str, profile: TargetProfile) -> ComponentPlacement:
    """Count nodes per provider as the deployment would run the component.

    A full-offload target is first tried exactly as deployed (CPU fallback disabled): if the
    session opens, every node is on the accelerator, including the Q/DQ pairs at the graph's
    edges that the partitioner would otherwise leave to the CPU. Only when that fails is the
    graph partitioned with fallback allowed, to name the ops the accelerator refuses.
    """
    result = ComponentPlacement(component)
    if profile.backend == "openvino":
        return _openvino_placement(manifest, component, profile, result)
    session = None
    if profile.full_offload:
        try:
            session = _open(manifest, component, profile, allow_fallback=False)
        except Exception:  # refused as deployed: find out which ops, below
            session = None
    if session is None:
        try:
            session = _open(manifest, component, profile, allow_fallback=True)
        except Exception as exc:  # the provider refused the graph outright: report, don't crash
            result.error = str(getattr(exc, "message", exc)).strip().splitlines()[0]
            return result
    fallback: collections.Counter[str] = collections.Counter()
    for subgraph in session.get_provider_graph_assignment_info():
        nodes = subgraph.get_nodes()
        result.total_nodes += len(nodes)
        if subgraph.ep_name == profile.accelerator:
            result.accelerator_nodes += len(nodes)
        else:
            fallback.update(n.op_type for n in nodes)
    result.fallback_ops = dict(fallback.most_common())
    return result


def _openvino_placement(manifest: Manifest, component: str, profile: TargetProfile, result: ComponentPlacement) -> ComponentPlacement:
    """OpenVINO compiles a whole graph or refuses it: no partial placement, no fallback.

    Counts are of OpenVINO's executed layers (after its own fusions), not of ONNX nodes.
    """
    from .openvino_native import executed_precisions

    try:
        session = create_session(manifest.component_path(component), profile)
    except Exception as exc:
        result.error = str(getattr(exc, "message", exc)).strip().splitlines()[0]
        return result
    result.precisions = executed_precisions(session)
    result.total_nodes = result.accelerator_nodes = sum(result.precisions.values())
    return result


def check_package(manifest: Manifest, profile: TargetProfile) -> CheckReport:
    problems = []
    misfit = package_misfit(profile, manifest)
    if misfit:
        problems.append(misfit)
    components = [placement(manifest, name, profile) for name in manifest.components]
    return CheckReport(profile.name, profile.accelerator, components, problems, profile.full_offload)

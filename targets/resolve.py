"""Choosing the target a package runs on: a named one, checked, or the first usable for "auto".

Kept apart from :mod:`.profiles` (data) and :mod:`.detect` (probing) so that the arrows go one
way: resolve -> detect -> plugins -> profiles.
"""

from __future__ import annotations

import logging

from nanoedge.core.errors import TargetUnavailableError
from nanoedge.core.manifest import Manifest

from .autoselect import Measure
from .detect import detect
from .profiles import AUTO_ORDER, CPU_TARGETS, TargetProfile, get_profile, package_misfit

log = logging.getLogger(__name__)


def resolve_target_with_reason(
    name: str, manifest: Manifest | None = None, threads: int | None = None, measure: Measure | None = None
) -> tuple[TargetProfile, str]:
    """A usable profile for ``name`` and why it was chosen, or an error that says why not.

    "auto" walks :data:`AUTO_ORDER`: the first usable accelerator (real hardware, not a
    simulator, that the package suits) wins; otherwise the fastest usable CPU target, measured
    on the package with ``measure`` (:mod:`nanoedge.targets.autoselect`; the pipeline passes
    the runtime's probe), else the first usable one in order. Every decision is logged.
    """
    if name.lower() != "auto":
        profile = get_profile(name)
        status = detect(profile)
        if not status.usable:
            raise TargetUnavailableError(f"target '{profile.name}' is not usable here: {status.reason}", hint=status.hint)
        return profile, "requested"
    cpu_candidates = []
    for candidate in AUTO_ORDER:
        profile = get_profile(candidate)
        status = detect(profile)
        misfit = package_misfit(profile, manifest)
        if status.usable and not status.simulated and misfit is None:
            if candidate in CPU_TARGETS:
                cpu_candidates.append(candidate)
                continue
            log.info("target auto -> %s (%s)", candidate, status.reason)
            return profile, f"first usable accelerator in preference order: {status.reason}"
        why = misfit if status.usable and misfit else ("simulator only" if status.usable else status.reason)
        log.info("target auto: not %s (%s)", candidate, why)
    from .autoselect import choose

    choice = choose(cpu_candidates or ["cpu"], manifest, threads, measure)
    log.info("target auto -> %s (%s)", choice.target, choice.reason)
    return get_profile(choice.target), choice.reason


def resolve_target(
    name: str, manifest: Manifest | None = None, threads: int | None = None, measure: Measure | None = None
) -> TargetProfile:
    """:func:`resolve_target_with_reason` without the reason."""
    return resolve_target_with_reason(name, manifest, threads, measure)[0]

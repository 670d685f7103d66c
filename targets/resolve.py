"""Choosing the target a package runs on: a named one, checked, or the first usable for "auto".

Kept apart from :mod:`.profiles` (data) and :mod:`.detect` (probing) so that the arrows go one
way: resolve -> detect -> plugins -> profiles.
"""

from __future__ import annotations

import logging

from nanoedge.core.errors import TargetUnavailableError
from nanoedge.core.manifest import Manifest

from .detect import detect
from .profiles import AUTO_ORDER, TargetProfile, get_profile, package_misfit

log = logging.getLogger(__name__)


def resolve_target(name: str, manifest: Manifest | None = None) -> TargetProfile:
    """Return a usable profile for ``name`` or explain why not.

    "auto" walks :data:`AUTO_ORDER` and takes the first target whose provider is present, that
    is real hardware (not a simulator) and that the package suits; it logs each decision.
    """
    if name.lower() == "auto":
        for candidate in AUTO_ORDER:
            profile = get_profile(candidate)
            status = detect(profile)
            misfit = package_misfit(profile, manifest)
            if status.usable and not status.simulated and misfit is None:
                log.info("target auto -> %s (%s)", candidate, status.reason)
                return profile
            why = misfit if status.usable and misfit else ("simulator only" if status.usable else status.reason)
            log.info("target auto: not %s (%s)", candidate, why)
        return get_profile("cpu")
    profile = get_profile(name)
    status = detect(profile)
    if not status.usable:
        raise TargetUnavailableError(f"target '{profile.name}' is not usable here: {status.reason}", hint=status.hint)
    return profile

"""Target profiles: one small record per kind of hardware.

A profile says which execution providers to try (in order), with which options, what the
package should look like for it (static shapes, precision) and which pip package brings the
provider, so that a missing provider turns into an install hint rather than a silent CPU run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from nanoedge.runtime.errors import InvalidRequestError, TargetUnavailableError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TargetProfile:
    name: str
    description: str
    providers: tuple[str, ...]
    provider_options: tuple[dict[str, Any], ...] = ()
    needs_static_shapes: bool = False
    schemes: tuple[str, ...] = ("fp32",)
    pip_package: str = "onnxruntime"
    notes: str = ""
    session_config: dict[str, str] = field(default_factory=dict)

    def available_providers(self) -> list[str]:
        import onnxruntime as ort

        return [p for p in self.providers if p in ort.get_available_providers()]

    def is_available(self) -> bool:
        return bool(self.available_providers())


_PROFILES: dict[str, TargetProfile] = {
    "cpu": TargetProfile(
        name="cpu",
        description="onnxruntime CPU execution provider (x86-64 AVX2/AVX-512, ARM64 NEON)",
        providers=("CPUExecutionProvider",),
        schemes=("fp32", "int8", "dynamic", "weight-only"),
        pip_package="onnxruntime",
    ),
    "cuda": TargetProfile(
        name="cuda",
        description="NVIDIA GPU through the CUDA execution provider",
        providers=("CUDAExecutionProvider", "CPUExecutionProvider"),
        schemes=("fp32",),
        pip_package="onnxruntime-gpu",
    ),
}

# Preference order for target="auto": the first usable one wins.
_AUTO_ORDER = ("cuda", "cpu")


def known_targets() -> list[str]:
    return list(_PROFILES)


def get_profile(name: str) -> TargetProfile:
    try:
        return _PROFILES[name.lower()]
    except KeyError:
        raise InvalidRequestError(
            f"unknown target '{name}'", hint=f"known targets: {', '.join(['auto', *_PROFILES])}"
        ) from None


def resolve_target(name: str) -> TargetProfile:
    """Return a usable profile for ``name`` ("auto" picks the best available) or explain why not."""
    if name.lower() == "auto":
        for candidate in _AUTO_ORDER:
            profile = _PROFILES[candidate]
            if profile.is_available():
                log.info("target auto -> %s (%s is available)", profile.name, profile.providers[0])
                return profile
            log.info("target auto: skipping %s (%s not available)", candidate, profile.providers[0])
        return _PROFILES["cpu"]
    profile = get_profile(name)
    if not profile.is_available():
        raise TargetUnavailableError(
            f"target '{profile.name}' needs {profile.providers[0]}, which this onnxruntime does not provide",
            hint=f"install it with: pip install {profile.pip_package}",
        )
    return profile

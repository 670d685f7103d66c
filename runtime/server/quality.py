"""``quality`` -> number of denoising steps.

Hosted APIs take a quality word; a diffusion package takes a step count. A package may declare
its own mapping in ``nanoedge.json`` (``"quality": {"hd": {"steps": 30}, ...}``); otherwise the
mapping is derived from ``defaults.steps``: ``standard``/``medium``/``auto`` are the default,
``low`` is half of it and ``high``/``hd`` one and a half times (clients expect hd to cost about
50% more time, which on a diffusion model is 50% more steps). An explicit ``steps`` in the
request always wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from nanoedge.core.limits import DEFAULT_STEPS
from nanoedge.core.manifest import Manifest

#: Accepted words (and the Chinese labels clients send) -> canonical quality.
QUALITY_ALIASES: dict[str, str] = {
    "auto": "auto",
    "standard": "standard",
    "hd": "hd",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "标准": "standard",
    "普通": "standard",
    "高清": "hd",
    "超清": "hd",
    "低": "low",
    "中": "medium",
    "高": "high",
}

_FACTORS = {"auto": 1.0, "standard": 1.0, "medium": 1.0, "low": 0.5, "high": 1.5, "hd": 1.5}

#: Quality values the official ImagesResponse schema allows us to echo back.
ECHOABLE = frozenset({"low", "medium", "high"})


@dataclass(frozen=True)
class QualityPlan:
    quality: str
    steps: int


class QualityTable:
    """Steps for each quality word of one package."""

    def __init__(self, default_steps: int, declared: Mapping[str, Any] | None = None) -> None:
        base = max(1, int(default_steps))
        self._steps = {name: max(1, round(base * factor)) for name, factor in _FACTORS.items()}
        for name, value in (declared or {}).items():
            canonical = QUALITY_ALIASES.get(str(name).strip().lower())
            steps = value.get("steps") if isinstance(value, Mapping) else value
            if canonical and isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1:
                self._steps[canonical] = steps

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> "QualityTable":
        return cls(int(manifest.defaults.get("steps") or DEFAULT_STEPS), manifest.quality)

    @staticmethod
    def canonical(word: str) -> str | None:
        return QUALITY_ALIASES.get(word.strip().lower())

    def plan(self, quality: str | None) -> QualityPlan:
        name = "auto" if quality is None else quality
        return QualityPlan(name, self._steps[name])

    def as_dict(self) -> dict[str, int]:
        return dict(self._steps)

"""``target="auto"`` among CPU targets: measure, don't guess.

Which CPU runtime is fastest depends on the CPU *and* the model: on an AMD EPYC Zen 4,
OpenVINO's runtime wins on a 512 px BK-SDM-Tiny UNet step while onnxruntime's CPU provider
wins on the 64 px demo model, whose whole image takes less time than OpenVINO's compilation
(docs/targets.md). So when more than one CPU target is usable and fits the package, ``auto``
times each one on this package with the runtime's probe (``time_auto_candidate`` in the pipeline module:
one warm-up image, then a short image at the package's default size and guidance, from which
the default image time is predicted). The winner is remembered in
``NANOEDGE_CACHE_DIR/auto-target.json`` per package, CPU, thread count and runtime versions,
so only the first load pays. ``NANOEDGE_AUTO_MEASURE=0`` skips measuring and takes the first
candidate in preference order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from nanoedge.core import settings
from nanoedge.core.atomic import write_bytes_atomic
from nanoedge.core.manifest import Manifest
from nanoedge.core.settings import cache_dir

from .cpuinfo import cpu_info

log = logging.getLogger(__name__)


@dataclass
class AutoChoice:
    """Which target ``auto`` chose, why, and what it measured (seconds per predicted image)."""

    target: str
    reason: str
    measured_s: dict[str, float] = field(default_factory=dict)
    cached: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "reason": self.reason, "measured_s": self.measured_s, "cached": self.cached}


def _versions() -> str:
    found = []
    for name in ("onnxruntime", "openvino", "onnxruntime-ep-openvino"):
        try:
            found.append(f"{name}={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return ",".join(found)


def cache_key(manifest: Manifest, candidates: list[str], threads: int | None) -> str:
    """Package identity (its file hashes) + CPU + threads + candidates + runtime versions."""
    package = hashlib.sha256(json.dumps(manifest.files, sort_keys=True).encode()).hexdigest()[:16]
    cpu = cpu_info()
    return "|".join([package, cpu.model, ",".join(cpu.features), f"threads={threads or os.cpu_count()}", ",".join(candidates), _versions()])


def _cache_file() -> Path:
    return cache_dir() / "auto-target.json"


def _load_cache() -> dict[str, Any]:
    try:
        return json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}


def _remember(key: str, choice: AutoChoice) -> None:
    entries = _load_cache()
    entries[key] = {"target": choice.target, "measured_s": choice.measured_s}
    try:
        _cache_file().parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(_cache_file(), json.dumps(entries, indent=1).encode())
    except OSError as exc:  # a read-only cache only costs the next load a measurement
        log.warning("could not remember the auto target in %s: %s", _cache_file(), exc)


#: ``measure(package_root, target, threads) -> predicted seconds per default image``; the runtime
#: supplies it (``nanoedge.runtime.pipeline.time_auto_candidate``): this layer cannot run a pipeline.
Measure = Callable[[Path, str, "int | None"], float]


def choose(candidates: list[str], manifest: Manifest | None, threads: int | None = None, measure: Measure | None = None) -> AutoChoice:
    """The fastest of ``candidates`` (usable CPU targets that fit, in preference order).

    Without ``measure`` (no pipeline to time: ``nanoedge check``, a server resolving before it
    loads) the first candidate in preference order is taken.
    """
    if len(candidates) == 1:
        return AutoChoice(candidates[0], "the only usable CPU target")
    package_root = manifest.root if manifest is not None else None
    if manifest is None or package_root is None or measure is None:
        return AutoChoice(candidates[0], f"first usable in preference order {candidates} (no package to measure)")
    if not settings.auto_measure():
        return AutoChoice(candidates[0], f"first usable in preference order {candidates} (NANOEDGE_AUTO_MEASURE=0)")
    key = cache_key(manifest, candidates, threads)
    known = _load_cache().get(key)
    if known and known.get("target") in candidates:
        return AutoChoice(
            known["target"],
            _why(known["target"], known["measured_s"]) + " (measured earlier on this CPU)",
            known["measured_s"],
            cached=True,
        )
    measured: dict[str, float] = {}
    for name in candidates:
        started = time.perf_counter()
        try:
            measured[name] = round(measure(package_root, name, threads), 4)
        except Exception as exc:  # a target that cannot run this package loses, it does not crash auto
            log.warning("target auto: %s could not run this package: %s", name, getattr(exc, "message", exc))
            continue
        log.info("target auto: %s predicts %.3f s an image (measured in %.1f s)", name, measured[name], time.perf_counter() - started)
    if not measured:
        return AutoChoice("cpu", "no CPU target could run a probe image; cpu")
    best = min(measured, key=measured.__getitem__)
    choice = AutoChoice(best, _why(best, measured), measured)
    _remember(key, choice)
    return choice


def _why(best: str, measured: dict[str, float]) -> str:
    others = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in measured.items() if name != best)
    return f"fastest measured on this package: {best} {measured[best]:.2f} s an image" + (f" vs {others}" if others else "")

"""Where FP32 references live between runs: one folder per package, one store per plan.

Recording the FP32 trajectories (calibration calls, held-out calls with their outputs, the
held-out images) is the dearest part of a run on a real-size model, and it depends only on the
package's files and the plan (prompts, size, steps, guidance, scheduler, seed). So it is done
once: ``<cache>/quantize/<package digest>/refs-<plan digest>/`` holds a
:class:`~.calibration.TrajectoryStore` whose ``meta.json`` says exactly what it was recorded
for. A store is recorded into a private folder and renamed into place when complete, so an
interrupted or concurrent run never leaves (or reads) half a store. The newest
:data:`KEEP_PER_PACKAGE` stores of a package are kept; older ones are removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from nanoedge.core.settings import cache_dir

log = logging.getLogger(__name__)

KEEP_PER_PACKAGE = 3
META = "meta.json"


def package_folder(source_digest: str) -> Path:
    """This package's folder in the nanoedge cache (costs and references)."""
    return cache_dir() / "quantize" / source_digest[:20]


def _digest(meta: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:20]


def reference_folder(source_digest: str, meta: dict[str, Any]) -> Path:
    return package_folder(source_digest) / f"refs-{_digest(meta)}"


def matches(folder: Path, meta: dict[str, Any]) -> bool:
    """A complete store recorded for exactly ``meta``."""
    try:
        return json.loads((folder / META).read_text()) == meta
    except (OSError, ValueError):
        return False


def staging_folder(final: Path) -> Path:
    """A private folder next to ``final`` to record into (removed first if a crash left it)."""
    staging = final.with_name(f"{final.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    return staging


def publish(staging: Path, final: Path) -> Path:
    """Move a complete store into place; if another run got there first, keep theirs."""
    try:
        staging.rename(final)
    except OSError:
        if not (final / META).is_file():
            raise
        shutil.rmtree(staging, ignore_errors=True)
        log.info("another run cached the same FP32 references first; using those")
    prune(final.parent, keep=final)
    return final


def prune(folder: Path, keep: Path) -> None:
    """Remove this package's older stores beyond :data:`KEEP_PER_PACKAGE` (never ``keep``)."""
    stores = sorted(
        (p for p in folder.glob("refs-*") if p.is_dir() and ".partial-" not in p.name),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in [p for p in stores if p != keep][KEEP_PER_PACKAGE - 1 :]:
        shutil.rmtree(old, ignore_errors=True)
        log.info("removed old FP32 references %s", old)

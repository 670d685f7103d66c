"""Verifying a package's files against the sha256 sums in its manifest.

Hashing a 1.3 GB UNet takes seconds, too slow for every load on an edge box, so a file whose
size and mtime match a previous successful check is trusted from a small cache in the user's
cache folder (``NANOEDGE_CACHE_DIR`` or ``~/.cache/nanoedge``). Changing a file changes its
mtime, which forces a re-hash.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from .errors import PackageError
from .manifest import Manifest, sha256_file
from .settings import cache_dir

log = logging.getLogger(__name__)


def _cache_path() -> Path:
    return cache_dir() / "verified-files.json"


def _read_cache() -> dict[str, list]:
    try:
        return json.loads(_cache_path().read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(cache: dict[str, list]) -> None:
    path = _cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, path)
    except OSError as exc:  # a read-only home must not stop inference
        log.debug("could not write the verification cache: %s", exc)


def verify_package(manifest: Manifest, use_cache: bool = True) -> None:
    """Raise PackageError naming the first missing, truncated or altered file."""
    root = manifest.folder()
    cache = _read_cache() if use_cache else {}
    changed = False
    for rel, info in manifest.files.items():
        path = root / rel
        if not path.is_file():
            raise PackageError(
                f"package file '{path}' is missing",
                hint="copy the whole package folder again, or re-run the command that wrote it",
            )
        stat = path.stat()
        if stat.st_size != info["bytes"]:
            raise PackageError(
                f"package file '{path}' has {stat.st_size} bytes, the manifest says {info['bytes']}: it is truncated or was replaced",
                hint="copy the package again, or re-run the command that wrote it",
            )
        key = str(path.resolve())
        stamp = [stat.st_size, stat.st_mtime_ns, info["sha256"]]
        if use_cache and cache.get(key) == stamp:
            continue
        if sha256_file(path) != info["sha256"]:
            raise PackageError(
                f"package file '{path}' does not match its sha256 in nanoedge.json: it is corrupt or was modified",
                hint="copy the package again, or re-run the command that wrote it",
            )
        cache[key] = stamp
        changed = True
    if use_cache and changed:
        _write_cache(cache)

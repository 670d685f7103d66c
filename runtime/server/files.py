"""The image files behind ``response_format=url``.

Hosted APIs answer with a URL that works without the API key for a limited time (60 minutes
for OpenAI), and client code simply GETs it. So the server writes each image under a random
name (24 bytes from :mod:`secrets`, which cannot be guessed or enumerated), serves it without
authentication, and deletes it after ``ttl_s``. Names are checked against a strict pattern
before touching the disk, so no request can reach a path outside the store. The store's total
size is bounded too: the oldest files go first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

from nanoedge.core.atomic import write_bytes_atomic

log = logging.getLogger(__name__)

MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{32}\.(png|jpeg|webp)$")


class ImageStore:
    """Write-once image files with expiry; thread-safe."""

    def __init__(self, directory: Path | None, ttl_s: float, max_bytes: int) -> None:
        self._owned = directory is None
        self.directory = Path(tempfile.mkdtemp(prefix="nanoedge-images-")) if directory is None else Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ttl_s = float(ttl_s)
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, int]] = OrderedDict()  # name -> (created, bytes)
        self._total = 0
        self._last_sweep = 0.0
        for path in sorted(self.directory.iterdir(), key=lambda p: p.stat().st_mtime):
            if _NAME_RE.match(path.name):
                stat = path.stat()
                self._entries[path.name] = (stat.st_mtime, stat.st_size)
                self._total += stat.st_size
        self.sweep()

    def put(self, data: bytes, fmt: str) -> str:
        """Store ``data`` and return its file name."""
        if fmt not in MEDIA_TYPES:
            raise ValueError(f"unknown image format {fmt!r}")
        name = f"{secrets.token_urlsafe(24)}.{fmt}"
        write_bytes_atomic(self.directory / name, data)
        with self._lock:
            self._entries[name] = (time.time(), len(data))
            self._total += len(data)
        if time.monotonic() - self._last_sweep > min(60.0, self.ttl_s / 4) or self._total > self.max_bytes:
            self.sweep()
        return name

    def path_of(self, name: str) -> Path | None:
        """The file for ``name`` if it is a valid, live name; None otherwise."""
        if not _NAME_RE.match(name):
            return None
        with self._lock:
            entry = self._entries.get(name)
        if entry is None or time.time() - entry[0] > self.ttl_s:
            return None
        path = self.directory / name
        return path if path.is_file() else None

    def expires_in(self, name: str) -> float:
        with self._lock:
            entry = self._entries.get(name)
        return 0.0 if entry is None else max(0.0, self.ttl_s - (time.time() - entry[0]))

    @staticmethod
    def media_type(name: str) -> str:
        return MEDIA_TYPES[name.rsplit(".", 1)[1]]

    def sweep(self) -> int:
        """Delete expired files and, past ``max_bytes``, the oldest ones. Returns how many."""
        now = time.time()
        removed = []
        with self._lock:
            self._last_sweep = time.monotonic()
            for name, (created, size) in list(self._entries.items()):
                if now - created > self.ttl_s or self._total > self.max_bytes:
                    del self._entries[name]
                    self._total -= size
                    removed.append(name)
                else:
                    break  # entries are in creation order
        for name in removed:
            with contextlib.suppress(OSError):
                os.unlink(self.directory / name)
        if removed:
            log.debug("removed %d expired image file(s)", len(removed))
        return len(removed)

    def close(self) -> None:
        """Remove the folder if this store created it (a temporary one)."""
        if self._owned:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __len__(self) -> int:
        return len(self._entries)

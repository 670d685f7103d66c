"""Disk cache of seeded results: same package + parameters + seed -> the same image bytes.

Generation is deterministic given a seed, so a client that repeats a seeded request (a retry,
a page reload, several users asking for the same thing) can be answered from disk in
milliseconds instead of holding the worker for seconds. The key is a sha256 over the package
fingerprint (every file's sha256), the runtime version, the execution target and every
parameter that can change a byte of the answer (styled prompt, negative prompt, n, seed,
sizes, steps, guidance, scheduler, output format and compression). Unseeded requests are
random by definition and are never cached.

One entry is one file written atomically (temporary sibling + rename), so a crash never
leaves half an entry; a damaged entry reads as a miss and is deleted. The total size is
bounded: the least recently used entries go first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import struct
import threading
import time
from pathlib import Path
from typing import Any, Mapping

from nanoedge.core.atomic import write_bytes_atomic

log = logging.getLogger(__name__)

_MAGIC = b"NECACHE1"
_SUFFIX = ".entry"


def package_fingerprint(files: Mapping[str, Mapping[str, Any]]) -> str:
    """sha256 over the manifest's per-file hashes: changes whenever any model file does."""
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(f"{rel}\0{files[rel].get('sha256', '')}\n".encode())
    return digest.hexdigest()


def _encode_entry(images: list[bytes], meta: Mapping[str, Any]) -> bytes:
    header = json.dumps({"meta": dict(meta), "lengths": [len(b) for b in images]}).encode()
    return b"".join([_MAGIC, struct.pack(">I", len(header)), header, *images])


def _decode_entry(data: bytes) -> tuple[list[bytes], dict[str, Any]]:
    if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 4:
        raise ValueError("not a cache entry")
    (length,) = struct.unpack(">I", data[len(_MAGIC) : len(_MAGIC) + 4])
    start = len(_MAGIC) + 4
    header = json.loads(data[start : start + length])
    offset = start + length
    images = []
    for size in header["lengths"]:
        images.append(data[offset : offset + size])
        offset += size
    if offset != len(data) or any(len(b) != s for b, s in zip(images, header["lengths"])):
        raise ValueError("truncated cache entry")
    return images, header["meta"]


class ResultCache:
    """Thread-safe LRU over files in ``directory`` (one per key, fanned out by prefix)."""

    def __init__(self, directory: Path, max_bytes: int, namespace: str) -> None:
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        self.namespace = namespace
        self._lock = threading.Lock()
        self._index: dict[str, tuple[int, float]] = {}  # key -> (bytes, last use)
        self._total = 0
        self.directory.mkdir(parents=True, exist_ok=True)
        self._scan()

    def _scan(self) -> None:
        for path in self.directory.glob(f"*/*{_SUFFIX}"):
            with contextlib.suppress(OSError):
                stat = path.stat()
                self._index[path.name[: -len(_SUFFIX)]] = (stat.st_size, stat.st_mtime)
                self._total += stat.st_size
        self._evict()

    def key(self, params: Mapping[str, Any]) -> str:
        text = json.dumps({"namespace": self.namespace, **params}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}{_SUFFIX}"

    def get(self, key: str) -> tuple[list[bytes], dict[str, Any]] | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
            images, meta = _decode_entry(data)
        except FileNotFoundError:
            with self._lock:
                self._forget(key)
            return None
        except (OSError, ValueError, KeyError) as exc:
            log.warning("dropping damaged cache entry %s: %s", path.name, exc)
            with self._lock:
                self._forget(key)
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        now = time.time()
        with self._lock:
            self._index[key] = (len(data), now)
        with contextlib.suppress(OSError):
            os.utime(path, (now, now))  # the LRU order survives a restart
        return images, meta

    def put(self, key: str, images: list[bytes], meta: Mapping[str, Any]) -> None:
        data = _encode_entry(images, meta)
        if len(data) > self.max_bytes:
            return
        try:
            write_bytes_atomic(self._path(key), data)
        except OSError as exc:  # a full disk must not fail the request that was already made
            log.warning("could not write a cache entry: %s", exc)
            return
        with self._lock:
            self._forget(key)
            self._index[key] = (len(data), time.time())
            self._total += len(data)
            self._evict()

    def _forget(self, key: str) -> None:
        old = self._index.pop(key, None)
        if old is not None:
            self._total -= old[0]

    def _evict(self) -> None:
        if self._total <= self.max_bytes:
            return
        for key, _ in sorted(self._index.items(), key=lambda item: item[1][1]):
            if self._total <= self.max_bytes:
                break
            self._forget(key)
            with contextlib.suppress(OSError):
                self._path(key).unlink()

    @property
    def total_bytes(self) -> int:
        return self._total

    def __len__(self) -> int:
        return len(self._index)

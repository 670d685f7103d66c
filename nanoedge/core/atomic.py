"""Atomic writes: a package or file appears complete, or not at all.

Every stage writes into a hidden sibling directory and renames it into place at the end, so
an interrupted export or quantization never leaves a folder that looks like a package
(``nanoedge.json`` is written last, inside the staging folder).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import NanoedgeError


@contextlib.contextmanager
def staged_directory(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder next to ``target``; move it to ``target`` on success."""
    target = Path(target).absolute()
    if target.exists() and not overwrite:
        raise NanoedgeError(f"output '{target}' already exists", hint="choose another -o path, or pass --overwrite to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield staging
        os.chmod(staging, 0o755)
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, retired / "old")
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a file via a temporary sibling + rename (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise

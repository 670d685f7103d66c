"""Shared fixtures: tiny random-weight packages built once per test session.

Exporting ``preset:tiny-random`` takes ~10 s, so each variant is built once and shared;
tests must treat the packages as read-only (copy one with ``copy_package`` to damage it).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def pytest_configure(config):
    # Keep the verification cache away from the user's home during tests.
    os.environ.setdefault("NANOEDGE_CACHE_DIR", str(Path(config.rootpath) / ".pytest_cache" / "nanoedge-cache"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"reference material not found at {SHARED}")
    return SHARED


def _export(tmp_path_factory, name: str, **kwargs) -> Path:
    pytest.importorskip("torch")
    from nanoedge.export import ExportOptions, export_package

    out = tmp_path_factory.mktemp("pkg") / name
    export_package("preset:tiny-random", out, ExportOptions(**kwargs))
    return out


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory) -> Path:
    """FP32 dynamic-shape package of preset:tiny-random (native 64x64, 10 PNDM steps)."""
    return _export(tmp_path_factory, "tiny-random")


@pytest.fixture(scope="session")
def tiny_static_package(tmp_path_factory) -> Path:
    """The same model exported with static 64x64, batch 1 graphs (the NPU form)."""
    from nanoedge.core.sizes import Size

    return _export(tmp_path_factory, "tiny-random-static", static_shape=Size(64, 64), batch=1)


@pytest.fixture
def copy_package(tmp_path):
    """Copy a package so a test can modify or damage it."""

    def _copy(source: Path) -> Path:
        target = tmp_path / source.name
        shutil.copytree(source, target)
        return target

    return _copy


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None):
    """Run ``python -m nanoedge ARGS`` in a subprocess (the way users run it)."""
    import subprocess

    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "nanoedge", *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=900)

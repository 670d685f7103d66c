"""bench/serve_load.py --setups runs end to end (a single-process server and a 1-replica Ray
server, real processes); the figures themselves are measured by hand (docs/scale-out.md), never asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("uvicorn")

BENCH = Path(__file__).resolve().parents[1] / "bench" / "serve_load.py"


def test_serve_load_compares_hosting_setups(tiny_package):
    proc = subprocess.run([sys.executable, str(BENCH), "-m", str(tiny_package), "--setups", "local,ray1", "--batch", "2",
                           "--concurrency", "2", "--requests", "4", "--rounds", "1", "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout)
    assert [(r["setup"], r["concurrency"], r["max_batch"]) for r in rows] == [("local", 2, 2), ("ray1", 2, 2)]
    for row in rows:
        assert row["requests"] == 4 and row["failures"] == 0 and row["images_per_s"] > 0


def test_serve_load_refuses_an_unknown_setup(tiny_package):
    proc = subprocess.run([sys.executable, str(BENCH), "-m", str(tiny_package), "--setups", "local,cluster", "--batch", "4"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "unknown setup 'cluster'" in proc.stderr

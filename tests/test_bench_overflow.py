"""bench/overflow_latency.py runs end to end (two real `nanoedge serve` processes) and reports
both paths; the figures themselves are measured by hand (docs/serving.md), never asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

BENCH = Path(__file__).resolve().parents[1] / "bench" / "overflow_latency.py"


def test_overflow_latency_bench_runs(tiny_package):
    proc = subprocess.run([sys.executable, str(BENCH), "-m", str(tiny_package), "--rounds", "3", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["rounds"] == 3 and set(result["generation"]) == {"direct", "via_local"}
    for row in (*result["generation"].values(), result["healthz_local"], result["healthz_upstream"]):
        assert 0 < row["p10_ms"] <= row["median_ms"] <= row["p90_ms"]

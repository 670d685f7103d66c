"""Real-size architectures (opt-in: ``pytest -m slow``): export BK-SDM-Tiny and run it once."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_bk_sdm_tiny_exports_and_generates(tmp_path: Path):
    pytest.importorskip("torch")
    from nanoedge.export import export_package
    from nanoedge.runtime import Pipeline

    started = time.perf_counter()
    manifest = export_package("preset:bk-sdm-tiny", tmp_path / "bk")
    seconds = time.perf_counter() - started
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    params = {name: c["parameters"] for name, c in manifest.components.items()}
    print(f"\nexport bk-sdm-tiny: {seconds:.0f} s, peak RSS {peak_gib:.1f} GiB, params {params}")
    assert abs(params["unet"] - 323.4e6) < 0.1e6
    assert abs(sum(params.values()) - 0.5e9) < 0.05e9
    assert (tmp_path / "bk" / "unet" / "model.onnx_data").stat().st_size > 1.2e9
    image = Pipeline.load(tmp_path / "bk").generate("a red circle", size="256x256", steps=2, seed=1)[0]
    assert image.size == (256, 256)

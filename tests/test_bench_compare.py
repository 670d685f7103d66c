"""Pure helpers of the comparison harness (bench/compare_report.py): no model is run here."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from compare_report import (  # noqa: E402
    Config,
    bar_chart,
    line_chart,
    parse_config,
    psnr,
    ratio,
    render_table,
    summarize,
    targets_check,
    tree_bytes,
)


def test_parse_config():
    c = parse_config("512x768:25:7.5")
    assert c == Config(512, 768, 25, 7.5)
    assert c.key == "512x768-s25-g7.5"
    assert "CFG" in c.title and "no guidance" in parse_config("512x512:4:1").title
    for bad in ("512x512:25", "512:25:7.5", "500x512:25:7.5", "512x512:0:7.5", "512x512:4:-1", "axb:1:1"):
        with pytest.raises(ValueError):
            parse_config(bad)


def test_psnr():
    a = np.zeros((4, 4, 3), dtype=np.uint8)
    assert psnr(a, a) == float("inf")
    b = a.copy()
    b[0, 0, 0] = 255  # mse = 255^2 / 48
    assert psnr(a, b) == pytest.approx(10 * np.log10(48))
    with pytest.raises(ValueError):
        psnr(a, np.zeros((2, 2, 3)))


def test_tree_bytes(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin").write_bytes(b"x" * 10)
    (tmp_path / "sub" / "b.bin").write_bytes(b"y" * 5)
    (tmp_path / "skip.json").write_bytes(b"z" * 100)
    assert tree_bytes(tmp_path, exclude={"skip.json"}) == 15
    assert tree_bytes(tmp_path) == 115


def _run(variant, image_s, rss, cold=10.0, ok=True, config="k"):
    return {"config": config, "variant": variant, "ok": ok, "image_s": image_s, "cold_start_s": cold,
            "peak_rss_mib": rss, "model_bytes": 1_000_000, "psnr_vs_diffusers": 50.0, "error": "boom"}


def test_summarize_pools_images_and_counts_failures():
    runs = [_run("a", [3.0, 5.0], 100), _run("a", [4.0], 300), _run("a", [], 0, ok=False), _run("b", [1.0], 50)]
    s = summarize(runs)["k"]
    assert s["a"]["image_s"]["median"] == 4.0 and s["a"]["image_s"]["n"] == 3
    assert (s["a"]["image_s"]["min"], s["a"]["image_s"]["max"]) == (3.0, 5.0)
    assert s["a"]["peak_rss_mib"]["median"] == 200 and s["a"]["failed_runs"] == 1
    assert s["b"]["failed_runs"] == 0 and s["b"]["image_s"]["median"] == 1.0


def test_ratio_and_targets():
    assert ratio(10.0, 4.0) == 2.5 and ratio(None, 1.0) is None and ratio(1.0, 0.0) is None
    summary = summarize([_run("diffusers", [10.0], 1000), _run("optimum", [6.0], 900), _run("int8", [4.0], 600)])["k"]
    checks = {c["goal"]: c for c in targets_check(summary, "int8")}
    assert checks[2.0]["value"] == 2.5 and checks[2.0]["met"] is True
    assert checks[1.5]["value"] == 1.5 and checks[1.5]["met"] is True
    assert checks[0.5]["value"] == 0.6 and checks[0.5]["met"] is False


def test_render_table_rows_and_ratios():
    runs = [_run("diffusers", [10.0], 1000), _run("optimum", [5.0], 900), _run("int8", [2.5], 400), _run("w8a16", [], 0, ok=False)]
    table = render_table(Config(512, 512, 25, 7.5), summarize(runs)["k"], ["diffusers", "optimum", "int8", "w8a16", "absent"])
    lines = table.splitlines()
    assert len(lines) == 2 + 4  # header, rule, four measured or failed variants
    int8_row = next(line for line in lines if line.startswith("| int8 "))
    assert "4.00×" in int8_row and "2.00×" in int8_row and "0.40×" in int8_row
    assert "failed" in next(line for line in lines if line.startswith("| w8a16 "))


def test_charts_write_png(tmp_path: Path):
    from PIL import Image

    bar_chart([{"title": "t", "unit": "s", "bars": [("a", 2.0, 1.0, 3.0), ("b", None, None, None)]}], tmp_path / "bar.png", "title")
    line_chart(
        [{"title": "t", "xlabel": "x", "unit": "s", "series": {"a": [(1, 1.0), (2, 3.0)], "b": [(1, None)]}}],
        tmp_path / "line.png",
        "title",
    )
    for name in ("bar.png", "line.png"):
        with Image.open(tmp_path / name) as img:
            assert img.size[0] > 100 and img.size[1] > 100
            assert len(img.getcolors(maxcolors=100000) or []) > 2  # something was drawn


def test_plan_interleaves_variants_and_places_scaling():
    import argparse

    import compare_run

    args = argparse.Namespace(variants=[("diffusers", "diffusers", "d"), ("int8", "nanoedge", "i"), ("fp32", "nanoedge", "f")],
                              scaling_variants=["int8"], scaling_rounds=1, scaling=[parse_config("256x256:2:1")], rounds=2,
                              scaling_after=1, config=[parse_config("512x512:25:7.5"), parse_config("512x512:4:1")])
    plan = [(phase, config.key, rnd, variant[0]) for phase, config, rnd, variant in compare_run.build_plan(args)]
    assert plan[:3] == [("main", "512x512-s25-g7.5", 1, v) for v in ("diffusers", "int8", "fp32")]
    assert plan[6] == ("scaling", "256x256-s2-g1", 1, "int8") and len(plan) == 13
    assert plan[7:10] == [("main", "512x512-s25-g7.5", 2, v) for v in ("diffusers", "int8", "fp32")]
    args.scaling_after = None
    assert compare_run.build_plan(args)[-1][0] == "scaling"

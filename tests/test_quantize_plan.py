"""The quantization plan (sized from measured call costs) and the FP32 reference cache.

The plan tests are pure (synthetic costs); the cache tests run ``quantize_package`` on the
tiny package at 32x32 with 2 steps and count how often FP32 work is done.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nanoedge.core.sizes import SizeRules
from nanoedge.quantize.plan import (
    FEWER_STEPS,
    CallCosts,
    RunShape,
    choose_plan,
    estimate_seconds,
    half_size,
    ladder,
)

RULES = SizeRules.from_manifest({"native": "512x512", "multiple_of": 32, "min": 32, "max": 2048})
ASKED = RunShape(size="512x512", steps=25, calibration_prompts=16, eval_prompts=16)


def costs_scaled(unet_512: float, vae_512: float):
    """Costs proportional to the pixel count, as convolutions are; records every size asked."""
    asked: list[str] = []

    def costs_at(size: str) -> CallCosts:
        asked.append(size)
        w, h = (int(v) for v in size.split("x"))
        scale = w * h / (512 * 512)
        return CallCosts(size, unet_512 * scale, vae_512 * scale, 0.05)

    return costs_at, asked


def plan_for(budget: float, unet_512: float = 6.0, vae_512: float = 10.0, fixed=(), cached=lambda shape: False, known=None):
    costs_at, measured = costs_scaled(unet_512, vae_512)
    recall = known or (lambda size: None)
    plan = choose_plan(ASKED, fixed, RULES, recall, costs_at, cached, budget, report_samples=16, fp32_gb=1.9)
    return plan, measured


def test_the_asked_plan_runs_when_it_fits():
    plan, measured = plan_for(budget=1e6)
    assert plan.shape == ASKED and plan.reductions == [] and plan.fits
    assert measured == ["256x256", "512x512"]  # the ladder's smallest size first, then the asked one


def test_a_size_whose_rungs_cannot_fit_is_never_measured():
    """At 256x256 costs the 512x512 rungs already miss the budget: 512x512 is not probed."""
    plan, measured = plan_for(budget=1.0)
    assert measured == ["256x256"]
    assert plan.costs.size == "256x256"


def test_measured_costs_are_recalled_not_measured_again():
    costs_at, _ = costs_scaled(6.0, 10.0)
    table = {size: costs_at(size) for size in ("256x256", "512x512")}
    plan, measured = plan_for(budget=1e6, known=table.get)
    assert measured == [] and plan.shape == ASKED


def test_the_plan_is_the_first_rung_of_the_ladder_that_fits():
    costs_at, _ = costs_scaled(6.0, 10.0)
    rungs = ladder(ASKED, (), RULES)
    totals = [sum(estimate_seconds(s, costs_at(s.size), 16, 1.9, False).values()) for s, _ in rungs]
    assert totals == sorted(totals, reverse=True), "every rung must cost less than the one before"
    budget = (totals[2] + totals[3]) / 2  # the fourth rung is the first that fits
    plan, _ = plan_for(budget)
    assert plan.shape == rungs[3][0] and plan.fits
    assert plan.total_s == pytest.approx(totals[3])
    assert plan.reductions == [why for _, why in rungs[1:4]]


def test_ladder_order_and_what_it_never_cuts():
    shapes = [s for s, _ in ladder(ASKED, (), RULES)]
    assert [s.calibration_prompts for s in shapes] == [16, 8, 8, 8, 8, 4]
    assert [s.size for s in shapes] == ["512x512"] * 2 + ["256x256"] * 4
    assert [s.steps for s in shapes] == [25, 25, 25, *FEWER_STEPS, FEWER_STEPS[-1]]
    assert {s.eval_prompts for s in shapes} == {16}, "the held-out prompts the gate's median is taken over are never cut"


def test_options_the_user_gave_are_never_reduced():
    plan, measured = plan_for(budget=1.0, fixed=("size", "steps"))
    assert (plan.shape.size, plan.shape.steps) == ("512x512", 25)
    assert plan.shape.calibration_prompts == 4
    assert measured == ["512x512"]


def test_an_unreachable_budget_runs_the_last_rung_and_says_so():
    plan, _ = plan_for(budget=1.0)
    assert plan.shape == ladder(ASKED, (), RULES)[-1][0]
    assert not plan.fits
    assert any("NOT met" in line for line in plan.describe())


def test_cached_references_cost_nothing_and_the_same_rung_is_chosen():
    cold, _ = plan_for(budget=900)
    warm, _ = plan_for(budget=900, cached=lambda shape: shape == cold.shape)
    assert warm.shape == cold.shape
    assert warm.estimate_s["FP32 references"] == 0 < cold.estimate_s["FP32 references"]
    assert warm.references_cached and not cold.references_cached


def test_half_size_keeps_the_unet_multiple_and_the_minimum():
    assert half_size("512x768", RULES) == "256x384"
    assert half_size("96x96", RULES) == "32x32"  # 48 rounded down to a multiple of 32
    assert half_size("32x32", RULES) is None


def test_a_static_package_is_never_planned_at_another_size():
    static = SizeRules.from_manifest({"native": "64x64", "multiple_of": 16, "min": 16, "static": "64x64"})
    assert half_size("64x64", static) is None
    assert all("size" not in reason for _, reason in ladder(RunShape("64x64", 25, 16, 16), (), static))


# -- the FP32 reference cache, on the tiny package --------------------------------------------

onnx = pytest.importorskip("onnx")

from nanoedge.quantize import QuantizeOptions, quantize_package  # noqa: E402

OPEN_GATE = {"min_component_psnr": 0.0, "min_psnr": 0.0, "min_responsiveness": 0.0}
SMALL = {"scheme": "int8", "size": "32x32", "steps": 2, "eval_prompts": 1, "report_samples": 4, **OPEN_GATE}


@pytest.fixture
def counted(monkeypatch, tmp_path):
    """A fresh cache folder, and counters of FP32 recordings, cost probes and range collections."""
    import nanoedge.quantize.costs as costs
    import nanoedge.quantize.job as job
    import nanoedge.quantize.ranges as ranges

    monkeypatch.setenv("NANOEDGE_CACHE_DIR", str(tmp_path / "cache"))
    calls = {"record": 0, "measure": 0, "ranges": 0}
    record, measure, collect = job.record_trajectories, costs.measure_call_costs, ranges.collect_ranges

    def counting_collect(*args, **kwargs):
        calls["ranges"] += 1
        return collect(*args, **kwargs)

    def counting_record(*args, **kwargs):
        calls["record"] += 1
        return record(*args, **kwargs)

    def counting_measure(*args, **kwargs):
        calls["measure"] += 1
        return measure(*args, **kwargs)

    monkeypatch.setattr(job, "record_trajectories", counting_record)
    monkeypatch.setattr(costs, "measure_call_costs", counting_measure)
    monkeypatch.setattr(ranges, "collect_ranges", counting_collect)
    return calls


def test_a_second_run_reuses_the_cached_fp32_references(tiny_package: Path, tmp_path: Path, counted):
    first = quantize_package(tiny_package, tmp_path / "a", QuantizeOptions(**SMALL))
    # calibration + held-out split, one cost probe, ranges of the three components
    assert counted == {"record": 2, "measure": 1, "ranges": 3}
    second = quantize_package(tiny_package, tmp_path / "b", QuantizeOptions(**SMALL))
    assert counted == {"record": 2, "measure": 1, "ranges": 3}, "the second run recomputed FP32 work"
    plan = second.manifest.quantization["calibration"]["plan"]
    assert plan["references_cached"] and not first.manifest.quantization["calibration"]["plan"]["references_cached"]
    # Same references and ranges, same quantized models: the same figures.
    assert second.report["components"]["unet"]["psnr_db"] == first.report["components"]["unet"]["psnr_db"]
    assert second.report["end_to_end"]["per_prompt_psnr_db"] == first.report["end_to_end"]["per_prompt_psnr_db"]
    # Another plan (other steps) is recorded anew, in its own store.
    quantize_package(tiny_package, tmp_path / "c", QuantizeOptions(**{**SMALL, "steps": 3}))
    assert counted["record"] == 4


def test_an_interrupted_recording_is_never_reused(tiny_package: Path, tmp_path: Path, counted, monkeypatch):
    import nanoedge.quantize.job as job

    real = job.record_trajectories

    def fail_on_held_out(pipe, prompts, store, split, *args, **kwargs):
        if split == "evaluation":
            raise KeyboardInterrupt
        return real(pipe, prompts, store, split, *args, **kwargs)

    monkeypatch.setattr(job, "record_trajectories", fail_on_held_out)
    with pytest.raises(KeyboardInterrupt):
        quantize_package(tiny_package, tmp_path / "a", QuantizeOptions(**SMALL))
    monkeypatch.setattr(job, "record_trajectories", real)
    result = quantize_package(tiny_package, tmp_path / "b", QuantizeOptions(**SMALL))
    assert not result.manifest.quantization["calibration"]["plan"]["references_cached"]


def test_a_small_budget_reduces_what_was_left_open(tiny_package: Path, tmp_path: Path, counted):
    """tiny-random asks 64x64, 10 steps, 16 calibration prompts: an unreachable budget takes
    the last rung (4 prompts, 32x32, 8 steps) and keeps the held-out prompts."""
    options = QuantizeOptions(scheme="dynamic", eval_prompts=2, report_samples=4, time_budget_s=1e-3, **OPEN_GATE)
    result = quantize_package(tiny_package, tmp_path / "q", options)
    calibration = result.manifest.quantization["calibration"]
    assert (calibration["prompts"], calibration["held_out_prompts"]) == (4, 2)
    assert (calibration["settings"]["size"], calibration["settings"]["steps"]) == ("32x32", FEWER_STEPS[-1])
    plan = calibration["plan"]
    assert plan["asked"] == {"size": "64x64", "steps": 10, "calibration_prompts": 16, "eval_prompts": 2}
    assert plan["reductions"] and plan["estimate_s"]["FP32 references"] > 0
    assert result.report["end_to_end"]["prompts"] == 2

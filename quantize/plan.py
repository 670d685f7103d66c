"""How much FP32 work a quantization run does, sized from the measured cost of one model call.

A run's time is almost all model calls: recording FP32 trajectories (calibration prompts and
held-out prompts), streaming calibration ranges, then per candidate the teacher-forced
component checks and the held-out images. On a 2-core CPU a real-size UNet call at 512x512
takes seconds, so 16 + 16 prompts x 25 steps is over an hour (BK-SDM-Tiny). The plan measures
one FP32 UNet, VAE decoder and text encoder call (:mod:`.costs`), estimates every stage, and
walks a fixed ladder of reductions until the estimate fits the time budget:

1. calibration prompts 16 -> 8 (ranges are min/max over every call: 8 prompts x all steps
   still cover the whole timestep range);
2. the size to half each side (a quarter of the pixels: convolutions see the same kind of
   activations, and the gate's figures are measured at that size too);
3. fewer denoising steps (12, then 8; every step of the schedule is still visited);
4. calibration prompts -> 4.

What the gate measures is never cut: the held-out prompts (the image PSNR median is over 16 by
default) and the teacher-forced report calls stay as asked. Options the user gives (size,
steps, calibration prompts) are fixed: the plan only chooses what was left open. When even the
last rung misses the budget, the plan says so and runs the last rung. The ladder is a pure
function of the measured costs, which are cached per package (:mod:`.costs`), so a second run
picks the same plan and finds its FP32 references in the cache.

Estimates assume a quantized call costs what an FP32 call costs (an upper bound on CPUs) and
count one candidate; each further mixed-precision attempt adds about one candidate's cost.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Iterable

from nanoedge.core.sizes import Size, SizeRules, parse_size

# Calibration runs each call through a copy of the model with a ReduceMin and a ReduceMax on
# every tensor to calibrate. BK-SDM-Tiny at 256x256 (docs/quantization.md): 2.9 s per UNet
# range call against at most 4.0 s per FP32 UNet call while recording: about one FP32 call.
RANGES_OVERHEAD = 1.0
# Copying, pre-processing, rewriting and quantizing a component, per GB of FP32 ONNX: one
# figure for all components. BK-SDM-Tiny (1.94 GB): 50 s pre-processing + 27 s quantizing
# in the warm run (docs/quantization.md).
PREP_SECONDS_PER_GB = 40.0
FEWER_CALIBRATION_PROMPTS = (8, 4)
FEWER_STEPS = (12, 8)
DEFAULT_CALIBRATION_PROMPTS = 16


@dataclass(frozen=True)
class CallCosts:
    """Seconds of one FP32 call of each component at ``size`` (the UNet with its CFG batch)."""

    size: str
    unet_s: float
    vae_s: float
    text_s: float
    # UNet calls beyond one per step (PNDM's warm-up runs one more), counted in the probe.
    extra_unet_calls: int = 0

    def image_s(self, steps: int) -> float:
        """One generated image: text encoder, every denoising step, one decode."""
        return self.text_s + (steps + self.extra_unet_calls) * self.unet_s + self.vae_s


@dataclass(frozen=True)
class RunShape:
    """What the FP32 work of a run is made of; the plan chooses it."""

    size: str
    steps: int
    calibration_prompts: int
    eval_prompts: int

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    shape: RunShape
    asked: RunShape  # the package defaults and the user's options, before any reduction
    estimate_s: dict[str, float]
    budget_s: float
    costs: CallCosts
    references_cached: bool
    reductions: list[str] = field(default_factory=list)

    @property
    def total_s(self) -> float:
        return sum(self.estimate_s.values())

    @property
    def fits(self) -> bool:
        return self.total_s <= self.budget_s

    @property
    def per_attempt_s(self) -> float:
        return self.estimate_s.get("report", 0.0)

    def as_dict(self) -> dict:
        return {
            **self.shape.as_dict(),
            "asked": self.asked.as_dict(),
            "reductions": self.reductions,
            "estimate_s": {k: round(v, 1) for k, v in self.estimate_s.items()},
            "budget_s": self.budget_s,
            "fp32_call_s": asdict(self.costs),
            "references_cached": self.references_cached,
        }

    def describe(self) -> list[str]:
        """Lines printed before the work starts: what runs, why, and how long it should take."""
        s, a = self.shape, self.asked
        size = s.size + ("" if s.size == a.size else f" (asked {a.size})")
        steps = f"{s.steps} steps" + ("" if s.steps == a.steps else f" (asked {a.steps})")
        prompts = f"{s.calibration_prompts} calibration prompts" + (
            "" if s.calibration_prompts == a.calibration_prompts else f" (asked {a.calibration_prompts})"
        )
        c = self.costs
        lines = [
            f"plan: {size}, {steps}, {prompts}, {s.eval_prompts} held-out prompts",
            f"  measured FP32 call at {c.size}: UNet {c.unet_s:.2f} s, VAE decoder {c.vae_s:.2f} s, text encoder {c.text_s:.2f} s",
            "  estimate: "
            + ", ".join(f"{k} {format_seconds(v)}" for k, v in self.estimate_s.items() if v > 0)
            + f"; total {format_seconds(self.total_s)} (budget {format_seconds(self.budget_s)}"
            + ("" if self.fits else ", NOT met by the smallest plan")
            + "); each mixed-precision attempt adds about "
            + format_seconds(self.per_attempt_s),
            "  FP32 references: " + ("reused from the cache" if self.references_cached else "recorded now, cached for the next run"),
        ]
        if self.reductions:
            lines.insert(1, "  reduced to fit the time budget: " + "; ".join(self.reductions))
        return lines


def format_seconds(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def estimate_seconds(
    shape: RunShape, costs: CallCosts, report_samples: int, fp32_gb: float, references_cached: bool
) -> dict[str, float]:
    """Seconds per stage for ``shape`` with ``costs`` measured at ``shape.size``."""
    image = costs.image_s(shape.steps)
    recorded = 0.0 if references_cached else (shape.calibration_prompts + shape.eval_prompts) * image
    unet_checks = min(report_samples, shape.eval_prompts * shape.steps) * costs.unet_s
    vae_checks = min(report_samples, shape.eval_prompts) * costs.vae_s
    return {
        "FP32 references": recorded,
        "preparing": PREP_SECONDS_PER_GB * fp32_gb,
        "ranges": RANGES_OVERHEAD * shape.calibration_prompts * image,
        "report": unet_checks + vae_checks + shape.eval_prompts * image,
    }


def half_size(size: str, rules: SizeRules) -> str | None:
    """Half of each side (rounded down to the UNet's multiple), or None where the package cannot run it.

    A static-shape package runs its one size only, so it never has a smaller rung.
    """
    if rules.static is not None:
        return None
    s = parse_size(size)
    step = rules.multiple_of
    w, h = (s.width // 2) // step * step, (s.height // 2) // step * step
    if min(w, h) < max(rules.minimum, step):
        return None
    return str(Size(w, h))


def ladder(asked: RunShape, fixed: Iterable[str], rules: SizeRules) -> list[tuple[RunShape, str]]:
    """Every shape the plan may pick, largest first, each with the reduction that made it."""
    locked = set(fixed)
    rungs: list[tuple[RunShape, str]] = [(asked, "")]

    def step(name: str, value, why: str) -> None:
        current = rungs[-1][0]
        if name in locked or value is None or getattr(current, name) == value:
            return
        rungs.append((replace(current, **{name: value}), why))

    first, last = FEWER_CALIBRATION_PROMPTS
    if asked.calibration_prompts > first:
        step("calibration_prompts", first, f"calibration prompts {asked.calibration_prompts} -> {first}")
    half = half_size(asked.size, rules)
    step("size", half, f"size {asked.size} -> {half}")
    for steps in FEWER_STEPS:
        if steps < rungs[-1][0].steps:
            step("steps", steps, f"steps {rungs[-1][0].steps} -> {steps}")
    if rungs[-1][0].calibration_prompts > last:
        step("calibration_prompts", last, f"calibration prompts {rungs[-1][0].calibration_prompts} -> {last}")
    return rungs


def choose_plan(
    asked: RunShape,
    fixed: Iterable[str],
    rules: SizeRules,
    known: Callable[[str], CallCosts | None],
    measure: Callable[[str], CallCosts],
    cached: Callable[[RunShape], bool],
    budget_s: float,
    report_samples: int,
    fp32_gb: float,
) -> Plan:
    """The first rung of :func:`ladder` whose estimate fits ``budget_s`` (else the last rung).

    ``known(size)`` recalls FP32 call costs measured before (None if never); ``measure(size)``
    times them (an image's worth of work). The smallest size of the ladder is measured first;
    a larger size is measured only if its rung could fit at all, judged with the smaller size's
    costs, which a larger size can only exceed. So BK-SDM-Tiny, whose 512x512 rungs miss the
    budget even at 256x256 costs, is never probed at 512x512. ``cached(shape)``: the FP32
    references for that shape are on disk already, so recording them costs nothing.
    """
    rungs = ladder(asked, fixed, rules)

    measured: dict[str, CallCosts] = {}

    def recall(size: str) -> CallCosts | None:
        return measured.get(size) or known(size)

    def costs_at(size: str) -> CallCosts:
        costs = recall(size)
        if costs is None:
            costs = measured[size] = measure(size)
        return costs

    smallest = min((shape.size for shape, _ in rungs), key=lambda s: parse_size(s).width * parse_size(s).height)
    floor = costs_at(smallest)
    reductions: list[str] = []
    plan: Plan | None = None
    for shape, why in rungs:
        if why:
            reductions.append(why)
        hit = cached(shape)
        if recall(shape.size) is None:
            bound = estimate_seconds(shape, replace(floor, size=shape.size), report_samples, fp32_gb, hit)
            if sum(bound.values()) > budget_s and shape != rungs[-1][0]:
                continue  # cannot fit: not worth measuring
        costs = costs_at(shape.size)
        estimate = estimate_seconds(shape, costs, report_samples, fp32_gb, hit)
        plan = Plan(shape, asked, estimate, budget_s, costs, hit, list(reductions))
        if plan.fits:
            break
    assert plan is not None  # the last rung is always estimated
    return plan

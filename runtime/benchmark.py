"""``nanoedge bench``: where an image's time goes, measured the same way for every package.

Per component: text encoder, per-step UNet (including the scheduler step, which is what a
user waits for) and VAE decoder, as medians with spread over repeats after warm-up; end-to-end
image time; peak RSS of the process; package bytes; and cold start, measured as a fresh
``python -m nanoedge generate`` process from exec to image written.
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from nanoedge.targets.cpuinfo import cpu_info

from .pipeline import Pipeline
from .requests import GenerationRequest


@dataclass
class Spread:
    median: float
    minimum: float
    maximum: float
    samples: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, values: list[float]) -> "Spread":
        return cls(statistics.median(values), min(values), max(values), [round(v, 4) for v in values])


@dataclass
class BenchResult:
    package: str
    target: str
    size: str
    steps: int
    guidance: float
    scheduler: str
    repeats: int
    load_s: float
    text_encoder_s: Spread
    unet_step_s: Spread
    vae_decoder_s: Spread
    image_s: Spread
    peak_rss_mb: float
    package_bytes: int
    cold_start_s: float | None = None
    #: why this target ("requested", or what `--target auto` measured)
    target_reason: str = "requested"
    #: model, vendor, ISA flags and kind of the CPU it ran on (nanoedge.targets.cpuinfo)
    cpu: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure_cold_start(package: str, target: str, size: str, steps: int, guidance: float) -> float:
    """Seconds from starting a new process to its first image on disk."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cold.png"
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "nanoedge", "generate", "cold start", "-m", package, "-o", str(out), "--target", target,
             "--size", size, "--steps", str(steps), "--guidance", str(guidance), "--seed", "0"],
            capture_output=True, text=True,
        )
        elapsed = time.perf_counter() - started
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"cold-start run failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
        return elapsed


def run_benchmark(
    package: str,
    target: str = "cpu",
    size: str | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    scheduler: str | None = None,
    repeats: int = 3,
    warmup: int = 1,
    cold_start: bool = True,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> BenchResult:
    say = progress or (lambda message: None)
    started = time.perf_counter()
    pipe = Pipeline.load(package, target=target, threads=threads)
    load_s = time.perf_counter() - started
    request = pipe.resolve(
        GenerationRequest("a photo of a red fox in the snow", seed=0, size=size, steps=steps, guidance=guidance, scheduler=scheduler)
    )
    te, unet, vae, image = [], [], [], []
    for index in range(warmup + repeats):
        pipe.clear_caches()  # the text encoder must really run each time
        t0 = time.perf_counter()
        result = pipe.generate_batch([request])[0]
        elapsed = time.perf_counter() - t0
        kind = "warm-up" if index < warmup else f"repeat {index - warmup + 1}/{repeats}"
        say(f"{kind}: {elapsed:.2f} s")
        if index < warmup:
            continue
        te.append(result.timings["text_encoder_s"])
        unet.append(result.timings["unet_s"] / request.steps)
        vae.append(result.timings["vae_decoder_s"])
        image.append(elapsed)
    bench = BenchResult(
        package=str(package),
        target=pipe.profile.name,
        size=str(request.run_size),
        steps=request.steps,
        guidance=request.guidance,
        scheduler=request.scheduler,
        repeats=repeats,
        load_s=round(load_s, 3),
        text_encoder_s=Spread.of(te),
        unet_step_s=Spread.of(unet),
        vae_decoder_s=Spread.of(vae),
        image_s=Spread.of(image),
        peak_rss_mb=round(peak_rss_mb(), 1),
        package_bytes=sum(int(f["bytes"]) for f in pipe.manifest.files.values()),
        target_reason=pipe.target_reason,
        cpu=cpu_info().as_dict(),
    )
    if cold_start:
        del pipe
        say("cold start: a new process, load -> first image")
        # the chosen target, not "auto": the cold start measures that target, not a second measurement
        cold = measure_cold_start(str(package), bench.target, str(request.run_size), request.steps, request.guidance)
        bench.cold_start_s = round(cold, 3)
    return bench

"""``quantize_package``: an FP32 package in, a quantized package with its accuracy report out.

Stages: check the request (:mod:`.checks`) -> plan the FP32 work from the measured cost of
one call so the run fits its time budget (:mod:`.plan`) -> record (or reuse from the cache,
:mod:`.refcache`) real trajectories with the FP32 package
(calibration prompts, and held-out prompts whose outputs and images are the reference) ->
copy, rewrite and pre-process each component, stream activation ranges (:mod:`.job`) ->
quantize -> assemble a candidate package -> measure the report -> quality gate. When the gate
is missed, :mod:`.search` keeps the nodes with the largest measured effect in float, in nested
steps within the size budget. Only a passing package is written (:mod:`.publish`); otherwise
nothing is, and :class:`QualityGateError` carries the measured attempts.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from nanoedge.core.errors import InvalidRequestError, QualityGateError, require
from nanoedge.core.manifest import COMPONENTS, Manifest

from .checks import check_source, resolve_schemes, warn_cpu_scheme_for_npu, warn_fused_attention_for_npu
from .job import QuantizationJob
from .options import ProgressCallback, QuantizeOptions, QuantizeResult
from .plan import format_seconds
from .publish import publish
from .search import Candidate, attempt_record, search

log = logging.getLogger(__name__)

# One failure, one exception: the old name stays importable.
GateMissed = QualityGateError

__all__ = ["GateMissed", "QualityGateError", "QuantizeOptions", "QuantizeResult", "quantize_package", "resolve_schemes"]


def quantize_package(
    source: "str | Path", output: "str | Path", options: QuantizeOptions | None = None, progress: ProgressCallback | None = None
) -> QuantizeResult:
    """Quantize the FP32 package ``source`` into a new package ``output``.

    Raises :class:`QualityGateError` (exit code 6) when no candidate reaches the gate; in that
    case nothing is written. The input package is only read.
    """
    options = options or QuantizeOptions()
    notify: ProgressCallback = progress or (lambda stage, done, total: None)
    started = time.perf_counter()
    require("onnx", "quantize")
    options.validate()
    source_manifest = Manifest.load(source)
    check_source(source_manifest)
    output = Path(output).absolute()
    if output.exists() and not options.overwrite:
        raise InvalidRequestError(
            f"output '{output}' already exists", hint="choose another output folder, or allow overwrite", param="overwrite"
        )
    if output == Path(source).absolute():
        raise InvalidRequestError(
            "the output must be a new folder, not the input package", hint="choose another output folder", param="output"
        )
    work_parent = Path(options.work_dir) if options.work_dir else None
    if work_parent is not None:
        work_parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="nanoedge-quantize-", dir=work_parent) as tmp:
        job = QuantizationJob(source_manifest, options, Path(tmp), notify)
        warn_cpu_scheme_for_npu(source_manifest, job.schemes)
        warn_fused_attention_for_npu(source_manifest, job.schemes)
        if all(s == "fp32" for s in job.schemes.values()):
            raise InvalidRequestError(
                "every component is set to fp32: nothing to quantize", hint="choose a scheme for at least one component", param="components"
            )
        took: dict[str, float] = {}
        mark = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal mark
            now = time.perf_counter()
            took[stage] = round(now - mark, 1)
            mark = now

        job.plan()
        lap("plan")
        job.record()
        lap("FP32 references")
        for name in COMPONENTS:
            if job.schemes[name] != "fp32":
                job.prepare(name)
        lap("preparing + ranges")

        job.announce("measuring the quantized package")
        manifest = job.candidate({}, None)
        report = job.evaluate(manifest)
        lap("first candidate")
        first = Candidate(manifest, report, job.gate.shortfalls(report), {})
        attempts = [attempt_record("all quantized", report, first.missed, sum(len(c.auto_float) for c in job.components.values()))]
        best, ranking = first, []
        if first.missed and options.mixed_precision and options.max_attempts > 0:
            log.info("gate missed (%s): looking for nodes to keep in float", "; ".join(first.missed))
            best, ranking = search(job, first, attempts)
            lap("mixed precision")
        job.announce("took: " + ", ".join(f"{k} {format_seconds(v)}" for k, v in took.items()))
        if best.missed:
            size = best.report["size"]
            raise QualityGateError(
                f"the quantized package missed the quality gate: {'; '.join(best.missed)} "
                f"(best of {len(attempts)} attempt(s), UNet at {size['unet_ratio']:.3f} of FP32 bytes); nothing was written",
                hint="try the weight-only or w8a16 scheme, a per-component choice (e.g. the VAE decoder weight-only), "
                "more calibration prompts, a larger size ratio, or lower gate figures if you accept the loss",
                attempts=attempts,
            )
        final = publish(best.manifest, output, best.report, attempts, ranking, time.perf_counter() - started, options.overwrite)
    return QuantizeResult(final, best.report, attempts, round(time.perf_counter() - started, 1))

"""The mixed-precision search: from a fully quantized candidate that missed the gate to the
smallest nested float set that passes, within the size budget.

Which components to work on: those whose output PSNR missed, and the UNet when the image
median or the responsiveness missed (the diagnosis in docs/quantization.md: the image loss
comes from the UNet). Each is ranked by :func:`.impact.rank_by_impact`; the steps come from
:func:`.mixed.nested_steps`. A candidate whose written component is over ``max_size_ratio``
of its FP32 bytes (the QDQ graph's own bytes count) is rejected and the search stops.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass
from typing import Any

from nanoedge.core.manifest import Manifest

from .job import QuantizationJob
from .mixed import admissible, merge_by_gain, nested_steps
from .report import component_bytes

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    manifest: Manifest
    report: dict[str, Any]
    missed: list[str]
    keep: dict[str, frozenset[str]]


def attempt_record(label: str, report: dict[str, Any], missed: list[str], float_nodes: int) -> dict[str, Any]:
    unet = report["components"].get("unet", {})
    return {
        "attempt": label,
        "float_nodes": float_nodes,
        "unet_psnr_db": unet.get("psnr_db"),
        "median_image_psnr_db": report["end_to_end"].get("median_image_psnr_db"),
        "image_psnr_db": report["end_to_end"]["image_psnr_db"],
        "responsiveness": report["responsiveness"]["ratio"],
        "unet_ratio": report["size"]["unet_ratio"],
        "passed": not missed,
        "shortfalls": missed,
    }


def score(candidate: Candidate) -> tuple[int, float]:
    """Order candidates when none passes: fewer missed figures, then the lowest component PSNR
    (the stable, teacher-forced figure) higher."""
    psnrs = [
        math.inf if c.get("identical") else (c.get("psnr_db") if c.get("psnr_db") is not None else -math.inf)
        for c in candidate.report["components"].values()
        if c.get("scheme", "fp32") != "fp32"
    ]
    return (-len(candidate.missed), min(psnrs) if psnrs else math.inf)


def components_to_rank(job: QuantizationJob, report: dict[str, Any]) -> list[str]:
    gate = job.gate
    names = []
    for name in job.components:
        figures = report["components"].get(name, {})
        value = math.inf if figures.get("identical") else figures.get("psnr_db")
        if value is None or value < gate.min_component_psnr:
            names.append(name)
    image_missed = any(s.startswith(("median image", "prompt responsiveness")) for s in gate.shortfalls(report))
    if image_missed and "unet" in job.components and "unet" not in names:
        names.append("unet")
    return names


def search(job: QuantizationJob, first: Candidate, attempts: list[dict[str, Any]]) -> tuple[Candidate, list]:
    """Try nested float sets until one passes; returns the best candidate and the ranking used."""
    auto = sum(len(c.auto_float) for c in job.components.values())
    ranking: list = []
    names = components_to_rank(job, first.report)
    budgets = {
        name: int(job.gate.max_size_ratio * component_bytes(job.source, name)) - component_bytes(first.manifest, name) for name in names
    }
    limit = 2 ** max(job.options.max_attempts - 1, 0)  # the largest nested step: 1, 2, 4, ... nodes
    grown = []
    for name in names:
        base_psnr, ranked = job.rank(name)
        log.info(
            "%s: fully quantized output PSNR %.2f dB on calibration calls; best single node +%.2f dB",
            name,
            base_psnr,
            ranked[0].gain_db if ranked else 0.0,
        )
        ranking += ranked
        grown.append(job.grow(name, admissible(ranked, budgets), limit))
    steps = nested_steps(merge_by_gain(grown), budgets, job.options.max_attempts)
    if not steps:
        log.info("no candidate node gains output PSNR within the size budget: mixed precision has nothing to try")
    best = first
    for index, step in enumerate(steps, 1):
        job.announce(f"mixed precision {index}/{len(steps)}: {step.node_count} nodes with the largest measured effect in float")
        manifest = job.candidate(step.keep_float, ranking)
        report = job.evaluate(manifest)
        missed = job.gate.shortfalls(report)
        over = [
            f"{name} at {component_bytes(manifest, name) / component_bytes(job.source, name):.3f} of FP32 bytes "
            f"> {job.gate.max_size_ratio:g}"
            for name in step.keep_float
            if component_bytes(manifest, name) > job.gate.max_size_ratio * component_bytes(job.source, name)
        ]
        candidate = Candidate(manifest, report, missed + over, step.keep_float)
        attempts.append(attempt_record(f"mixed {index}", report, candidate.missed, step.node_count + auto))
        if not candidate.missed or (not over and score(candidate) > score(best)):
            loser, best = best, candidate
        else:
            loser = candidate
        assert loser.manifest.root is not None
        shutil.rmtree(loser.manifest.root, ignore_errors=True)  # one candidate on disk at a time
        if not candidate.missed or over:
            break
    return best, ranking

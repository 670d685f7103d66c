"""The accuracy report of a quantized package, measured against its FP32 source.

Figures (all stored in the output manifest and printed as a table):

- per component: cosine and PSNR of the quantized component's outputs against the FP32
  outputs recorded on held-out prompts (same inputs for both);
- end to end: PSNR of the quantized package's images against the FP32 package's images for
  the same held-out prompts, seeds and settings (median over prompts, pooled, worst);
- prompt responsiveness: std(cond - uncond noise prediction) of the quantized UNet over
  FP32's on the same held-out CFG batches (plus the cosine between the two);
- sizes: package bytes and UNet bytes against FP32.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from nanoedge.core.manifest import COMPONENTS, Manifest

from .calibration import EVALUATION, CalibrationSettings, TrajectoryStore, record_trajectories, spread
from .metrics import Responsiveness, RunningError, image_psnr

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


def _finite(value: float) -> float | None:
    """JSON has no inf/nan: +inf PSNR (identical outputs) is stored as null with a flag."""
    return round(float(value), 6) if math.isfinite(value) else None


def component_bytes(manifest: Manifest, component: str) -> int:
    files = manifest.files
    return sum(
        int(files.get(rel, {}).get("bytes", 0)) for rel in manifest.component(component).get("files", []) if not rel.endswith(".json")
    )


def package_bytes(manifest: Manifest) -> int:
    return sum(int(f.get("bytes", 0)) for f in manifest.files.values())


def size_figures(quantized: Manifest, source: Manifest) -> dict[str, Any]:
    q_pkg, f_pkg = package_bytes(quantized), package_bytes(source)
    q_unet, f_unet = component_bytes(quantized, "unet"), component_bytes(source, "unet")
    figures: dict[str, Any] = {
        "package_bytes": q_pkg,
        "fp32_package_bytes": f_pkg,
        "package_ratio": round(q_pkg / f_pkg, 4) if f_pkg else None,
        "unet_bytes": q_unet,
        "fp32_unet_bytes": f_unet,
        "unet_ratio": round(q_unet / f_unet, 4) if f_unet else None,
        "components": {},
    }
    for name in COMPONENTS:
        q, f = component_bytes(quantized, name), component_bytes(source, name)
        figures["components"][name] = {"bytes": q, "fp32_bytes": f, "ratio": round(q / f, 4) if f else None}
    return figures


def component_figures(
    pipe, store: TrajectoryStore, component: str, max_calls: int, responsiveness: Responsiveness | None, progress: Progress | None = None
) -> dict[str, Any]:
    """Cosine/PSNR of one component on held-out calls (and responsiveness for the UNet)."""
    session = pipe.sessions[component]
    calls = store.calls(EVALUATION, component)
    # A static batch-1 package (the NPU form) runs CFG as two calls, uncond then cond:
    # keep those pairs together so the guidance signal can be measured.
    paired = responsiveness is not None and bool(calls) and store.inputs(calls[0])["sample"].shape[0] == 1
    groups = [calls[i : i + 2] for i in range(0, len(calls) - 1, 2)] if paired else [[c] for c in calls]
    groups = spread(groups, max(1, max_calls // 2) if paired else max_calls)
    running = RunningError()
    for index, group in enumerate(groups):
        reference = np.concatenate([store.output(c) for c in group])
        output = np.concatenate([session.run(None, store.inputs(c))[0] for c in group])
        running.add(reference, output)
        if responsiveness is not None:
            responsiveness.add(reference, output)
        if progress is not None:
            progress(index + 1, len(groups))
    return {
        "cosine": _finite(running.cosine()),
        "psnr_db": _finite(running.psnr()),
        "identical": running.err_sq == 0,
        "samples": running.calls,
    }


def end_to_end_figures(
    pipe, store: TrajectoryStore, prompts: Sequence[str], settings: CalibrationSettings, scratch: Path, progress: Progress | None = None
) -> dict[str, Any]:
    """Image PSNR of the quantized package against the FP32 images of the same prompts and seeds."""
    reference = store.images(EVALUATION)
    images_store = TrajectoryStore(scratch)
    record_trajectories(pipe, prompts, images_store, EVALUATION, settings, keep_images=True, progress=progress)
    produced = images_store.images(EVALUATION)
    per_prompt = [image_psnr(r, p) for r, p in zip(reference, produced)]
    pooled_mse = float(np.mean([np.mean((r.astype(np.float64) - p.astype(np.float64)) ** 2) for r, p in zip(reference, produced)]))
    pooled = math.inf if pooled_mse == 0 else 10 * math.log10(255.0**2 / pooled_mse)
    finite = [v for v in per_prompt if math.isfinite(v)]
    median = float(np.median(per_prompt)) if per_prompt else math.nan
    return {
        "image_psnr_db": _finite(pooled),
        "median_image_psnr_db": _finite(median) if finite or not per_prompt else None,
        "min_image_psnr_db": _finite(min(per_prompt)),
        "per_prompt_psnr_db": [_finite(v) for v in per_prompt],
        "identical": pooled_mse == 0,
        "prompts": len(per_prompt),
    }


def build_report(
    pipe,
    store: TrajectoryStore,
    quantized: Manifest,
    source: Manifest,
    schemes: dict[str, str],
    eval_prompts: Sequence[str],
    settings: CalibrationSettings,
    scratch: Path,
    max_calls: int,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Every figure of the report for one candidate package (``pipe`` is loaded from it)."""

    def stage(label: str) -> Progress | None:
        return (lambda done, total: progress(label, done, total)) if progress else None

    components: dict[str, Any] = {}
    responsiveness = Responsiveness()
    for name in COMPONENTS:
        figures = component_figures(pipe, store, name, max_calls, responsiveness if name == "unet" else None, stage(f"checking {name}"))
        components[name] = {"scheme": schemes.get(name, "fp32"), **figures}
    ratio = responsiveness.ratio()
    return {
        "components": components,
        "end_to_end": end_to_end_figures(pipe, store, eval_prompts, settings, scratch, stage("comparing images")),
        "responsiveness": {
            "ratio": _finite(ratio),
            "quantized_std": _finite(responsiveness.quantized_std),
            "fp32_std": _finite(responsiveness.fp32_std),
            "direction_cosine": _finite(responsiveness.cosine()),
            "samples": responsiveness.reference.calls,
        },
        "size": size_figures(quantized, source),
        "settings": {**settings.as_dict(), "held_out_prompts": len(eval_prompts)},
    }

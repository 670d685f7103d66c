"""``quantize_package``: an FP32 package in, a quantized package with its accuracy report out.

Stages: record real trajectories with the FP32 package (calibration prompts, and held-out
prompts whose outputs and images are the reference) -> copy and pre-process each component
-> stream activation ranges (static schemes) -> quantize -> assemble a candidate package ->
measure the report -> quality gate. When the gate is missed: rank nodes by sensitivity and
keep the most sensitive in float, step by step within the size budget, until a candidate
passes. Only a passing package is moved into place (atomically); otherwise nothing is
written and :class:`GateMissed` says which figures fell short.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from nanoedge import __version__
from nanoedge.core.atomic import staged_directory
from nanoedge.core.errors import InvalidRequestError, NanoedgeError, PackageError, require
from nanoedge.core.limits import DEFAULT_GUIDANCE, DEFAULT_STEPS, MAX_STEPS
from nanoedge.core.manifest import COMPONENTS, Manifest

from .calibration import CALIBRATION, EVALUATION, CalibrationSettings, TrajectoryStore, record_trajectories, spread
from .gate import QualityGate
from .mixed import DEFAULT_FRACTIONS, plan_steps
from .prompts import load_prompts, split_prompts
from .recipes import COMPONENT_SCHEMES, SCHEMES, Recipe, recipe_for

log = logging.getLogger(__name__)

# progress(stage, done, total); total == 0 announces a stage that has no count.
ProgressCallback = Callable[[str, int, int], None]


@dataclass
class QuantizeOptions:
    """Everything ``nanoedge quantize`` can be asked; ``None`` takes the package default."""

    scheme: str = "int8"
    components: dict[str, str] = field(default_factory=dict)
    prompts_file: "str | Path | None" = None
    calibration_prompts: int = 16
    eval_prompts: int = 4
    size: str | None = None
    steps: int | None = None
    guidance: float | None = None
    scheduler: str | None = None
    seed: int = 0
    weight_type: str = "auto"
    min_psnr: float = 30.0
    min_responsiveness: float = 0.85
    max_size_ratio: float = 0.35
    mixed_precision: bool = True
    max_attempts: int = len(DEFAULT_FRACTIONS)
    sensitivity_samples: int = 4
    report_samples: int = 16
    overwrite: bool = False
    threads: int | None = None
    work_dir: "str | Path | None" = None
    calibration_dir: "str | Path | None" = None


@dataclass
class QuantizeResult:
    manifest: Manifest
    report: dict[str, Any]
    attempts: list[dict[str, Any]]
    seconds: float


class GateMissed(NanoedgeError):
    """The best candidate still missed the gate; carries the measured attempts."""

    exit_code = 6

    def __init__(self, message: str, hint: str, attempts: list[dict[str, Any]]) -> None:
        super().__init__(message, hint)
        self.attempts = attempts


@dataclass
class _Component:
    name: str
    recipe: Recipe
    pre_model: Path
    external: bool
    nodes: list
    ranges: dict | None = None
    ranges_file: Path | None = None
    auto_float: dict[str, str] = field(default_factory=dict)


def resolve_schemes(scheme: str, overrides: dict[str, str | None]) -> dict[str, str]:
    """Scheme per component: ``scheme`` for all, unless a component names its own."""
    if scheme not in SCHEMES:
        raise InvalidRequestError(f"unknown scheme '{scheme}'", hint=f"use one of: {', '.join(SCHEMES)}")
    result = {name: scheme for name in COMPONENTS}
    for name, choice in overrides.items():
        if choice is None:
            continue
        if name not in COMPONENTS:
            raise InvalidRequestError(f"unknown component '{name}'", hint=f"components: {', '.join(COMPONENTS)}")
        if choice not in COMPONENT_SCHEMES:
            raise InvalidRequestError(f"unknown scheme '{choice}' for {name}", hint=f"use one of: {', '.join(COMPONENT_SCHEMES)}")
        result[name] = choice
    return result


def _warn_cpu_scheme_for_npu(manifest: Manifest, schemes: dict[str, str]) -> None:
    """A package exported for the HTP wants every operator quantized: ``int8`` (the CPU recipe,
    float norms and softmax) and ``dynamic`` would leave nodes the HTP hands back to the CPU."""
    targets = {(c.get("rewrites") or {}).get("target") for c in manifest.components.values()}
    cpu_only = sorted({s for s in schemes.values() if s in ("int8", "dynamic", "weight-only")})
    if "qnn" in targets and cpu_only:
        log.warning(
            "this package was exported for qnn; %s is a CPU recipe whose float operators the HTP will not take: "
            "use --scheme w8a8 (INT8 for NPUs) or w8a16", "/".join(cpu_only),
        )


def _warn_fused_attention_for_npu(manifest: Manifest, schemes: dict[str, str]) -> None:
    """w8a16/w8a8 are the HTP recipes, but a package with fused attention (a CPU/GPU export)
    carries ``com.microsoft.MultiHeadAttention``, which NPU providers do not take."""
    npu = sorted({s for s in schemes.values() if s in ("w8a16", "w8a8")})
    fused = sorted(name for name, c in manifest.components.items() if c.get("fused_attention"))
    if npu and fused:
        log.warning(
            "%s is an NPU recipe, but this package's %s has fused attention (MultiHeadAttention, CPU/GPU only): "
            "for the HTP, export with --target qnn --static-shape WxH (or --no-fuse-attention) and quantize that",
            "/".join(npu), "/".join(fused),
        )


def _check_source(manifest: Manifest) -> None:
    quantized = {n: c.get("precision") for n, c in manifest.components.items() if c.get("precision") != "fp32"}
    if quantized or manifest.quantization:
        raise InvalidRequestError(
            f"'{manifest.root}' is already quantized ({', '.join(f'{k}: {v}' for k, v in quantized.items()) or 'see nanoedge info'})",
            hint="quantize the FP32 package it came from (nanoedge export writes one)",
        )
    missing = [n for n in COMPONENTS if n not in manifest.components]
    if missing:
        raise PackageError(f"package has no {', '.join(missing)}", hint="re-export the package with `nanoedge export`")


def _settings(manifest: Manifest, options: QuantizeOptions) -> CalibrationSettings:
    defaults = manifest.defaults
    run_size, _ = manifest.size_rules().resolve(options.size or defaults.get("size"))
    steps = int(options.steps if options.steps is not None else defaults.get("steps", DEFAULT_STEPS))
    if not 1 <= steps <= MAX_STEPS:
        raise InvalidRequestError(f"--steps must be between 1 and {MAX_STEPS}, got {steps}")
    guidance = float(options.guidance if options.guidance is not None else defaults.get("guidance", DEFAULT_GUIDANCE))
    if guidance <= 1.0:
        raise InvalidRequestError(
            f"calibration needs classifier-free guidance (guidance > 1), got {guidance:g}",
            hint=f"prompt responsiveness compares cond and uncond predictions; use --guidance {DEFAULT_GUIDANCE:g}",
        )
    return CalibrationSettings(size=str(run_size), steps=steps, guidance=guidance, scheduler=options.scheduler, seed=options.seed)


class _Quantizer:
    """One quantization run: holds the work folder, the trajectories and the built variants."""

    def __init__(self, source: Manifest, options: QuantizeOptions, work: Path, progress: ProgressCallback) -> None:
        self.source = source
        self.options = options
        self.work = work
        self.progress = progress
        self.schemes = resolve_schemes(options.scheme, options.components)
        self.gate = QualityGate(options.min_psnr, options.min_responsiveness, options.max_size_ratio)
        prompts = load_prompts(options.prompts_file)
        self.calibration_prompts, self.eval_prompts = split_prompts(prompts, options.calibration_prompts, options.eval_prompts)
        self.settings = _settings(source, options)
        self.recipes = {name: recipe_for(s, options.weight_type) for name, s in self.schemes.items()}
        self.components: dict[str, _Component] = {}
        self.store: TrajectoryStore | None = None
        self._built: dict[tuple[str, frozenset[str]], Path] = {}
        self._candidates = 0

    def stage(self, label: str) -> Callable[[int, int], None]:
        return lambda done, total: self.progress(label, done, total)

    def announce(self, label: str) -> None:
        log.info("%s", label)
        self.progress(label, 0, 0)

    # -- calibration -------------------------------------------------------------------------
    def _store_meta(self) -> dict[str, Any]:
        return {
            "format": "nanoedge-trajectories-1",
            "source_files_sha256": self._source_digest(),  # models, tokenizer, scheduler: all of it
            "settings": self.settings.as_dict(),
            "calibration_prompts": self.calibration_prompts,
            "eval_prompts": self.eval_prompts,
        }

    def record(self) -> TrajectoryStore:
        from nanoedge.runtime import Pipeline

        meta = self._store_meta()
        root = Path(self.options.calibration_dir) if self.options.calibration_dir else self.work / "trajectories"
        if root.exists() and any(root.iterdir()):
            marker = root / "meta.json"
            if not marker.is_file():
                raise InvalidRequestError(
                    f"--calibration-dir '{root}' is not empty and holds no nanoedge trajectories", hint="give an empty or new folder"
                )
            if json.loads(marker.read_text()) == meta:
                log.info("reusing recorded trajectories in %s", root)
                self.store = TrajectoryStore(root)
                return self.store
            log.info("trajectories in %s were recorded for other settings: recording again", root)
            shutil.rmtree(root)
        store = TrajectoryStore(root)
        pipe = Pipeline.load(self.source.root, threads=self.options.threads)
        try:
            record_trajectories(
                pipe, self.calibration_prompts, store, CALIBRATION, self.settings, progress=self.stage("recording calibration trajectories")
            )
            record_trajectories(
                pipe,
                self.eval_prompts,
                store,
                EVALUATION,
                self.settings,
                keep_outputs=True,
                keep_images=True,
                progress=self.stage("recording FP32 references"),
            )
        finally:
            del pipe
            gc.collect()
        store.write_meta(meta)  # written last: an interrupted recording is never reused
        self.store = store
        return store

    # -- per component -----------------------------------------------------------------------
    def prepare(self, name: str) -> _Component:
        from .graphs import copy_component, load_model, preprocess, quantizable_nodes
        from .package import component_is_external
        from .ranges import collect_ranges, unrepresentable, write_calibration_cache

        recipe = self.recipes[name]
        folder = self.work / name
        self.announce(f"pre-processing {name}")
        copy = copy_component(self.source, name, folder / "fp32")
        pre = preprocess(copy, folder / "pre" / "model.onnx", qnn=recipe.qnn_compatible)
        shutil.rmtree(folder / "fp32")
        nodes = quantizable_nodes(load_model(pre, weights=False), recipe)
        component = _Component(name, recipe, pre, component_is_external(self.source, name), nodes)
        if recipe.needs_ranges:
            assert self.store is not None
            tensors = [t for n in nodes for t in n.tensors]
            calls = self.store.calls(CALIBRATION, name)
            component.ranges = collect_ranges(
                pre,
                tensors,
                self.store.iter_inputs(CALIBRATION, name, calls),
                len(calls),
                self.options.threads,
                self.stage(f"calibrating {name} ranges"),
            )
            component.ranges_file = write_calibration_cache(component.ranges, folder / "ranges.json")
            bad = unrepresentable(component.ranges)
            for node in nodes:
                if bad.intersection(node.tensors):
                    component.auto_float[node.name] = "range"
            if component.auto_float:
                log.info("%s: %d nodes read or write tensors no integer grid can hold (masks): kept float", name, len(component.auto_float))
        log.info("%s: %d nodes to quantize with %s", name, len(nodes), recipe.scheme)
        self.components[name] = component
        return component

    def built(self, name: str, keep: frozenset[str]) -> Path:
        """Folder with the quantized component for one float-kept set (cached)."""
        from .package import write_component
        from .recipes import quantize_model

        component = self.components[name]
        keep = frozenset(keep) | frozenset(component.auto_float)
        key = (name, keep)
        if key in self._built:
            return self._built[key]
        index = sum(1 for k in self._built if k[0] == name)
        self.announce(f"quantizing {name} ({component.recipe.scheme}, {len(keep)} nodes float)")
        scratch = component.pre_model.parent / f"q{index}.onnx"
        selected = [n.name for n in component.nodes if n.name not in keep]
        quantize_model(component.recipe, component.pre_model, scratch, component.ranges_file, selected, sorted(keep))
        folder = self.work / name / f"built-{index}"
        write_component(scratch, folder, component.external)
        for leftover in component.pre_model.parent.glob(f"q{index}.onnx*"):
            leftover.unlink()
        self._built[key] = folder
        return folder

    # -- candidates --------------------------------------------------------------------------
    def quantization_section(self, keep: dict[str, frozenset[str]], ranking: list | None) -> dict[str, Any]:
        import onnx
        import onnxruntime

        nmse = {(r.component, r.node): r.nmse for r in ranking or []}
        components = {}
        for name in COMPONENTS:
            scheme = self.schemes[name]
            entry: dict[str, Any] = {"scheme": scheme, "recipe": self.recipes[name].as_dict()}
            if name in self.components:
                c = self.components[name]
                floats = [{"node": n, "reason": r} for n, r in sorted(c.auto_float.items())]
                floats += [
                    {"node": n, "reason": "sensitivity", "nmse": nmse.get((name, n))}
                    for n in sorted(keep.get(name, frozenset()) - set(c.auto_float))
                ]
                entry.update({"quantizable_nodes": len(c.nodes), "float_nodes": floats})
            components[name] = entry
        return {
            "scheme": self.options.scheme,
            "components": components,
            "calibration": {
                "prompts": len(self.calibration_prompts),
                "held_out_prompts": len(self.eval_prompts),
                "prompts_file": str(self.options.prompts_file) if self.options.prompts_file else "default",
                "settings": self.settings.as_dict(),
                "method": "streaming min/max over recorded FP32 trajectories",
                "calls": {name: len(self.store.calls(CALIBRATION, name)) for name in COMPONENTS} if self.store else {},
            },
            "gate": self.gate.as_dict(),
            "source": {"id": self.source.id, "path": str(self.source.root), "files_sha256": self._source_digest()},
            "tools": {"nanoedge": __version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
            "quantized_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    def _source_digest(self) -> str:
        digest = hashlib.sha256()
        for rel, info in sorted(self.source.files.items()):
            digest.update(f"{rel}:{info.get('sha256')}\n".encode())
        return digest.hexdigest()

    def candidate(self, keep: dict[str, frozenset[str]], ranking: list | None) -> Manifest:
        from .package import assemble

        folders = {name: self.built(name, keep.get(name, frozenset())) for name in self.components}
        self._candidates += 1
        root = self.work / "candidates" / f"c{self._candidates}"
        precisions = {name: self.schemes[name] for name in self.components}
        return assemble(self.source, root, folders, self.quantization_section(keep, ranking), precisions)

    def evaluate(self, candidate: Manifest) -> dict[str, Any]:
        from nanoedge.runtime import Pipeline

        from .report import build_report

        assert self.store is not None and candidate.root is not None
        pipe = Pipeline.load(candidate.root, verify=False, threads=self.options.threads)
        try:
            return build_report(
                pipe, self.store, candidate, self.source, self.schemes, self.eval_prompts, self.settings,
                self.work / "scratch-images" / candidate.root.name, self.options.report_samples, self.progress,
            )
        finally:
            del pipe
            gc.collect()

    def rank(self) -> list:
        from .sensitivity import rank_nodes

        assert self.store is not None
        ranking = []
        for name, component in self.components.items():
            calls = spread(self.store.calls(CALIBRATION, name), self.options.sensitivity_samples)
            nodes = [n for n in component.nodes if n.name not in component.auto_float]
            ranking += rank_nodes(
                name, component.pre_model, nodes, component.recipe, component.ranges,
                self.store.iter_inputs(CALIBRATION, name, calls), len(calls), self.options.threads, self.stage(f"ranking {name} nodes"),
            )
        ranking.sort(key=lambda r: r.nmse, reverse=True)
        return ranking

    def budgets(self, base: Manifest) -> dict[str, int]:
        from .report import component_bytes

        return {
            name: int(self.gate.max_size_ratio * component_bytes(self.source, name)) - component_bytes(base, name)
            for name in self.components
        }


def _attempt_record(label: str, report: dict[str, Any], missed: list[str], float_nodes: int) -> dict[str, Any]:
    return {
        "attempt": label,
        "float_nodes": float_nodes,
        "image_psnr_db": report["end_to_end"]["image_psnr_db"],
        "responsiveness": report["responsiveness"]["ratio"],
        "unet_ratio": report["size"]["unet_ratio"],
        "passed": not missed,
        "shortfalls": missed,
    }


def quantize_package(
    source: "str | Path", output: "str | Path", options: QuantizeOptions | None = None, progress: ProgressCallback | None = None
) -> QuantizeResult:
    """Quantize the FP32 package ``source`` into a new package ``output``.

    Raises :class:`GateMissed` (exit code 6) when no candidate reaches the gate; in that case
    nothing is written. The input package is only read.
    """
    options = options or QuantizeOptions()
    notify: ProgressCallback = progress or (lambda stage, done, total: None)
    started = time.perf_counter()
    require("onnx", "quantize")
    source_manifest = Manifest.load(source)
    _check_source(source_manifest)
    output = Path(output).absolute()
    if output.exists() and not options.overwrite:
        raise InvalidRequestError(f"output '{output}' already exists", hint="choose another -o path, or pass --overwrite to replace it")
    if output == Path(source).absolute():
        raise InvalidRequestError("the output must be a new folder, not the input package", hint="choose another -o path")
    if options.max_attempts < 0:
        raise InvalidRequestError("--max-attempts must be >= 0")
    if options.report_samples < 1 or options.sensitivity_samples < 1:
        raise InvalidRequestError("--report-samples and --sensitivity-samples must be >= 1")
    work_parent = Path(options.work_dir) if options.work_dir else None
    if work_parent is not None:
        work_parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="nanoedge-quantize-", dir=work_parent) as tmp:
        job = _Quantizer(source_manifest, options, Path(tmp), notify)
        _warn_cpu_scheme_for_npu(source_manifest, job.schemes)
        _warn_fused_attention_for_npu(source_manifest, job.schemes)
        if all(s == "fp32" for s in job.schemes.values()):
            raise InvalidRequestError(
                "every component is set to fp32: nothing to quantize", hint="choose a scheme for at least one component"
            )
        job.record()
        for name in COMPONENTS:
            if job.schemes[name] != "fp32":
                job.prepare(name)

        keep: dict[str, frozenset[str]] = {}
        ranking: list | None = None
        job.announce("measuring the quantized package")
        candidate = job.candidate(keep, ranking)
        report = job.evaluate(candidate)
        missed = job.gate.shortfalls(report)
        attempts = [_attempt_record("all quantized", report, missed, sum(len(c.auto_float) for c in job.components.values()))]
        best = (candidate, report, missed, keep)
        if missed and options.mixed_precision and options.max_attempts > 0:
            log.info("gate missed (%s): looking for nodes to keep in float", "; ".join(missed))
            ranking = job.rank()
            steps = plan_steps(ranking, job.budgets(candidate), DEFAULT_FRACTIONS)[: options.max_attempts]
            if not steps:
                log.info("no node fits the size budget: mixed precision has nothing to try")
            for index, step in enumerate(steps, 1):
                job.announce(f"mixed precision {index}/{len(steps)}: {step.node_count} most sensitive nodes in float")
                candidate = job.candidate(step.keep_float, ranking)
                report = job.evaluate(candidate)
                missed = job.gate.shortfalls(report)
                floats = step.node_count + sum(len(c.auto_float) for c in job.components.values())
                attempts.append(_attempt_record(f"mixed {index}", report, missed, floats))
                if not missed or _score(report) >= _score(best[1]):
                    loser, best = best[0], (candidate, report, missed, step.keep_float)
                else:
                    loser = candidate
                assert loser.root is not None
                shutil.rmtree(loser.root, ignore_errors=True)  # one candidate on disk at a time
                if not missed:
                    break
        candidate, report, missed, keep = best
        if missed:
            size = report["size"]
            raise GateMissed(
                f"the quantized package missed the quality gate: {'; '.join(missed)} "
                f"(best of {len(attempts)} attempt(s), UNet at {size['unet_ratio']:.3f} of FP32 bytes); nothing was written",
                hint="try --scheme weight-only or w8a16, a per-component choice such as --vae-decoder weight-only, "
                "more --calibration-prompts, a larger --max-size-ratio, or lower --min-psnr / --min-responsiveness if you accept the loss",
                attempts=attempts,
            )
        assert candidate.root is not None
        candidate.update_quantization(report=report, attempts=attempts, seconds=round(time.perf_counter() - started, 1))
        if ranking:
            candidate.update_quantization(
                sensitivity={"metric": "local NMSE of each node quantized alone", "top": [r.as_dict() for r in ranking[:20]]}
            )
        candidate.write(candidate.root)
        with staged_directory(output, overwrite=options.overwrite) as stage:
            for entry in candidate.root.iterdir():
                shutil.move(str(entry), str(stage / entry.name))
        final = Manifest.load(output)
    return QuantizeResult(final, report, attempts, round(time.perf_counter() - started, 1))


def _score(report: dict[str, Any]) -> float:
    """Order candidates when none passes: higher image PSNR, responsiveness as a tie-breaker."""
    psnr = report["end_to_end"]["image_psnr_db"]
    psnr = math.inf if report["end_to_end"].get("identical") else (psnr if psnr is not None else -math.inf)
    return psnr + (report["responsiveness"]["ratio"] or 0.0) * 1e-3

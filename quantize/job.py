"""One quantization run's state and stages: trajectories, per-component preparation, builds,
candidate packages and their reports. The order of the stages is :mod:`.api`'s; which float
sets to try is :mod:`.search`'s.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from nanoedge import __version__
from nanoedge.core.errors import InvalidRequestError
from nanoedge.core.manifest import COMPONENTS, Manifest

from .calibration import CALIBRATION, EVALUATION, CalibrationSettings, TrajectoryStore, record_trajectories, spread
from .checks import calibration_settings, resolve_schemes
from .options import ProgressCallback, QuantizeOptions
from .plan import DEFAULT_CALIBRATION_PROMPTS, Plan, RunShape
from .prompts import load_prompts, split_prompts
from .recipes import Recipe, recipe_for

log = logging.getLogger(__name__)


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
    rewritten: dict[str, list[str]] = field(default_factory=dict)


def _ranges_key(recipe: Recipe, tensors: list[str]) -> str:
    """What activation ranges depend on beyond the FP32 calls of their store: the recipe (its
    rewrites name the tensors), the tensors themselves, and the tools that pre-processed the graph."""
    import onnxruntime

    text = json.dumps([recipe.as_dict(), tensors, onnxruntime.__version__, __version__], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class QuantizationJob:
    """One quantization run: holds the work folder, the trajectories and the built variants."""

    def __init__(self, source: Manifest, options: QuantizeOptions, work: Path, progress: ProgressCallback) -> None:
        self.source = source
        self.options = options
        self.work = work
        self.progress = progress
        self.schemes = resolve_schemes(options.scheme, options.components)
        self.gate = options.gate()
        self.prompts = load_prompts(options.prompts_file)
        # What the FP32 work is made of: set by plan() (the package defaults and options until then).
        self.settings = calibration_settings(source, options)
        calibration = options.calibration_prompts or DEFAULT_CALIBRATION_PROMPTS
        self.calibration_prompts, self.eval_prompts = split_prompts(self.prompts, calibration, options.eval_prompts)
        self.run_plan: Plan | None = None
        self._fp32_pipe: Any = None
        self.recipes = {name: recipe_for(s, options.weight_type) for name, s in self.schemes.items()}
        self.components: dict[str, _Component] = {}
        self.store: TrajectoryStore | None = None
        self._built: dict[tuple[str, frozenset[str]], Path] = {}
        self._ranking_cache: dict[str, tuple[list, list]] = {}
        self.base_qdq: dict[str, Path] = {}  # the fully quantized graph, original names (for ranking)
        self._candidates = 0

    def stage(self, label: str) -> Callable[[int, int], None]:
        return lambda done, total: self.progress(label, done, total)

    def announce(self, label: str) -> None:
        log.info("%s", label)
        self.progress(label, 0, 0)

    # -- plan and FP32 references ------------------------------------------------------------
    def _store_meta(self, settings: CalibrationSettings | None = None, shape: RunShape | None = None) -> dict[str, Any]:
        """What a trajectory store was recorded for; a store is reused only if this matches exactly."""
        settings = settings or self.settings
        if shape is None:
            calibration, held_out = self.calibration_prompts, self.eval_prompts
        else:
            calibration, held_out = split_prompts(self.prompts, shape.calibration_prompts, shape.eval_prompts)
        return {
            "format": "nanoedge-trajectories-1",
            "source_files_sha256": self._source_digest(),  # models, tokenizer, scheduler: all of it
            "settings": settings.as_dict(),
            "calibration_prompts": calibration,
            "eval_prompts": held_out,
        }

    def _reference_root(self, meta: dict[str, Any]) -> Path:
        """Where the store for ``meta`` lives: ``--calibration-dir``, else the cache (:mod:`.refcache`)."""
        from .refcache import reference_folder

        if self.options.calibration_dir:
            return Path(self.options.calibration_dir)
        return reference_folder(self._source_digest(), meta)

    def _pipe(self):
        """The FP32 package loaded once for the cost probe and the recording."""
        from nanoedge.runtime import Pipeline

        if self._fp32_pipe is None:
            self._fp32_pipe = Pipeline.load(self.source.root, threads=self.options.threads)
        return self._fp32_pipe

    def release_fp32(self) -> None:
        self._fp32_pipe = None
        gc.collect()

    def plan(self) -> Plan:
        """Size the FP32 work from the measured cost of one call so the run fits the time budget."""
        from .costs import CostCache, measure_call_costs
        from .plan import CallCosts, choose_plan
        from .refcache import matches, package_folder
        from .report import component_bytes

        options, asked_settings = self.options, self.settings
        asked = RunShape(asked_settings.size, asked_settings.steps, len(self.calibration_prompts), len(self.eval_prompts))
        given = {"size": options.size, "steps": options.steps, "calibration_prompts": options.calibration_prompts}
        fixed = [name for name, value in given.items() if value is not None]
        costs = CostCache(package_folder(self._source_digest()), options.threads)

        def measure(size: str) -> CallCosts:
            self.announce(f"measuring FP32 calls at {size} (once per package)")
            measured = measure_call_costs(self._pipe(), size, asked_settings.guidance, asked_settings.scheduler)
            costs.put(measured)
            return measured

        def settings_of(shape: RunShape) -> CalibrationSettings:
            return replace(asked_settings, size=shape.size, steps=shape.steps)

        def cached(shape: RunShape) -> bool:
            meta = self._store_meta(settings_of(shape), shape)
            return matches(self._reference_root(meta), meta)

        fp32_bytes = sum(component_bytes(self.source, name) for name, scheme in self.schemes.items() if scheme != "fp32")
        rules, gb = self.source.size_rules(), fp32_bytes / 1e9
        plan = choose_plan(asked, fixed, rules, costs.get, measure, cached, options.time_budget_s, options.report_samples, gb)
        self.settings = settings_of(plan.shape)
        self.calibration_prompts, self.eval_prompts = split_prompts(self.prompts, plan.shape.calibration_prompts, plan.shape.eval_prompts)
        self.run_plan = plan
        for line in plan.describe():
            self.announce(line)
        return plan

    def record(self) -> TrajectoryStore:
        """The FP32 references for the plan: reused when recorded before for exactly this, else recorded."""
        from .refcache import matches, publish, staging_folder

        meta = self._store_meta()
        root = self._reference_root(meta)
        if matches(root, meta):
            log.info("reusing recorded FP32 references in %s", root)
            os.utime(root)  # the cache keeps the most recently used stores
            self.release_fp32()
            self.store = TrajectoryStore(root)
            return self.store
        if self.options.calibration_dir:
            if root.exists() and any(root.iterdir()):
                if not (root / "meta.json").is_file():
                    raise InvalidRequestError(
                        f"--calibration-dir '{root}' is not empty and holds no nanoedge trajectories", hint="give an empty or new folder"
                    )
                log.info("trajectories in %s were recorded for other settings: recording again", root)
                shutil.rmtree(root)
            target = root
        else:
            target = staging_folder(root)
        store = TrajectoryStore(target)
        pipe = self._pipe()
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
            self.release_fp32()
        store.write_meta(meta)  # written last: an interrupted recording is never reused
        if target != root:
            store = TrajectoryStore(publish(target, root))
        self.store = store
        return store

    # -- per component -----------------------------------------------------------------------
    def prepare(self, name: str) -> _Component:
        from .graphs import copy_component, load_model, preprocess, quantizable_nodes
        from .package import component_is_external
        from .ranges import collect_ranges, load_ranges, save_ranges, unrepresentable, write_calibration_cache

        recipe = self.recipes[name]
        folder = self.work / name
        self.announce(f"pre-processing {name}")
        copy = copy_component(self.source, name, folder / "fp32")
        pre = preprocess(copy, folder / "pre" / "model.onnx", qnn=recipe.qnn_compatible)
        shutil.rmtree(folder / "fp32")
        rewritten: dict[str, list[str]] = {}
        if recipe.rewrites:
            from .rewrites import apply_rewrites

            rewritten = {k: v for k, v in apply_rewrites(pre, recipe.rewrites).items() if v}
        nodes = quantizable_nodes(load_model(pre, weights=False), recipe)
        component = _Component(name, recipe, pre, component_is_external(self.source, name), nodes, rewritten=rewritten)
        if recipe.needs_ranges:
            assert self.store is not None
            tensors = [t for n in nodes for t in n.tensors]
            calls = self.store.calls(CALIBRATION, name)
            saved = self.store.root / "ranges" / f"{name}-{_ranges_key(recipe, tensors)}.json"
            component.ranges = load_ranges(saved)
            if component.ranges is None:
                component.ranges = collect_ranges(
                    pre,
                    tensors,
                    self.store.iter_inputs(CALIBRATION, name, calls),
                    len(calls),
                    self.options.threads,
                    self.stage(f"calibrating {name} ranges"),
                )
                save_ranges(component.ranges, saved)
            else:
                log.info("%s: reusing activation ranges from %s", name, saved)
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
        from .qdq import quantize_model

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
        write_component(scratch, folder, component.external, short_names=not component.recipe.qnn_compatible)
        if index == 0:
            self.base_qdq[name] = scratch  # kept: ranking edits this graph by its node names
        else:
            for leftover in component.pre_model.parent.glob(f"q{index}.onnx*"):
                leftover.unlink()
        self._built[key] = folder
        return folder

    # -- candidates --------------------------------------------------------------------------
    def quantization_section(self, keep: dict[str, frozenset[str]], ranking: list | None) -> dict[str, Any]:
        import onnx
        import onnxruntime

        gains = {(r.component, r.node): r.gain_db for r in ranking or []}
        components = {}
        for name in COMPONENTS:
            scheme = self.schemes[name]
            entry: dict[str, Any] = {"scheme": scheme, "recipe": self.recipes[name].as_dict()}
            if name in self.components:
                c = self.components[name]
                floats = [{"node": n, "reason": r} for n, r in sorted(c.auto_float.items())]
                floats += [
                    {"node": n, "reason": "sensitivity", "gain_db": gains.get((name, n))}
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
                "plan": self.run_plan.as_dict() if self.run_plan else None,
                "rewrites": {name: c.rewritten for name, c in self.components.items() if c.rewritten},
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
                pipe,
                self.store,
                candidate,
                self.source,
                self.schemes,
                self.eval_prompts,
                self.settings,
                self.work / "scratch-images" / candidate.root.name,
                self.options.report_samples,
                self.progress,
            )
        finally:
            del pipe
            gc.collect()

    def _ranking_data(self, name: str) -> tuple[list, list]:
        """Calibration calls for ranking and the FP32 component's outputs on them (cached)."""
        from .impact import reference_outputs

        if name not in self._ranking_cache:
            assert self.store is not None
            calls = spread(self.store.calls(CALIBRATION, name), self.options.sensitivity_samples)
            samples = [self.store.inputs(c) for c in calls]
            self._ranking_cache[name] = (samples, reference_outputs(self.components[name].pre_model, samples, self.options.threads))
        return self._ranking_cache[name]

    def rank(self, name: str) -> tuple[float, list]:
        """Candidates of one component ranked by their measured effect on its output (teacher-forced)."""
        from .impact import rank_by_impact

        component = self.components[name]
        samples, references = self._ranking_data(name)
        nodes = [n for n in component.nodes if n.name not in component.auto_float]
        return rank_by_impact(
            name,
            self.base_qdq[name],
            nodes,
            samples,
            references,
            self.options.threads,
            self.stage(f"ranking {name} nodes by their effect on its output"),
        )

    def grow(self, name: str, ordered: list, limit: int) -> list:
        """The nested float list of one component: each added node verified not to lower its output PSNR."""
        from .impact import grow_nested

        samples, references = self._ranking_data(name)
        return grow_nested(
            self.base_qdq[name],
            ordered,
            samples,
            references,
            limit,
            self.options.threads,
            self.stage(f"verifying {name}'s nested float sets"),
        )

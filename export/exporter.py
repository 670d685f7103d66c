"""``nanoedge export``: a checkpoint in, a verified ONNX package out.

Stages: load the source -> export text encoder, UNet and VAE decoder -> check each against
PyTorch -> write tokenizer, scheduler and configs -> hash every file into ``nanoedge.json``.
Everything is written into a staging folder that is renamed into place only at the end.
"""

from __future__ import annotations

import gc
import json
import logging
import platform
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from nanoedge import __version__
from nanoedge.core.atomic import staged_directory
from nanoedge.core.errors import ExportError, InvalidRequestError, require
from nanoedge.core.limits import DEFAULT_GUIDANCE, DEFAULT_STEPS
from nanoedge.core.manifest import Manifest
from nanoedge.core.sizes import Size, parse_size
from nanoedge.runtime.schedulers import name_for_config as scheduler_name_for_config

log = logging.getLogger(__name__)

StageCallback = Callable[[str, dict[str, Any]], None]


@dataclass
class ExportOptions:
    static_shape: Size | None = None
    batch: int = 1
    opset: int = 17
    exporter: str = "torchscript"
    tolerance: float = 1e-3
    seed: int = 0
    overwrite: bool = False
    model_id: str | None = None
    # Sizes served by resizing the native image (models trained below what clients ask for).
    output_sizes: tuple[Size, ...] = ()
    # Package defaults that override the source's (tuned per model, e.g. the demo model).
    default_steps: int | None = None
    default_guidance: float | None = None
    target: str | None = None  # apply that target's graph rewrites (e.g. "qnn": needs static shapes)
    # Fuse attention into com.microsoft.MultiHeadAttention (CPU/CUDA); never for NPU targets
    fuse_attention: bool = True
    # Export this decoder in place of the model's VAE decoder: preset:taesd, a folder or a hub id
    # (AutoencoderTiny, i.e. TAESD, decodes 512 px many times faster than the KL decoder).
    vae_decoder: str | None = None


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclass(frozen=True)
class ExportPlan:
    """What an export will do, decided before any tracing (and checked: bad options fail here).

    ``checks_at`` are the (batch, latent height, latent width) shapes each component is verified
    at; the first is the one traced. ``fuse`` says whether attention is fused (never for an NPU).
    """

    factor: int
    multiple: int
    native: int
    static: Size | None
    checks_at: tuple[tuple[int, int, int], ...]
    fuse: bool
    target_profile: Any = None  # nanoedge.targets.TargetProfile when --target was given


def export_package(
    source: str, output: "str | Path", options: ExportOptions | None = None, on_stage: StageCallback | None = None
) -> Manifest:
    """Export ``source`` to the package folder ``output`` and return its manifest.

    ``on_stage(name, info)`` is called as each stage starts and ends (the CLI prints them).
    Raises ExportError when a component's ONNX output drifts beyond ``options.tolerance``.
    Three steps: :func:`plan_export`, :func:`export_component_checked` per component, then
    :func:`write_package_sections`; everything is written into a staging folder renamed at the end.
    """
    options = options or ExportOptions()
    require("torch", "export")
    require("onnx", "export")

    from .components import component_specs
    from .source import check_decoder_fits, load_decoder, load_source

    notify = on_stage or (lambda name, info: None)
    target_profile = _check_options(options)
    output = Path(output)
    if output.exists() and not options.overwrite:
        raise InvalidRequestError(f"output '{output}' already exists", hint="choose another -o path, or pass --overwrite to replace it")

    started = time.perf_counter()
    notify("load", {"source": source})
    model = load_source(source, seed=options.seed)
    if options.vae_decoder:
        notify("load:decoder", {"source": options.vae_decoder})
        model.decoder = load_decoder(options.vae_decoder, seed=options.seed)
        check_decoder_fits(model, model.decoder)
    notify("load:done", {"seconds": time.perf_counter() - started})

    plan = plan_export(model, options, target_profile)
    manifest = Manifest.new(options.model_id or model.model_id)
    specs = component_specs(model, seed=options.seed)
    with staged_directory(output, overwrite=options.overwrite) as stage:
        for spec in specs:
            manifest.set_component(spec.name, export_component_checked(spec, model, plan, options, stage, notify))
            del spec.module
            gc.collect()
        notify("write", {})
        write_package_sections(manifest, model, plan, options, stage, started)
        manifest.root = stage
        manifest.record_files(stage)
        manifest.write(stage)
        notify("write:done", {"seconds": time.perf_counter() - started, "peak_rss_mb": _peak_rss_mb()})
    manifest.root = output
    return manifest


def _check_options(options: ExportOptions):
    """Refuse options that cannot work before loading anything; returns the target's profile."""
    if options.batch < 1:
        raise InvalidRequestError(f"--batch must be at least 1, got {options.batch}")
    if options.exporter not in ("torchscript", "dynamo"):
        raise InvalidRequestError(f"unknown exporter '{options.exporter}'", hint="use torchscript or dynamo")
    if not options.target:
        return None
    from nanoedge.targets import get_profile

    target_profile = get_profile(options.target)
    if target_profile.needs_static_shapes and options.static_shape is None:
        raise InvalidRequestError(
            f"target {target_profile.name} needs static shapes",
            hint=f"add --static-shape WxH (e.g. 512x512) --batch 1 to the export for {target_profile.name}",
        )
    return target_profile


def plan_export(model, options: ExportOptions, target_profile=None) -> ExportPlan:
    """The shapes to trace and verify, and whether to fuse attention, for ``model``."""
    factor = model.vae_scale_factor
    multiple = model.unet_size_multiple
    native = model.native_size
    static = options.static_shape
    if static is not None:
        for side in (static.width, static.height):
            if side % multiple:
                raise InvalidRequestError(
                    f"--static-shape {static}: {side} is not a multiple of {multiple}, which this UNet needs",
                    hint=f"use a multiple of {multiple}, for example {native}x{native}",
                )
    # Trace at a small shape (fast, low memory) and check a second shape too, so a dynamic
    # axis that silently became a constant is caught here and not on the user's device.
    checks_at: tuple[tuple[int, int, int], ...]
    if static is not None:
        checks_at = ((options.batch, static.height // factor, static.width // factor),)
    else:
        small = max(multiple // factor, min(native // factor, 4 * (multiple // factor)))
        other = small + multiple // factor
        checks_at = ((2, small, small), (1, other, small))
    # Attention fusion (no score matrix in memory) unless the package may be for an NPU, whose
    # providers do not take onnxruntime's contrib MultiHeadAttention: an NPU target, or a
    # static-shape export that names no CPU/GPU target (static graphs are the NPU form).
    if target_profile is not None:
        npu_form = target_profile.needs_static_shapes
    else:
        npu_form = options.static_shape is not None
    fuse = options.fuse_attention and not npu_form
    return ExportPlan(factor, multiple, native, static, checks_at, fuse, target_profile)


def export_component_checked(spec, model, plan: ExportPlan, options: ExportOptions, stage: Path,
                             notify: StageCallback) -> dict[str, Any]:
    """Export one component into ``stage``, verify it against PyTorch, return its manifest entry."""
    from .onnx_io import export_component
    from .verify import check_component

    t0 = time.perf_counter()
    notify(f"export:{spec.name}", {"parameters": spec.parameters,
                                   **({"decoder": model.decoder_description()["class"]} if spec.name == "vae_decoder" else {})})
    trace_inputs = spec.make_inputs(*plan.checks_at[0])
    model_file = stage / spec.name / "model.onnx"
    fused: list[int] = []
    graph_pass = None
    if plan.fuse:
        from .attention_fusion import fuse_attention

        def graph_pass(onnx_model, _record=fused.append):
            _record(fuse_attention(onnx_model))
    try:
        written = export_component(
            spec, model_file, trace_inputs, static=plan.static is not None, opset=options.opset,
            exporter=options.exporter, external_data=True if spec.name == "unet" else None,
            graph_pass=graph_pass,
        )
    except Exception as exc:
        raise ExportError(
            f"exporting the {spec.name} to ONNX failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
            hint="run with -v for the full error; try --exporter dynamo",
        ) from exc
    rewrites = None
    if plan.target_profile is not None and plan.static is not None:
        from .npu_rewrites import fold_static_graph

        rewrites = fold_static_graph(model_file, external_data=len(written) > 1)
    gc.collect()
    export_seconds = time.perf_counter() - t0
    notify(f"verify:{spec.name}", {})
    checks = [check_component(spec, model_file, spec.make_inputs(*shape), options.tolerance) for shape in plan.checks_at]
    worst = max(checks, key=lambda c: c.max_abs_diff / max(c.allowed, 1e-30))
    if not all(c.ok for c in checks):
        raise ExportError(
            f"{spec.name}: ONNX output differs from PyTorch by "
            f"{worst.max_abs_diff:.3g} (allowed {worst.allowed:.3g}) on {worst.shape}",
            hint="the export is wrong for this model; report it with -v output, or loosen --tolerance if you accept the drift",
        )
    (model_file.parent / "config.json").write_text(json.dumps(_jsonable(spec.config), indent=2) + "\n")
    entry: dict[str, Any] = {
        "model": f"{spec.name}/model.onnx",
        "files": [str(p.relative_to(stage)) for p in written],
        "precision": "fp32",
        "parameters": spec.parameters,
        "inputs": _io_description(model_file, "inputs"),
        "outputs": _io_description(model_file, "outputs"),
        "verification": {
            "max_abs_diff": worst.max_abs_diff,
            "tolerance": options.tolerance,
            "checks": [c.as_dict() for c in checks],
        },
        "export_seconds": round(export_seconds, 2),
    }
    if spec.name == "vae_decoder":
        # which decoder, and how the runtime feeds it (latents / scaling + shift) and reads it
        entry["decoder"] = _jsonable(model.decoder_description())
    if rewrites is not None:
        entry["rewrites"] = {"target": plan.target_profile.name, "folded_ops": rewrites}
    if fused and fused[0]:
        # com.microsoft.MultiHeadAttention: CPU and CUDA providers only (docs/speed.md)
        entry["fused_attention"] = fused[0]
    notify(f"export:{spec.name}:done", {"max_abs_diff": worst.max_abs_diff, "seconds": export_seconds, "parameters": spec.parameters})
    return entry


def write_package_sections(manifest: Manifest, model, plan: ExportPlan, options: ExportOptions, stage: Path, started: float) -> None:
    """Write tokenizer, scheduler and model index into ``stage`` and every manifest section."""
    static, native, multiple = plan.static, plan.native, plan.multiple
    _write_tokenizer(model, stage, manifest)
    scheduler_dir = stage / "scheduler"
    scheduler_dir.mkdir()
    (scheduler_dir / "scheduler_config.json").write_text(json.dumps(model.scheduler_config, indent=2) + "\n")
    manifest.set_section(
        "scheduler", {"config": "scheduler/scheduler_config.json", "default": scheduler_name_for_config(model.scheduler_config)}
    )
    manifest.set_section("latent", {
        "channels": int(model.unet.config.out_channels),
        "scale_factor": plan.factor,
        "scaling_factor": float(model.vae.config.scaling_factor),
        "shift_factor": getattr(model.vae.config, "shift_factor", None),
    })
    native_size = Size(native, native)
    default_size = static or parse_size(model.defaults.get("size", str(native_size)))
    manifest.set_section("sizes", {
        "native": str(static or native_size),
        "multiple_of": multiple,
        "min": multiple,
        "max": max(2048, native * 2),
        "static": str(static) if static else None,
        "static_batch": options.batch if static else None,
        "output": [str(s) for s in options.output_sizes],
    })
    guidance = options.default_guidance if options.default_guidance is not None else model.defaults.get("guidance", DEFAULT_GUIDANCE)
    manifest.set_section("defaults", {
        "size": str(default_size),
        "steps": int(options.default_steps or model.defaults.get("steps", DEFAULT_STEPS)),
        "guidance": float(guidance),
        "scheduler": None,
    })
    manifest.set_section("provenance", {
        **model.provenance,
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "exporter": options.exporter,
        "target": options.target,
        "opset": options.opset if options.exporter == "torchscript" else max(options.opset, 18),
        "tools": _tool_versions(),
        "export_seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    })
    _write_model_index(stage, model)



def _write_tokenizer(model, stage: Path, manifest: Manifest) -> None:
    folder = stage / "tokenizer"
    model.tokenizer.save_pretrained(str(folder))  # tokenizer.json + vocab/merges for optimum
    if not (folder / "tokenizer.json").exists():
        model.tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"))
    manifest.set_section("tokenizer", {
        "path": "tokenizer/tokenizer.json",
        "max_length": int(model.tokenizer.model_max_length),
        "pad_id": int(model.tokenizer.pad_token_id),
        "kind": "clip-bpe" if type(model.tokenizer.backend_tokenizer.model).__name__ == "BPE" else "word-level",
    })


def _write_model_index(stage: Path, model) -> None:
    index = {
        "_class_name": "ORTStableDiffusionPipeline",
        "_nanoedge_version": __version__,
        "scheduler": ["diffusers", model.scheduler_config.get("_class_name", "PNDMScheduler")],
        "text_encoder": ["optimum", "ORTModelTextEncoder"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["optimum", "ORTModelUnet"],
        "vae_decoder": ["optimum", "ORTModelVaeDecoder"],
        "requires_safety_checker": False,
    }
    (stage / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


def _io_description(model_file: Path, which: str) -> list[dict[str, Any]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(model_file), sess_options=options, providers=["CPUExecutionProvider"])
    args = session.get_inputs() if which == "inputs" else session.get_outputs()
    return [{"name": a.name, "dtype": a.type.replace("tensor(", "").rstrip(")"), "shape": list(a.shape)} for a in args]


def _tool_versions() -> dict[str, str]:
    versions = {"nanoedge": __version__, "python": platform.python_version()}
    for name in ("torch", "diffusers", "transformers", "onnx", "onnxruntime"):
        try:
            module = __import__(name)
            versions[name] = getattr(module, "__version__", "?")
        except ImportError:
            pass
    return versions


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)

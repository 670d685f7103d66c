"""``nanoedge compile``: precompile a package for a target so that loading on device is fast.

For QNN the HTP graph preparation (tens of seconds for a real UNet) happens once here and is
stored as EPContext models plus context binaries (``model_ctx.onnx`` + ``*_qnn.bin``); the
device then only deserialises them. The result is a new package that runs on that target
only (the manifest says so). For TensorRT/OpenVINO/Core ML the provider's own cache is the
mechanism: compiling warms it (the profile points it at ``NANOEDGE_CACHE_DIR``).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Callable

from nanoedge.core.atomic import staged_directory
from nanoedge.core.errors import InvalidRequestError, PackageError
from nanoedge.core.manifest import Manifest

from .detect import detect
from .profiles import TargetProfile, package_misfit
from .session import create_session

log = logging.getLogger(__name__)


def _plugin_version(profile: TargetProfile) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(profile.pip_package)
    except metadata.PackageNotFoundError:
        return None


def compile_package(
    package: "str | Path",
    profile: TargetProfile,
    output: "str | Path",
    overwrite: bool = False,
    on_component: Callable[[str, float], None] | None = None,
) -> Manifest:
    """Write a copy of ``package`` whose components are precompiled for ``profile``."""
    manifest = Manifest.load(package)
    status = detect(profile)
    if not status.usable:
        raise InvalidRequestError(f"cannot compile for {profile.name}: {status.reason}", hint=status.hint)
    misfit = package_misfit(profile, manifest)
    if misfit:
        raise InvalidRequestError(f"cannot compile for {profile.name}: {misfit}")
    if manifest.compiled_for:
        raise InvalidRequestError(f"package is already compiled for {manifest.compiled_for}", hint="compile the original package")
    if profile.name != "qnn":
        raise InvalidRequestError(
            f"target {profile.name} compiles through its provider cache at first load ({profile.cache})",
            hint=f"load the package once with --target {profile.name}; NANOEDGE_CACHE_DIR sets where the cache lives",
        )
    source_root = manifest.folder()
    with staged_directory(Path(output), overwrite=overwrite) as stage:
        result = manifest.staged_copy(stage)
        component_files: set[str] = set()
        for name in manifest.components:
            component_files.update(manifest.component(name).get("files", []))
        for rel in manifest.files:
            if rel not in component_files:
                (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source_root / rel, stage / rel)
        for name in manifest.components:
            started = time.perf_counter()
            folder = stage / name
            folder.mkdir(parents=True, exist_ok=True)
            context_model = folder / "model_ctx.onnx"
            try:
                create_session(
                    manifest.component_path(name),
                    profile,
                    extra_config={"ep.context_enable": "1", "ep.context_file_path": str(context_model), "ep.context_embed_mode": "0"},
                )
            except Exception as exc:
                raise PackageError(f"{profile.accelerator} could not compile the {name}: {getattr(exc, 'message', exc)}",
                                   hint=f"run `nanoedge check {source_root} --target {profile.name}`") from exc
            written = sorted(str(p.relative_to(stage)) for p in folder.iterdir() if p.is_file() and p.name != "config.json")
            if not context_model.exists():
                raise PackageError(f"{profile.accelerator} wrote no context model for the {name}")
            result.replace_component_files(name, f"{name}/model_ctx.onnx", written,
                                           compiled={"target": profile.name, "seconds": round(time.perf_counter() - started, 2)})
            if on_component:
                on_component(name, time.perf_counter() - started)
        result.mark_compiled(profile.name, _plugin_version(profile))
        result.record_files(stage)
        result.write(stage)
    result.root = Path(output)
    return result

"""Assembling a quantized package folder from the FP32 source and quantized component files.

The output has the source's layout (optimum names, external data where the source had it),
the source's tokenizer, scheduler and configs, and a manifest derived from the source's:
per-component precision and files change, the ``quantization`` section is filled in, and
every file is hashed again.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from nanoedge.core.manifest import Manifest

from .graphs import EXTERNAL_SUFFIX, load_model, save_model, shorten_names


def component_is_external(source: Manifest, component: str) -> bool:
    return any(rel.endswith(EXTERNAL_SUFFIX) for rel in source.component(component).get("files", []))


def write_component(model_path: Path, folder: Path, external: bool, short_names: bool = True) -> list[Path]:
    """Re-save a quantized model as ``folder/model.onnx`` (+ ``model.onnx_data`` if ``external``),
    with short node and tensor names unless ``short_names`` is off (see :func:`.graphs.shorten_names`)."""
    model = load_model(model_path)
    if short_names:
        shorten_names(model)
    return save_model(model, folder / "model.onnx", external=external)


def assemble(
    source: Manifest, root: Path, quantized_files: dict[str, Path], quantization: dict[str, Any], precisions: dict[str, str]
) -> Manifest:
    """Write a complete package into ``root`` (an empty folder) and return its manifest.

    ``quantized_files[name]`` is the folder holding a quantized component's files (written
    by :func:`write_component`); other components and all support files are copied.
    """
    source_root = source.folder()
    root.mkdir(parents=True, exist_ok=True)
    manifest = source.staged_copy(root)
    replaced = {rel for name in quantized_files for rel in source.component(name).get("files", []) if not rel.endswith(".json")}
    for rel in source.files:
        if rel in replaced:
            continue
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source_root / rel, target)
        os.chmod(target, 0o644)
    for name, folder in quantized_files.items():
        destination = root / name
        destination.mkdir(parents=True, exist_ok=True)
        files = []
        for path in sorted(folder.iterdir()):
            if path.is_file():
                shutil.copyfile(path, destination / path.name)
                os.chmod(destination / path.name, 0o644)
                files.append(f"{name}/{path.name}")
        manifest.replace_component_files(name, f"{name}/model.onnx", files)
    manifest.record_quantization(quantization, precisions)
    manifest.record_files(root)
    manifest.write(root)
    return manifest

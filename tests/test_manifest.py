"""The manifest owns the package format: accessors for readers, named edits for writers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nanoedge.core.errors import PackageError
from nanoedge.core.manifest import COMPONENTS, FORMAT_VERSION, MANIFEST_NAME, SECTIONS, Manifest, new_manifest

SHIPPED = Path(__file__).resolve().parents[1] / "runtime" / "models" / "default"


def test_new_manifest_has_every_key_a_writer_sets():
    data = new_manifest("m")
    assert data["format_version"] == FORMAT_VERSION == 1  # packages written before still load
    for key in (*SECTIONS, "components", "quantization", "compiled_for", "targets", "files"):
        assert key in data, key


def test_a_package_written_before_the_owner_change_still_loads():
    # the shipped default model was exported before Manifest owned every edit
    manifest = Manifest.load(SHIPPED)
    assert set(manifest.components) == set(COMPONENTS)
    assert manifest.size_rules().native.width > 0
    assert manifest.scheduler_config()["_class_name"]
    assert manifest.default_scheduler
    assert manifest.compiled_for is None and manifest.quantization is None


def test_named_edits_round_trip(tmp_path: Path):
    manifest = Manifest.new("m")
    manifest.set_section("defaults", {"size": "64x64", "steps": 4})
    for name in COMPONENTS:
        manifest.set_component(name, {"model": f"{name}/model.onnx", "files": [f"{name}/model.onnx"], "precision": "fp32"})
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "model.onnx").write_bytes(b"x")
    manifest.record_files(tmp_path)
    manifest.write(tmp_path)
    loaded = Manifest.load(tmp_path)
    assert loaded.defaults == {"size": "64x64", "steps": 4}
    assert loaded.files["unet/model.onnx"]["bytes"] == 1

    copy = loaded.staged_copy(tmp_path / "int8")
    copy.replace_component_files("unet", "unet/model.onnx", ["unet/model.onnx", "unet/model.onnx_data"])
    copy.record_quantization({"scheme": "int8"}, {"unet": "int8"})
    copy.update_quantization(seconds=1.5)
    copy.mark_compiled("qnn", "2.7.0")
    assert copy.quantization == {"scheme": "int8", "seconds": 1.5}
    assert copy.precisions == {"fp32", "int8"} and copy.compiled_for == "qnn"
    assert copy.targets["qnn"] == {"compiled": True, "plugin_version": "2.7.0"}
    # the source is untouched: edits go to the copy only
    assert loaded.quantization is None and loaded.compiled_for is None
    assert loaded.component("unet")["files"] == ["unet/model.onnx"]
    on_disk = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert on_disk["components"]["unet"]["precision"] == "fp32"


def test_edits_refuse_what_the_format_does_not_have():
    manifest = Manifest.new("m")
    with pytest.raises(ValueError, match="not a manifest section"):
        manifest.set_section("componentz", {})
    with pytest.raises(ValueError, match="unknown component"):
        manifest.set_component("refiner", {})
    with pytest.raises(PackageError, match="no quantization section"):
        manifest.update_quantization(seconds=1)
    with pytest.raises(PackageError, match="no package folder"):
        manifest.component_path("unet")

"""Export: the package layout, the manifest, self-verification, atomic output, bad sources."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from nanoedge.core.errors import ExportError, InvalidRequestError  # noqa: E402
from nanoedge.core.manifest import Manifest, sha256_file  # noqa: E402
from nanoedge.export import ExportOptions, export_package  # noqa: E402


def test_package_layout_is_optimum_compatible(tiny_package: Path):
    for rel in (
        "model_index.json",
        "nanoedge.json",
        "text_encoder/model.onnx",
        "unet/model.onnx",
        "unet/model.onnx_data",
        "vae_decoder/model.onnx",
        "tokenizer/tokenizer.json",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "scheduler/scheduler_config.json",
    ):
        assert (tiny_package / rel).is_file(), rel


def test_manifest_hashes_every_file(tiny_package: Path):
    manifest = Manifest.load(tiny_package)
    on_disk = {str(p.relative_to(tiny_package)) for p in tiny_package.rglob("*") if p.is_file() and p.name != "nanoedge.json"}
    assert set(manifest.files) == on_disk
    for rel, info in manifest.files.items():
        assert info["sha256"] == sha256_file(tiny_package / rel)
        assert info["bytes"] == (tiny_package / rel).stat().st_size


def test_manifest_describes_components(tiny_package: Path):
    data = Manifest.load(tiny_package).as_dict()
    unet = data["components"]["unet"]
    assert [i["name"] for i in unet["inputs"]] == ["sample", "timestep", "encoder_hidden_states"]
    assert unet["inputs"][0]["shape"] == ["batch", 4, "height", "width"]
    assert unet["inputs"][1]["shape"] == ["batch"]  # one timestep per sample
    assert data["components"]["text_encoder"]["inputs"][0]["dtype"] == "int32"
    for name, comp in data["components"].items():
        assert comp["parameters"] > 0, name
        check = comp["verification"]
        assert 0 <= check["max_abs_diff"] <= check["tolerance"], name
        assert len(check["checks"]) == 2, "a dynamic export is checked at two shapes"
    assert data["sizes"]["native"] == "64x64" and data["sizes"]["static"] is None
    assert data["defaults"]["steps"] == 10
    assert data["provenance"]["source"] == {"kind": "preset", "name": "tiny-random", "seed": 0, "architecture_of": None}
    assert data["provenance"]["tools"]["torch"].startswith("2.13.0")
    assert data["tokenizer"]["pad_id"] == 49407


def test_static_export_fixes_shapes(tiny_static_package: Path):
    data = Manifest.load(tiny_static_package).as_dict()
    assert data["sizes"]["static"] == "64x64"
    assert data["components"]["unet"]["inputs"][0]["shape"] == [1, 4, 8, 8]
    assert data["components"]["vae_decoder"]["inputs"][0]["shape"] == [1, 4, 8, 8]
    assert data["components"]["text_encoder"]["inputs"][0]["shape"] == [1, 77]


def test_export_of_a_diffusers_folder_matches_the_preset(tmp_path: Path, tiny_package: Path):
    from nanoedge.export.source import load_source, save_checkpoint

    folder = save_checkpoint(load_source("preset:tiny-random"), tmp_path / "checkpoint")
    manifest = export_package(str(folder), tmp_path / "from-folder")
    assert manifest.provenance["source"]["kind"] == "folder"
    import onnxruntime as ort

    feeds = {
        "sample": np.random.default_rng(0).standard_normal((1, 4, 8, 8), dtype=np.float32),
        "timestep": np.array([500.0], dtype=np.float32),
        "encoder_hidden_states": np.random.default_rng(1).standard_normal((1, 77, 32), dtype=np.float32),
    }
    outputs = [ort.InferenceSession(str(p / "unet" / "model.onnx")).run(None, feeds)[0] for p in (tiny_package, tmp_path / "from-folder")]
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-6)


def test_hub_id_uses_real_loading_and_fails_clearly_offline(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ExportError) as err:
        export_package("nota-ai/bk-sdm-tiny", tmp_path / "out")
    assert "nota-ai/bk-sdm-tiny" in err.value.message
    assert "local folder" in err.value.hint
    assert not (tmp_path / "out").exists()


def test_unknown_preset_lists_the_known_ones(tmp_path: Path):
    with pytest.raises(InvalidRequestError) as err:
        export_package("preset:nope", tmp_path / "out")
    for name in ("tiny-random", "bk-sdm-tiny", "bk-sdm-small", "sd15", "sd21-base"):
        assert f"preset:{name}" in err.value.hint


def test_not_a_source(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidRequestError, match="not a diffusers pipeline folder"):
        export_package(str(tmp_path / "empty"), tmp_path / "out")
    with pytest.raises(InvalidRequestError, match="not a folder, a hub id"):
        export_package("no such thing", tmp_path / "out")


def test_existing_output_is_refused_and_kept(tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InvalidRequestError, match="already exists"):
        export_package("preset:tiny-random", out)
    assert (out / "keep.txt").read_text() == "mine"


def test_drift_beyond_tolerance_fails_and_leaves_nothing(tmp_path: Path):
    out = tmp_path / "out"
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_package("preset:tiny-random", out, ExportOptions(tolerance=0.0))
    assert list(tmp_path.iterdir()) == [], "no package and no staging folder may be left behind"


def test_interrupted_export_leaves_no_package(tmp_path: Path, monkeypatch):
    import nanoedge.export.exporter as exporter

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(exporter, "_write_model_index", boom)
    with pytest.raises(KeyboardInterrupt):
        export_package("preset:tiny-random", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_static_shape_must_fit_the_unet(tmp_path: Path):
    from nanoedge.core.sizes import Size

    with pytest.raises(InvalidRequestError, match="multiple of 16"):
        export_package("preset:tiny-random", tmp_path / "out", ExportOptions(static_shape=Size(72, 64)))


def test_presets_have_the_published_architectures():
    from nanoedge.export.presets import load_preset

    tiny = load_preset("bk-sdm-tiny")
    assert tiny["unet"]["block_out_channels"] == [320, 640, 1280]
    assert tiny["unet"]["mid_block_type"] is None and tiny["unet"]["layers_per_block"] == 1
    assert load_preset("sd21-base")["tokenizer"]["pad_token"] == "!"
    assert json.loads(json.dumps(load_preset("sd15")))["text_encoder"]["hidden_size"] == 768

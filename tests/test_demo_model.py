"""The shipped demo model: the default package, its provenance, and the commands around it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "models" / "demo-checkpoint"
DEFAULT = ROOT / "runtime" / "models" / "default"
INT8 = ROOT / "runtime" / "models" / "default-int8"


def _env_without_default() -> dict:
    env = dict(os.environ)
    env.pop("NANOEDGE_DEFAULT_MODEL", None)
    return env


def test_default_package_ships_with_served_sizes():
    from nanoedge.core.manifest import Manifest
    from nanoedge.runtime.default_model import default_package_path

    if "NANOEDGE_DEFAULT_MODEL" not in os.environ:
        assert default_package_path() == DEFAULT
    manifest = Manifest.load(DEFAULT)
    assert manifest.sizes["native"] == "64x64"
    assert set(manifest.sizes["output"]) >= {"512x512", "768x768", "1024x1024"}
    assert manifest.tokenizer["kind"] == "word-level"
    shipped = sum(p.stat().st_size for p in DEFAULT.rglob("*") if p.is_file())
    assert shipped < 16 * 2**20, f"the default package grew to {shipped / 2**20:.1f} MiB"


def _component_inputs(manifest, name: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    latent = manifest.latent
    if name == "text_encoder":
        length = manifest.tokenizer["max_length"]
        return {"input_ids": rng.integers(0, 50, (2, length)).astype(np.int32)}
    if name == "unet":
        hidden = manifest.components["unet"]["inputs"][2]["shape"][2]
        length = manifest.tokenizer["max_length"]
        return {
            "sample": rng.standard_normal((2, latent["channels"], 16, 16)).astype(np.float32),
            "timestep": np.asarray([901.0, 21.0], dtype=np.float32),
            "encoder_hidden_states": rng.standard_normal((2, length, hidden)).astype(np.float32),
        }
    return {"latent_sample": rng.standard_normal((1, latent["channels"], 16, 16)).astype(np.float32)}


def test_fresh_export_of_the_shipped_checkpoint_matches_the_shipped_package(tmp_path):
    pytest.importorskip("torch")
    import onnxruntime as ort

    from nanoedge.core.manifest import Manifest
    from nanoedge.export import ExportOptions, export_package

    shipped = Manifest.load(DEFAULT)
    fresh = export_package(str(CHECKPOINT), tmp_path / "fresh", ExportOptions(model_id=shipped.id))
    assert fresh.latent == shipped.latent
    assert fresh.tokenizer == shipped.tokenizer
    for name in ("text_encoder", "unet", "vae_decoder"):
        feeds = _component_inputs(shipped, name)
        outputs = []
        for manifest in (shipped, fresh):
            session = ort.InferenceSession(str(manifest.component_path(name)), providers=["CPUExecutionProvider"])
            outputs.append(session.run(None, feeds)[0])
        assert np.max(np.abs(outputs[0] - outputs[1])) <= 1e-5, name
    assert (DEFAULT / "tokenizer" / "tokenizer.json").read_bytes() == (tmp_path / "fresh" / "tokenizer" / "tokenizer.json").read_bytes()


def test_generate_without_a_model_uses_the_demo_model_and_draws_the_prompt(tmp_path):
    from nanoedge.runtime.demo.judge import judge_image

    prompt = "a red circle on the left"
    proc = run_cli(
        "generate", prompt, "-o", str(tmp_path / "img.png"), "--seed", "0", "--n", "4", "--json", env=_env_without_default(), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["size"] == "64x64" and summary["model"] == "nanoedge-demo"
    judgements = [judge_image(Image.open(f), prompt) for f in summary["files"]]
    # a seen combination: the shipped model draws colour, shape and place right (docs/demo-model.md)
    right = [j.all_correct for j in judgements]
    assert sum(right) >= 3, [j.found for j in judgements]


def test_served_size_is_resized_from_native(tmp_path):
    from nanoedge.runtime import Pipeline

    pipe = Pipeline.load(DEFAULT)
    [native] = pipe.generate("a blue square at the bottom", seed=3)
    [large] = pipe.generate("a blue square at the bottom", seed=3, size="512x512")
    assert native.size == (64, 64) and large.size == (512, 512)
    small_again = np.asarray(large.resize((64, 64), Image.Resampling.BOX), dtype=np.float32)
    assert np.abs(small_again - np.asarray(native, dtype=np.float32)).mean() < 8


def test_eval_runs_on_a_prompt_subset(tmp_path):
    sheet = tmp_path / "sheet.png"
    proc = run_cli("eval", "--limit", "2", "--n", "2", "--json", "--sheet", str(sheet), env=_env_without_default(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["images"] == 4
    assert [p["held_out"] for p in report["prompts"]] == [True, False]
    for group in ("overall", "held_out", "seen"):
        assert set(report["accuracy"][group]) == {"colour", "shape", "position", "all"}
    assert Image.open(sheet).size[0] > 64 * 2


def test_eval_rejects_a_bad_image_count(tmp_path):
    proc = run_cli("eval", "--n", "0", env=_env_without_default(), cwd=tmp_path)
    assert proc.returncode == 2
    assert "--n must be at least 1" in proc.stderr

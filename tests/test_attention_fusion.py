"""Attention fusion at export: the exported SDPA chains become MultiHeadAttention, outputs unchanged."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _ops(model_file: Path) -> collections.Counter:
    return collections.Counter(n.op_type for n in onnx.load(str(model_file), load_external_data=False).graph.node)


@pytest.fixture(scope="module")
def unfused_package(tmp_path_factory) -> Path:
    from nanoedge.export import ExportOptions, export_package

    out = tmp_path_factory.mktemp("pkg") / "tiny-unfused"
    export_package("preset:tiny-random", out, ExportOptions(fuse_attention=False))
    return out


def _unet_feeds(package: Path, batch: int = 2) -> dict[str, np.ndarray]:
    manifest = json.loads((package / "nanoedge.json").read_text())
    inputs = {i["name"]: i["shape"] for i in manifest["components"]["unet"]["inputs"]}
    side = int(manifest["sizes"]["native"].split("x")[0]) // int(manifest["latent"]["scale_factor"])
    rng = np.random.default_rng(0)
    return {
        "sample": rng.standard_normal((batch, int(manifest["latent"]["channels"]), side, side), dtype=np.float32),
        "timestep": np.full((batch,), 500.0, dtype=np.float32),
        "encoder_hidden_states": rng.standard_normal((batch, 77, int(inputs["encoder_hidden_states"][-1])), dtype=np.float32),
    }


def _run(model_file: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def test_default_export_fuses_unet_and_decoder_attention(tiny_package):
    manifest = json.loads((tiny_package / "nanoedge.json").read_text())
    unet_ops = _ops(tiny_package / "unet" / "model.onnx")
    assert manifest["components"]["unet"]["fused_attention"] == unet_ops["MultiHeadAttention"] > 0
    assert unet_ops["Softmax"] == 0, "every UNet attention should be fused"
    assert (
        _ops(tiny_package / "vae_decoder" / "model.onnx")["MultiHeadAttention"] == manifest["components"]["vae_decoder"]["fused_attention"]
    )
    # the text encoder's causal attention has a mask, which this pass leaves alone
    assert "fused_attention" not in manifest["components"]["text_encoder"]


def test_fused_and_unfused_exports_compute_the_same(tiny_package, unfused_package):
    assert _ops(unfused_package / "unet" / "model.onnx")["MultiHeadAttention"] == 0
    assert "fused_attention" not in json.loads((unfused_package / "nanoedge.json").read_text())["components"]["unet"]
    feeds = _unet_feeds(tiny_package)
    fused = _run(tiny_package / "unet" / "model.onnx", feeds)
    plain = _run(unfused_package / "unet" / "model.onnx", feeds)
    assert np.abs(fused - plain).max() <= 1e-5 * max(1.0, float(np.abs(plain).max()))


def test_static_shape_export_without_a_cpu_target_is_not_fused(tiny_static_package):
    assert _ops(tiny_static_package / "unet" / "model.onnx")["MultiHeadAttention"] == 0


def test_a_chain_whose_scores_are_used_elsewhere_is_left_alone(unfused_package):
    from nanoedge.export.attention_fusion import fuse_attention

    model = onnx.load(str(unfused_package / "unet" / "model.onnx"))
    softmaxes = [n for n in model.graph.node if n.op_type == "Softmax"]
    # expose one attention's probabilities as a graph output: fusing it would drop that tensor
    model.graph.output.append(onnx.helper.make_tensor_value_info(softmaxes[0].output[0], onnx.TensorProto.FLOAT, ["b", "h", "s", "l"]))
    fused = fuse_attention(model)
    assert fused == len(softmaxes) - 1
    remaining = [n for n in model.graph.node if n.op_type == "Softmax"]
    assert [n.name for n in remaining] == [softmaxes[0].name]
    onnx.checker.check_model(model)


def test_fused_graph_has_no_dangling_inputs(tiny_package):
    model = onnx.load(str(tiny_package / "unet" / "model.onnx"), load_external_data=False)
    produced = (
        {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer}
    )
    assert all(name in produced for n in model.graph.node for name in n.input if name)
    assert any(op.domain == "com.microsoft" for op in model.opset_import)


def test_info_shows_fused_attention(tiny_package):
    from conftest import run_cli

    proc = run_cli("info", str(tiny_package))
    assert proc.returncode == 0, proc.stderr
    unet_line = next(line for line in proc.stdout.splitlines() if line.strip().startswith("unet"))
    assert "attention fused x" in unet_line

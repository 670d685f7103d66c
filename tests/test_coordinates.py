"""Coordinate planes (export/coordinates.py): the UNet gets x/y, the package keeps SD's inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nanoedge.export.coordinates import CONFIG_KEY, append_coordinates, coordinate_channels, run_unet  # noqa: E402


def test_planes_run_from_minus_one_to_one_along_x_and_y():
    sample = torch.zeros(2, 4, 3, 5)
    out = append_coordinates(sample)
    assert tuple(out.shape) == (2, 6, 3, 5)
    assert torch.equal(out[:, :4], sample)
    assert torch.allclose(out[0, 4, 1], torch.linspace(-1, 1, 5))  # x varies along width
    assert torch.allclose(out[1, 5, :, 2], torch.linspace(-1, 1, 3))  # y varies along height
    assert float(out[0, 4, :, 0].std()) == 0.0 and float(out[0, 5, 0, :].std()) == 0.0


def _demo_unet(coordinates: bool):
    from nanoedge.export.training.checkpoint import build_unet

    torch.manual_seed(0)
    return build_unet(True, True, coordinates).eval()


def test_a_coordinate_unet_is_told_where_it_is_and_records_it_in_its_config(tmp_path):
    from diffusers import UNet2DConditionModel

    unet = _demo_unet(True)
    assert coordinate_channels(unet) == 2 and unet.config.in_channels == unet.config.out_channels + 2
    assert coordinate_channels(_demo_unet(False)) == 0
    unet.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())[CONFIG_KEY] == 2
    loaded = UNet2DConditionModel.from_pretrained(tmp_path).eval()
    assert coordinate_channels(loaded) == 2
    x, states = torch.randn(1, 4, 16, 16), torch.randn(1, 24, 64)
    with torch.no_grad():
        out = run_unet(loaded, x, 500, states)
        # a shifted input does not give a shifted output: the planes pin the UNet to the canvas
        flipped = run_unet(loaded, torch.flip(x, dims=[3]), 500, states)
    assert tuple(out.shape) == (1, 4, 16, 16)
    assert torch.allclose(out, run_unet(unet, x, 500, states), atol=1e-6)
    assert (torch.flip(flipped, dims=[3]) - out).abs().max() > 1e-3


def test_a_config_that_asks_for_planes_without_the_input_channels_is_refused():
    unet = _demo_unet(False)
    unet.register_to_config(**{CONFIG_KEY: 2})
    with pytest.raises(ValueError, match="in_channels"):
        coordinate_channels(unet)


def test_export_puts_the_planes_inside_the_graph_and_keeps_four_channel_latents(tmp_path):
    """The exported UNet takes 4-channel latents, matches torch with the planes, and runs in the runtime."""
    import onnxruntime as ort
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    from nanoedge.export import ExportOptions, export_package
    from nanoedge.export.training.checkpoint import save_demo_checkpoint
    from nanoedge.export.training.configs import TEXT_MAX_LENGTH, VAE_CONFIG, scheduler_config, text_encoder_config
    from nanoedge.export.training.tokenizer import BOS, EOS, PAD, build_tokenizer
    from nanoedge.runtime import Pipeline

    tokenizer = build_tokenizer(TEXT_MAX_LENGTH)
    vocab = tokenizer.get_vocab()
    torch.manual_seed(1)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_encoder_config(len(vocab), vocab[BOS], vocab[EOS], vocab[PAD]))).eval()
    vae = AutoencoderKL(**VAE_CONFIG).eval()
    unet = _demo_unet(True)
    checkpoint = save_demo_checkpoint(tmp_path / "ckpt", text_encoder, unet, vae, tokenizer, {}, scheduler_config())
    manifest = export_package(str(checkpoint), tmp_path / "pkg", ExportOptions(model_id="coords"))
    assert manifest.latent["channels"] == 4
    session = ort.InferenceSession(str(tmp_path / "pkg" / "unet" / "model.onnx"), providers=["CPUExecutionProvider"])
    sample = session.get_inputs()[0]
    assert sample.name == "sample" and sample.shape[1] == 4
    g = torch.Generator().manual_seed(3)
    x, states = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, TEXT_MAX_LENGTH, 64, generator=g)
    t = np.array([900.0, 100.0], dtype=np.float32)
    onnx_out = session.run(None, {"sample": x.numpy(), "timestep": t, "encoder_hidden_states": states.numpy()})[0]
    with torch.no_grad():
        torch_out = run_unet(unet, x, torch.from_numpy(t), states).numpy()
    assert np.abs(onnx_out - torch_out).max() < 1e-4
    images = Pipeline.load(tmp_path / "pkg").generate("a red circle on the left", steps=2, seed=0)
    assert [image.size for image in images] == [(64, 64)]

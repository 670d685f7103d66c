"""``nanoedge export ... --vae-decoder SOURCE``: a TAESD (AutoencoderTiny) decoder in place of the KL one.

The package must say which decoder it holds and how to feed it (TAESD decodes the UNet's latents
unscaled: scaling_factor 1.0), and the runtime's image must match diffusers' own pipeline run
with the same AutoencoderTiny as its ``vae``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from conftest import run_cli  # noqa: E402

from nanoedge.core.errors import InvalidRequestError  # noqa: E402
from nanoedge.core.manifest import Manifest  # noqa: E402
from nanoedge.export.source import check_decoder_fits, load_decoder, load_source  # noqa: E402
from nanoedge.runtime import Pipeline  # noqa: E402


def psnr(a, b) -> float:
    mse = np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def taesd_package(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("taesd") / "pkg"
    result = run_cli("export", "preset:tiny-random", "--vae-decoder", "preset:taesd", "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr
    return out


def test_manifest_flags_the_decoder(taesd_package: Path, tiny_package: Path):
    manifest = Manifest.load(taesd_package)
    described = manifest.component("vae_decoder")["decoder"]
    assert described["class"] == "AutoencoderTiny" and described["family"] == "taesd"
    assert described["scaling_factor"] == 1.0
    assert described["source"]["kind"] == "preset" and described["source"]["name"] == "taesd"
    assert manifest.decoder()["scaling_factor"] == 1.0
    # the UNet's latent space is still the model's (SD's 0.18215 here), only the decoder changed
    assert manifest.latent["scaling_factor"] == pytest.approx(0.18215)
    config = json.loads((taesd_package / "vae_decoder" / "config.json").read_text())
    assert config["_class_name"] == "AutoencoderTiny"
    assert (
        manifest.component("vae_decoder")["verification"]["max_abs_diff"] <= manifest.component("vae_decoder")["verification"]["tolerance"]
    )
    # TAESD's decoder is a different graph from the KL one the same model exports by default
    kl = Manifest.load(tiny_package)
    assert kl.decoder()["family"] == "kl" and kl.decoder()["scaling_factor"] == pytest.approx(0.18215)
    assert manifest.component("vae_decoder")["parameters"] != kl.component("vae_decoder")["parameters"]

    shown = run_cli("info", str(taesd_package))
    assert shown.returncode == 0, shown.stderr
    assert "AutoencoderTiny (taesd)" in shown.stdout and "latents / 1," in shown.stdout


def test_old_manifest_without_decoder_section_uses_latent_scaling(tiny_package: Path):
    data = json.loads((tiny_package / "nanoedge.json").read_text())
    data["components"]["vae_decoder"].pop("decoder", None)
    described = Manifest(data, tiny_package).decoder()
    assert described == {"family": "kl", "class": "AutoencoderKL", "scaling_factor": pytest.approx(0.18215),
                         "shift_factor": 0.0, "output_range": [-1.0, 1.0]}


def test_image_matches_diffusers_with_autoencoder_tiny(taesd_package: Path):
    model = load_source("preset:tiny-random")
    decoder = load_decoder("preset:taesd")
    pipe = diffusers.StableDiffusionPipeline(
        vae=decoder.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer, unet=model.unet,
        scheduler=diffusers.PNDMScheduler.from_config(model.scheduler_config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    latents = np.random.default_rng(7).standard_normal((1, 4, 8, 8), dtype=np.float32)
    ours = Pipeline.load(taesd_package).generate("a red circle on the left", steps=8, guidance=7.5, latents=latents)[0]
    with torch.no_grad():
        expected = pipe("a red circle on the left", height=64, width=64, num_inference_steps=8, guidance_scale=7.5,
                        latents=torch.from_numpy(latents.copy()), output_type="np").images[0]
    expected_pil = (np.clip(expected, 0, 1) * 255).round().astype(np.uint8)
    assert np.asarray(ours).std() > 1.0, "a flat image would match anything flat"
    value = psnr(ours, expected_pil)
    # Random TAESD weights give low-contrast images: decoding with the KL scaling (latents / 0.18215)
    # by mistake still scored 44 dB, so the bar is far above that (the right scaling gives equal bytes).
    assert value >= 55, f"PSNR {value:.1f} dB against diffusers with AutoencoderTiny"


def test_runtime_decodes_like_autoencoder_tiny(taesd_package: Path):
    """The runtime feeds TAESD the UNet's latents unscaled, exactly as diffusers' pipelines do."""
    decoder = load_decoder("preset:taesd")
    latents = np.random.default_rng(5).standard_normal((2, 4, 8, 8), dtype=np.float32)
    ours = Pipeline.load(taesd_package)._decode(latents)
    with torch.no_grad():
        expected = decoder.vae.decode(torch.from_numpy(latents) / decoder.vae.config.scaling_factor).sample.numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-4)
    with torch.no_grad():
        kl_scaled = decoder.vae.decode(torch.from_numpy(latents) / 0.18215).sample.numpy()
    assert np.abs(kl_scaled - expected).max() > 100 * np.abs(ours - expected).max() + 1e-3


def test_runtime_maps_a_zero_to_one_decoder_to_images(taesd_package: Path, copy_package):
    """A decoder recorded as producing [0, 1] is rescaled, so the same pixels come out."""
    reference = Pipeline.load(taesd_package)
    latents = np.random.default_rng(3).standard_normal((1, 4, 8, 8), dtype=np.float32)
    decoded = reference._decode(latents)
    package = copy_package(taesd_package)
    data = json.loads((package / "nanoedge.json").read_text())
    data["components"]["vae_decoder"]["decoder"]["output_range"] = [0.0, 1.0]
    (package / "nanoedge.json").write_text(json.dumps(data))
    remapped = Pipeline.load(package)._decode(latents)
    np.testing.assert_allclose(remapped, decoded * 2 - 1, rtol=1e-5, atol=1e-5)


def test_decoder_sources_are_checked():
    with pytest.raises(InvalidRequestError, match="decoder"):
        load_source("preset:taesd")
    with pytest.raises(InvalidRequestError, match="not a decoder"):
        load_decoder("preset:tiny-random")
    model = load_source("preset:tiny-random")
    decoder = load_decoder("preset:taesd")
    decoder.vae = diffusers.AutoencoderTiny.from_config({**dict(decoder.vae.config), "latent_channels": 8})
    with pytest.raises(InvalidRequestError, match="8-channel latents"):
        check_decoder_fits(model, decoder)


def test_decoder_from_a_saved_folder(tmp_path: Path):
    saved = load_decoder("preset:taesd")
    saved.vae.save_pretrained(tmp_path / "taesd")
    loaded = load_decoder(str(tmp_path / "taesd"))
    assert loaded.family == "taesd" and loaded.provenance["kind"] == "folder"
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded.vae.decode(latents).sample, saved.vae.decode(latents).sample)


def test_decoder_from_a_hub_id_uses_from_pretrained(tmp_path: Path, monkeypatch):
    """A hub id goes through diffusers' own loading (here redirected to a local copy: no network)."""
    from nanoedge.core.errors import ExportError

    load_decoder("preset:taesd").vae.save_pretrained(tmp_path / "taesd")
    real_config, real_weights = diffusers.AutoencoderTiny.load_config, diffusers.AutoencoderTiny.from_pretrained
    asked = []

    def load_config(name, *args, **kwargs):
        asked.append(("config", name))
        return real_config(str(tmp_path / "taesd"), *args, **kwargs)

    def from_pretrained(name, *args, **kwargs):
        asked.append(("weights", name))
        return real_weights(str(tmp_path / "taesd"), *args, **kwargs)

    monkeypatch.setattr(diffusers.AutoencoderTiny, "load_config", load_config)
    monkeypatch.setattr(diffusers.AutoencoderTiny, "from_pretrained", from_pretrained)
    loaded = load_decoder("madebyollin/taesd")
    assert asked[:2] == [("config", "madebyollin/taesd"), ("weights", "madebyollin/taesd")]
    assert loaded.family == "taesd" and loaded.provenance == {"kind": "hub", "repo_id": "madebyollin/taesd"}

    def offline(name, *args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(diffusers.AutoencoderTiny, "load_config", offline)
    with pytest.raises(ExportError, match="could not load the decoder"):
        load_decoder("madebyollin/taesd")

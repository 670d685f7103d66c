"""The runtime against the reference: diffusers' PyTorch pipeline with the same weights.

Same random-weight model, scheduler, steps and initial latents: the FP32 ONNX runtime's image
must match diffusers' at PSNR >= 40 dB. The tokenizer must give the same ids as transformers'
CLIPTokenizer, since every later difference would start there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from nanoedge.export.source import load_source  # noqa: E402
from nanoedge.runtime import Pipeline  # noqa: E402
from nanoedge.runtime.tokenizer import PromptTokenizer  # noqa: E402

DIFFUSERS_SCHEDULERS = {
    "pndm": diffusers.PNDMScheduler,
    "ddim": diffusers.DDIMScheduler,
    "euler": diffusers.EulerDiscreteScheduler,
    "dpmpp_2m": diffusers.DPMSolverMultistepScheduler,
}


def psnr(a, b) -> float:
    mse = np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def reference_pipeline():
    model = load_source("preset:tiny-random")
    pipe = diffusers.StableDiffusionPipeline(
        vae=model.vae,
        text_encoder=model.text_encoder,
        tokenizer=model.tokenizer,
        unet=model.unet,
        scheduler=diffusers.PNDMScheduler.from_config(model.scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("scheduler", list(DIFFUSERS_SCHEDULERS))
@pytest.mark.parametrize("guidance", [7.5, 1.0])
def test_image_matches_diffusers(tiny_package: Path, reference_pipeline, scheduler: str, guidance: float):
    ours = Pipeline.load(tiny_package)
    latents = np.random.default_rng(42).standard_normal((1, 4, 8, 8), dtype=np.float32)
    steps = 10
    image = ours.generate("a red circle on the left", steps=steps, guidance=guidance, scheduler=scheduler, latents=latents)[0]

    reference_pipeline.scheduler = DIFFUSERS_SCHEDULERS[scheduler].from_config(reference_pipeline.scheduler.config)
    with torch.no_grad():
        expected = reference_pipeline(
            "a red circle on the left",
            height=64,
            width=64,
            num_inference_steps=steps,
            guidance_scale=guidance,
            latents=torch.from_numpy(latents.copy()),
            output_type="pil",
        ).images[0]
    value = psnr(image, expected)
    assert value >= 40, f"{scheduler}: PSNR {value:.1f} dB against diffusers"


PROMPTS = [
    "a red circle on the left",
    "A  Small   BLUE square, on a green background!!",
    "an astronaut riding a horse, 4k, trending on artstation (masterpiece:1.2)",
    "café naïve résumé — ünïcödé",
    "",
    " ".join(["very long prompt"] * 40),
]


@pytest.mark.parametrize("pad_token", ["<|endoftext|>", "!"])
def test_tokenizer_matches_transformers(tmp_path: Path, pad_token: str):
    from nanoedge.export.presets import clip_vocab_files

    vocab, merges = clip_vocab_files()
    slow = transformers.CLIPTokenizer(vocab_file=vocab, merges_file=merges, pad_token=pad_token)
    fast = transformers.CLIPTokenizerFast(vocab_file=vocab, merges_file=merges, pad_token=pad_token)
    fast.backend_tokenizer.save(str(tmp_path / "tokenizer.json"))
    ours = PromptTokenizer(tmp_path / "tokenizer.json", max_length=77, pad_id=slow.pad_token_id)
    expected = slow(PROMPTS, padding="max_length", max_length=77, truncation=True).input_ids
    np.testing.assert_array_equal(ours(PROMPTS), np.asarray(expected, dtype=np.int32))
    _, truncated = ours.encode(PROMPTS)
    assert truncated == [False] * 5 + [True]

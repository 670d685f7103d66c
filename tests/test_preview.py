"""Previews for streamed partial images: the step schedule, the clean-latent estimate, the
fitted latent-to-RGB map and the pipeline's per-step hook (which must not change any image)."""

from __future__ import annotations

import numpy as np
import pytest

from nanoedge.runtime.pipeline import Pipeline
from nanoedge.runtime.preview import DenoiseStep, LinearPreview, denoised_estimate, preview_steps


@pytest.mark.parametrize("total,count,expected", [(10, 2, [3, 7]), (10, 3, [2, 5, 8]), (20, 1, [10]), (2, 3, [1]), (1, 3, []), (10, 0, [])])
def test_preview_steps_are_evenly_spread_before_the_end(total, count, expected):
    assert preview_steps(total, count) == expected


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_denoised_estimate_recovers_the_clean_latents(prediction):
    rng = np.random.default_rng(0)
    alphas = np.linspace(0.99, 0.01, 1000).astype(np.float32)
    x0, eps = rng.standard_normal((2, 4, 8, 8), dtype=np.float32), rng.standard_normal((2, 4, 8, 8), dtype=np.float32)
    t = 600
    a, s = np.sqrt(alphas[t]), np.sqrt(1 - alphas[t])
    x_t = a * x0 + s * eps
    output = {"epsilon": eps, "v_prediction": a * eps - s * x0, "sample": x0}[prediction]
    step = DenoiseStep(5, 10, float(t), x_t, output, x_t)
    np.testing.assert_allclose(denoised_estimate(step, alphas, prediction), x0, atol=1e-4)


def test_linear_preview_fits_the_decoder_colours():
    rng = np.random.default_rng(1)
    latents = rng.standard_normal((2, 4, 6, 5), dtype=np.float32)
    matrix = rng.standard_normal((4, 3)).astype(np.float32) * 0.3
    bias = np.array([0.1, -0.2, 0.05], np.float32)
    rgb = latents.transpose(0, 2, 3, 1) @ matrix + bias  # [-1, 1]-ish colours per latent pixel
    decoded = np.repeat(np.repeat(rgb.transpose(0, 3, 1, 2), 8, axis=2), 8, axis=3)
    preview = LinearPreview(8)
    before = preview.rgb(latents)  # unfitted: still an image
    assert before.shape == (2, 6, 5, 3) and before.dtype == np.uint8
    preview.fit(latents, decoded)
    expected = (np.clip(rgb / 2 + 0.5, 0, 1) * 255).round().astype(np.uint8)
    assert np.abs(preview.rgb(latents).astype(int) - expected).max() <= 1


def test_step_hook_sees_every_step_and_changes_no_image(tiny_package):
    pipeline = Pipeline.load(tiny_package)
    seen, progress, previews = [], [], []

    def on_step(step: DenoiseStep) -> None:
        seen.append((step.index, step.total, step.sample.shape))
        previews.append(pipeline.preview(step, slice(1, 2)))

    hooked = pipeline.generate("a red circle", seed=4, steps=6, n=2, on_step=on_step, progress=lambda i, total: progress.append(i))
    plain = pipeline.generate("a red circle", seed=4, steps=6, n=2)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(hooked, plain))
    total = seen[0][1]
    assert [s[0] for s in seen] == progress == list(range(1, total + 1))
    assert seen[0][2][0] == 2
    assert previews[-1].shape == (1, 8, 8, 3) and previews[-1].dtype == np.uint8  # the latent grid of a 64 px image
    assert pipeline._linear_preview.fitted  # taught by the first decode

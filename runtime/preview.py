"""Cheap previews of an image while it is being denoised (for streamed partial images).

A preview must cost a small fraction of a UNet step, or streaming would slow the final image.
Two ingredients:

* **What to show.** The latents in the middle of the loop are still mostly noise, so a
  preview shows the model's current estimate of the clean latents instead,
  ``x0 = (x_t - sqrt(1 - a_t) * eps) / sqrt(a_t)`` (epsilon prediction; v- and
  sample-prediction have their own closed forms), computed from the same UNet output the
  scheduler has just used. ``x_t`` is the scaled model input, which every scheduler here puts
  on the DDPM scale, so one formula serves all of them.
* **How to turn latents into pixels.** A package whose decoder is a tiny decoder (TAESD,
  recorded as ``components.vae_decoder.decoder.family == "taesd"``) decodes previews with it:
  it is already cheap. Otherwise a full VAE decode per preview would cost about as much as the
  final decode, so :class:`LinearPreview` maps each latent pixel to one RGB pixel with a
  per-package linear map (4 channels + bias -> RGB) fitted by least squares on the decodes
  the pipeline makes anyway (images of 4 or more steps, until 65536 latent pixels have been
  seen), against the decoded image averaged over each latent pixel's 8x8 block. It is blurry and a little off in colour, which is what a
  preview may be; it costs a matrix product on the ``h/8 x w/8`` latent grid. Before any
  decode has been seen it shows the first three latent channels, each normalised to its own
  range, so it never fails.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DenoiseStep:
    """What the denoising loop knows right after step ``index`` (1-based) of ``total``.

    ``model_input`` is the scaled input the UNet saw at ``timestep`` and ``noise_pred`` its
    guided output; ``sample`` is the scheduler's new latent. Arrays are the loop's own: copy
    them before keeping them past the callback.
    """

    index: int
    total: int
    timestep: float
    model_input: np.ndarray
    noise_pred: np.ndarray
    sample: np.ndarray


#: on_step(step): called by Pipeline.generate_batch after every denoising step.
StepCallback = Callable[[DenoiseStep], None]


def preview_steps(total: int, count: int) -> list[int]:
    """The 1-based steps after which ``count`` previews are taken, evenly spread before the end.

    Step ``total`` is the final image itself, so it is never a preview step; with fewer steps
    than previews asked for, fewer previews are taken (as the API allows).
    """
    if count <= 0 or total <= 1:
        return []
    steps = {round(total * k / (count + 1)) for k in range(1, count + 1)}
    return sorted(s for s in steps if 1 <= s < total)


def denoised_estimate(step: DenoiseStep, alphas_cumprod: np.ndarray, prediction_type: str) -> np.ndarray:
    """The clean-latent estimate ``x0`` at this step (see the module docstring)."""
    t = int(np.clip(round(float(step.timestep)), 0, len(alphas_cumprod) - 1))
    alpha = np.float32(alphas_cumprod[t])
    a, s = np.sqrt(alpha), np.sqrt(np.float32(1.0) - alpha)
    x, out = step.model_input.astype(np.float32), step.noise_pred.astype(np.float32)
    if prediction_type == "v_prediction":
        return a * x - s * out
    if prediction_type == "sample":
        return out
    return (x - s * out) / max(a, np.float32(1e-4))


class LinearPreview:
    """Latents -> RGB by a fitted linear map (see the module docstring)."""

    #: Latent pixels after which the fit stops learning (it has seen enough colours by then).
    ENOUGH = 1 << 16

    def __init__(self, factor: int) -> None:
        self.factor = int(factor)
        self.matrix: np.ndarray | None = None  # [channels + 1, 3], maps to [-1, 1] RGB
        self._xtx: np.ndarray | None = None
        self._xty: np.ndarray | None = None
        self.samples = 0

    @property
    def fitted(self) -> bool:
        return self.matrix is not None

    @property
    def learning(self) -> bool:
        return self.samples < self.ENOUGH

    def fit(self, latents: np.ndarray, decoded: np.ndarray) -> None:
        """Add one decode to the least-squares fit of RGB (block-averaged ``decoded``, [-1, 1])
        on the latent channels; the map is re-solved from the accumulated normal equations, so
        every decode until ``ENOUGH`` contributes."""
        b, c, h, w = latents.shape
        f = self.factor
        if decoded.shape[2] != h * f or decoded.shape[3] != w * f:
            return
        pooled = decoded.astype(np.float32).reshape(b, 3, h, f, w, f).mean(axis=(3, 5))
        x = np.concatenate([latents.astype(np.float64).transpose(0, 2, 3, 1).reshape(-1, c), np.ones((b * h * w, 1))], axis=1)
        y = pooled.astype(np.float64).transpose(0, 2, 3, 1).reshape(-1, 3)
        if not np.isfinite(x).all() or not np.isfinite(y).all():
            return
        if self._xtx is None or self._xtx.shape[0] != c + 1:
            self._xtx, self._xty, self.samples = np.zeros((c + 1, c + 1)), np.zeros((c + 1, 3)), 0
        xtx, xty = self._xtx, self._xty
        assert xtx is not None and xty is not None
        xtx += x.T @ x
        xty += x.T @ y
        self.samples += x.shape[0]
        if self.samples >= 4 * (c + 1):
            self.matrix = np.linalg.lstsq(xtx, xty, rcond=None)[0].astype(np.float32)
            log.debug("latent preview map fitted on %d latent pixels", self.samples)

    def rgb(self, latents: np.ndarray) -> np.ndarray:
        """``[B, C, h, w]`` latents -> ``[B, h, w, 3]`` uint8."""
        lat = latents.astype(np.float32).transpose(0, 2, 3, 1)
        if self.matrix is not None and self.matrix.shape[0] == lat.shape[-1] + 1:
            out = lat @ self.matrix[:-1] + self.matrix[-1]
            pixels = out / 2 + 0.5
        else:
            first = lat[..., :3] if lat.shape[-1] >= 3 else np.repeat(lat[..., :1], 3, axis=-1)
            low = first.min(axis=(1, 2), keepdims=True)
            high = first.max(axis=(1, 2), keepdims=True)
            pixels = (first - low) / np.maximum(high - low, 1e-6)
        return (np.clip(pixels, 0.0, 1.0) * 255).round().astype(np.uint8)


def decoded_to_rgb(decoded: np.ndarray) -> np.ndarray:
    """``[B, 3, H, W]`` in [-1, 1] -> ``[B, H, W, 3]`` uint8."""
    return (np.clip(decoded.astype(np.float32) / 2 + 0.5, 0.0, 1.0) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)


def prediction_type(scheduler_config: Mapping[str, Any]) -> str:
    return str(scheduler_config.get("prediction_type") or "epsilon")

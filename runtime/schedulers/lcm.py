"""Latent Consistency Model sampling (Luo et al. 2023), for LCM and LCM-LoRA models.

A consistency model maps any noisy latent straight to a clean estimate, so 1-8 steps suffice:
each step denoises fully (with the boundary-condition skip/out scalings) and, unless it is the
last, re-noises the estimate to the next timestep with fresh noise, so it needs ``noise``.
The timesteps are a subset of the ``original_inference_steps`` schedule the model was
distilled on, counted from the last train step (diffusers ignores ``timestep_spacing`` here,
and so do we: the schedule is already "trailing").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .base import Scheduler, Timestep, index_for_timestep, make_alphas_cumprod, threshold_sample

SIGMA_DATA = 0.5


class LCMScheduler(Scheduler):
    """numpy twin of ``diffusers.LCMScheduler`` (text-to-image: strength 1, no custom timesteps)."""

    DEFAULTS = {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "trained_betas": None,
        "original_inference_steps": 50,
        "clip_sample": False,
        "clip_sample_range": 1.0,
        "set_alpha_to_one": True,
        "steps_offset": 0,
        "prediction_type": "epsilon",
        "thresholding": False,
        "dynamic_thresholding_ratio": 0.995,
        "sample_max_value": 1.0,
        "timestep_spacing": "leading",
        "timestep_scaling": 10.0,
        "rescale_betas_zero_snr": False,
    }

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self._require_choice("prediction_type", ("epsilon", "sample", "v_prediction"))
        if not 1 <= int(cfg["original_inference_steps"]) <= int(cfg["num_train_timesteps"]):
            raise ValueError(
                "original_inference_steps must be between 1 and num_train_timesteps,"
                f" got {cfg['original_inference_steps']!r}"
            )
        self.alphas_cumprod = make_alphas_cumprod(cfg)
        self.final_alpha_cumprod = np.float32(1.0) if cfg["set_alpha_to_one"] else self.alphas_cumprod[0]
        self._step_index: int | None = None

    @property
    def needs_noise(self) -> bool:
        return True

    def set_timesteps(self, num_inference_steps: int) -> None:
        steps = self._check_steps(num_inference_steps)
        original = int(self.config["original_inference_steps"])
        if steps > original:
            raise ValueError(
                f"LCM runs at most original_inference_steps={original} steps (its distillation schedule), got {steps}"
            )
        k = self.config["num_train_timesteps"] // original
        origin = (np.arange(1, original + 1) * k - 1)[::-1]
        picks = np.floor(np.linspace(0, len(origin), num=steps, endpoint=False)).astype(np.int64)
        self.timesteps = origin[picks].astype(np.int64)
        self.num_inference_steps = steps
        self._step_index = None

    def _boundary_scalings(self, timestep: int) -> tuple[np.float32, np.float32]:
        """c_skip and c_out of the consistency parameterisation (they enforce f(x, 0) = x)."""
        scaled = np.float32(timestep) * np.float32(self.config["timestep_scaling"])
        var = np.float32(SIGMA_DATA**2)
        c_skip = var / (scaled * scaled + var)
        c_out = scaled / (scaled * scaled + var) ** np.float32(0.5)
        return c_skip, c_out

    def step(
        self, model_output: np.ndarray, timestep: Timestep, sample: np.ndarray, noise: np.ndarray | None = None
    ) -> np.ndarray:
        steps = self._require_timesteps()
        noise = self._noise(noise, sample)
        if self._step_index is None:
            self._step_index = index_for_timestep(self.timesteps, timestep)
        cfg = self.config
        index = self._step_index
        dtype = np.asarray(sample).dtype
        model_output = np.asarray(model_output, dtype=np.float32)
        sample = np.asarray(sample, dtype=np.float32)

        timestep = int(timestep)
        prev_timestep = int(self.timesteps[index + 1]) if index + 1 < len(self.timesteps) else timestep
        alpha_t = self.alphas_cumprod[timestep]
        alpha_prev = self.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else self.final_alpha_cumprod
        beta_t = np.float32(1) - alpha_t
        beta_prev = np.float32(1) - alpha_prev
        c_skip, c_out = self._boundary_scalings(timestep)

        if cfg["prediction_type"] == "epsilon":
            pred_x0 = (sample - np.sqrt(beta_t) * model_output) / np.sqrt(alpha_t)
        elif cfg["prediction_type"] == "sample":
            pred_x0 = model_output
        else:  # v_prediction
            pred_x0 = np.sqrt(alpha_t) * sample - np.sqrt(beta_t) * model_output
        if cfg["thresholding"]:
            pred_x0 = threshold_sample(pred_x0, cfg["dynamic_thresholding_ratio"], cfg["sample_max_value"])
        elif cfg["clip_sample"]:
            limit = np.float32(cfg["clip_sample_range"])
            pred_x0 = np.clip(pred_x0, -limit, limit)

        denoised = c_out * pred_x0 + c_skip * sample
        if index != steps - 1:
            prev = np.sqrt(alpha_prev) * denoised + np.sqrt(beta_prev) * noise
        else:
            prev = denoised
        self._step_index = index + 1
        return prev.astype(dtype, copy=False)

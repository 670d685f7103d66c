"""DDIM (Song et al. 2021): deterministic at ``eta=0``, DDPM-like ancestral sampling at ``eta=1``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .base import Scheduler, Timestep, make_alphas_cumprod, spaced_timesteps, threshold_sample


class DDIMScheduler(Scheduler):
    """numpy twin of ``diffusers.DDIMScheduler``.

    ``eta`` is a sampling option, not a config key (diffusers takes it in ``step``); with
    ``eta > 0`` the scheduler needs ``noise`` at each step.
    """

    DEFAULTS = {
        "num_train_timesteps": 1000,
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "trained_betas": None,
        "clip_sample": True,
        "set_alpha_to_one": True,
        "steps_offset": 0,
        "prediction_type": "epsilon",
        "thresholding": False,
        "dynamic_thresholding_ratio": 0.995,
        "clip_sample_range": 1.0,
        "sample_max_value": 1.0,
        "timestep_spacing": "leading",
        "rescale_betas_zero_snr": False,
    }

    def __init__(self, config: Mapping[str, Any] | None = None, eta: float = 0.0) -> None:
        super().__init__(config)
        self._require_choice("prediction_type", ("epsilon", "sample", "v_prediction"))
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be between 0 and 1, got {eta!r}")
        self.eta = float(eta)
        self.alphas_cumprod = make_alphas_cumprod(self.config)
        self.final_alpha_cumprod = np.float32(1.0) if self.config["set_alpha_to_one"] else self.alphas_cumprod[0]

    @property
    def needs_noise(self) -> bool:
        return self.eta > 0

    def set_timesteps(self, num_inference_steps: int) -> None:
        steps = self._check_steps(num_inference_steps)
        self.timesteps = spaced_timesteps(self.config, steps).round().astype(np.int64)
        self.num_inference_steps = steps

    def step(
        self, model_output: np.ndarray, timestep: Timestep, sample: np.ndarray, noise: np.ndarray | None = None
    ) -> np.ndarray:
        self._require_timesteps()
        dtype = np.asarray(sample).dtype
        noise = self._noise(noise, sample) if self.needs_noise else None
        model_output = np.asarray(model_output, dtype=np.float32)
        sample = np.asarray(sample, dtype=np.float32)
        cfg = self.config
        half = np.float32(0.5)

        timestep = int(timestep)
        # As in diffusers, the previous timestep is one stride back whatever the spacing.
        prev_timestep = timestep - cfg["num_train_timesteps"] // self.num_inference_steps
        alpha_t = self.alphas_cumprod[timestep]
        alpha_prev = self.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else self.final_alpha_cumprod
        beta_t = np.float32(1) - alpha_t

        if cfg["prediction_type"] == "epsilon":
            pred_x0 = (sample - beta_t**half * model_output) / alpha_t**half
            pred_eps = model_output
        elif cfg["prediction_type"] == "sample":
            pred_x0 = model_output
            pred_eps = (sample - alpha_t**half * pred_x0) / beta_t**half
        else:  # v_prediction
            pred_x0 = alpha_t**half * sample - beta_t**half * model_output
            pred_eps = alpha_t**half * model_output + beta_t**half * sample

        if cfg["thresholding"]:
            pred_x0 = threshold_sample(pred_x0, cfg["dynamic_thresholding_ratio"], cfg["sample_max_value"])
        elif cfg["clip_sample"]:
            limit = np.float32(cfg["clip_sample_range"])
            pred_x0 = np.clip(pred_x0, -limit, limit)

        beta_prev = np.float32(1) - alpha_prev
        variance = (beta_prev / beta_t) * (np.float32(1) - alpha_t / alpha_prev)
        std_dev = np.float32(self.eta) * variance**half
        direction = (np.float32(1) - alpha_prev - std_dev * std_dev) ** half * pred_eps
        prev = alpha_prev**half * pred_x0 + direction
        if noise is not None:
            prev = prev + std_dev * noise
        return prev.astype(dtype, copy=False)

"""Euler and Euler ancestral (Karras et al. 2022, k-diffusion's ``sample_euler[_ancestral]``).

Both work in sigma space: the latents are ``x0 + sigma * eps``, the UNet sees them scaled by
``1 / sqrt(sigma^2 + 1)``, and each step follows the probability-flow ODE from one sigma to
the next. The ancestral variant steps to a lower sigma and adds fresh noise back up to the
target, so it needs ``noise`` at each step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .base import Scheduler, Timestep, index_for_timestep, linspace_f32, make_alphas_cumprod, spaced_timesteps


class EulerScheduler(Scheduler):
    """numpy twin of ``diffusers.EulerDiscreteScheduler`` (without ``s_churn``).

    Supports linear and log-linear sigma interpolation, Karras and exponential sigmas,
    ``final_sigmas_type`` zero/sigma_min and ``timestep_type`` discrete/continuous. Beta sigmas
    need scipy and are not supported in the lean runtime.
    """

    DEFAULTS = {
        "num_train_timesteps": 1000,
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "trained_betas": None,
        "prediction_type": "epsilon",
        "interpolation_type": "linear",
        "use_karras_sigmas": False,
        "use_exponential_sigmas": False,
        "use_beta_sigmas": False,
        "sigma_min": None,
        "sigma_max": None,
        "timestep_spacing": "linspace",
        "timestep_type": "discrete",
        "steps_offset": 0,
        "rescale_betas_zero_snr": False,
        "final_sigmas_type": "zero",
    }
    PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "v_prediction", "sample", "original_sample")

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self._require_choice("prediction_type", self.PREDICTION_TYPES)
        if cfg.get("use_beta_sigmas"):
            raise ValueError("use_beta_sigmas needs scipy and is not supported by the nanoedge runtime")
        if cfg.get("use_karras_sigmas") and cfg.get("use_exponential_sigmas"):
            raise ValueError("only one of use_karras_sigmas and use_exponential_sigmas can be set")
        if "interpolation_type" in cfg:  # Euler ancestral has neither option
            self._require_choice("interpolation_type", ("linear", "log_linear"))
            self._require_choice("final_sigmas_type", ("zero", "sigma_min"))
        self.alphas_cumprod = make_alphas_cumprod(cfg)
        if cfg.get("rescale_betas_zero_snr"):
            # Zero terminal SNR means an infinite last sigma; diffusers caps it the same way.
            self.alphas_cumprod[-1] = 2.0**-24
        one = np.float32(1)
        self._train_sigmas = ((one - self.alphas_cumprod) / self.alphas_cumprod) ** np.float32(0.5)
        self.sigmas = np.concatenate([self._train_sigmas[::-1], [0.0]]).astype(np.float32)
        self._step_index: int | None = None

    @property
    def _continuous_v(self) -> bool:
        return self.config.get("timestep_type") == "continuous" and self.config["prediction_type"] == "v_prediction"

    @property
    def init_noise_sigma(self) -> float:
        max_sigma = self.sigmas.max()
        if self.config["timestep_spacing"] in ("linspace", "trailing"):
            return float(max_sigma)
        return float((max_sigma * max_sigma + np.float32(1)) ** np.float32(0.5))

    def set_timesteps(self, num_inference_steps: int) -> None:
        steps = self._check_steps(num_inference_steps)
        cfg = self.config
        timesteps = spaced_timesteps(cfg, steps).astype(np.float32)
        train_sigmas = self._train_sigmas
        log_sigmas = np.log(train_sigmas)
        if cfg.get("interpolation_type", "linear") == "linear":
            sigmas = np.interp(timesteps, np.arange(len(train_sigmas)), train_sigmas)
        else:  # log_linear: as diffusers, steps + 1 sigmas before the final one is appended
            sigmas = np.exp(linspace_f32(float(log_sigmas[-1]), float(log_sigmas[0]), steps + 1))
        if cfg.get("use_karras_sigmas"):
            sigmas = karras_sigmas(sigmas, steps, cfg.get("sigma_min"), cfg.get("sigma_max"))
            timesteps = sigma_to_t(sigmas, log_sigmas)
        elif cfg.get("use_exponential_sigmas"):
            sigmas = exponential_sigmas(sigmas, steps, cfg.get("sigma_min"), cfg.get("sigma_max"))
            timesteps = sigma_to_t(sigmas, log_sigmas)
        if cfg.get("final_sigmas_type", "zero") == "sigma_min":
            sigma_last = train_sigmas[0]
        else:
            sigma_last = 0.0
        self.sigmas = np.concatenate([sigmas, [sigma_last]]).astype(np.float32)
        if self._continuous_v:
            self.timesteps = (np.float32(0.25) * np.log(self.sigmas[:-1])).astype(np.float32)
        else:
            self.timesteps = np.asarray(timesteps).astype(np.float32)
        self.num_inference_steps = steps
        self._step_index = None

    def _index(self, timestep: Timestep) -> int:
        if self._step_index is None:
            self._step_index = index_for_timestep(self.timesteps, timestep)
        return self._step_index

    def scale_model_input(self, sample: np.ndarray, timestep: Timestep) -> np.ndarray:
        """Divide by ``sqrt(sigma^2 + 1)`` so the UNet sees unit-variance input as in training."""
        self._require_timesteps()
        sigma = self.sigmas[self._index(timestep)]
        sample = np.asarray(sample)
        return (sample / (sigma * sigma + np.float32(1)) ** np.float32(0.5)).astype(sample.dtype, copy=False)

    def _pred_original(self, model_output: np.ndarray, sample: np.ndarray, sigma: np.float32) -> np.ndarray:
        prediction = self.config["prediction_type"]
        if prediction == "epsilon":
            return sample - sigma * model_output
        if prediction == "v_prediction":
            one = np.float32(1)
            return model_output * (-sigma / (sigma * sigma + one) ** np.float32(0.5)) + sample / (sigma * sigma + one)
        return model_output  # "sample" / "original_sample"

    def step(
        self, model_output: np.ndarray, timestep: Timestep, sample: np.ndarray, noise: np.ndarray | None = None
    ) -> np.ndarray:
        self._require_timesteps()
        index = self._index(timestep)
        dtype = np.asarray(sample).dtype
        model_output = np.asarray(model_output, dtype=np.float32)
        sample = np.asarray(sample, dtype=np.float32)
        sigma = self.sigmas[index]
        pred_x0 = self._pred_original(model_output, sample, sigma)
        derivative = (sample - pred_x0) / sigma
        prev = sample + derivative * (self.sigmas[index + 1] - sigma)
        self._step_index = index + 1
        return prev.astype(dtype, copy=False)


class EulerAncestralScheduler(EulerScheduler):
    """numpy twin of ``diffusers.EulerAncestralDiscreteScheduler``: needs ``noise`` every step."""

    DEFAULTS = {
        "num_train_timesteps": 1000,
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "trained_betas": None,
        "prediction_type": "epsilon",
        "timestep_spacing": "linspace",
        "steps_offset": 0,
        "rescale_betas_zero_snr": False,
    }
    PREDICTION_TYPES = ("epsilon", "v_prediction")

    @property
    def needs_noise(self) -> bool:
        return True

    def step(
        self, model_output: np.ndarray, timestep: Timestep, sample: np.ndarray, noise: np.ndarray | None = None
    ) -> np.ndarray:
        self._require_timesteps()
        noise = self._noise(noise, sample)
        index = self._index(timestep)
        dtype = np.asarray(sample).dtype
        model_output = np.asarray(model_output, dtype=np.float32)
        sample = np.asarray(sample, dtype=np.float32)
        sigma_from, sigma_to = self.sigmas[index], self.sigmas[index + 1]
        pred_x0 = self._pred_original(model_output, sample, sigma_from)
        # Split the move to sigma_to into a deterministic part down to sigma_down and fresh
        # noise of std sigma_up, with sigma_down^2 + sigma_up^2 = sigma_to^2.
        to2, from2 = sigma_to * sigma_to, sigma_from * sigma_from
        sigma_up = (to2 * (from2 - to2) / from2) ** np.float32(0.5)
        sigma_down = np.maximum(to2 - sigma_up * sigma_up, np.float32(0)) ** np.float32(0.5)
        derivative = (sample - pred_x0) / sigma_from
        prev = sample + derivative * (sigma_down - sigma_from)
        prev = prev + noise * sigma_up
        self._step_index = index + 1
        return prev.astype(dtype, copy=False)


def sigma_to_t(sigmas: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
    """Fractional train timesteps whose (log-interpolated) sigma equals each of ``sigmas``."""
    out = []
    for sigma in np.asarray(sigmas, dtype=np.float64):
        log_sigma = np.log(np.maximum(sigma, 1e-10))
        dists = log_sigma - log_sigmas
        low = min(int(np.cumsum(dists >= 0).argmax()), len(log_sigmas) - 2)
        lo, hi = log_sigmas[low], log_sigmas[low + 1]
        w = np.clip((lo - log_sigma) / (lo - hi), 0, 1)
        out.append((1 - w) * low + w * (low + 1))
    return np.asarray(out, dtype=np.float64)


def karras_sigmas(
    in_sigmas: np.ndarray, steps: int, sigma_min: float | None = None, sigma_max: float | None = None
) -> np.ndarray:
    """Karras et al. (2022) eq. 5: sigmas evenly spaced in ``sigma^(1/7)``."""
    sigma_min = float(in_sigmas[-1]) if sigma_min is None else sigma_min
    sigma_max = float(in_sigmas[0]) if sigma_max is None else sigma_max
    rho = 7.0
    ramp = np.linspace(0, 1, steps)
    min_inv, max_inv = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (max_inv + ramp * (min_inv - max_inv)) ** rho


def exponential_sigmas(
    in_sigmas: np.ndarray, steps: int, sigma_min: float | None = None, sigma_max: float | None = None
) -> np.ndarray:
    """Sigmas evenly spaced in log space between ``sigma_max`` and ``sigma_min``."""
    sigma_min = float(in_sigmas[-1]) if sigma_min is None else sigma_min
    sigma_max = float(in_sigmas[0]) if sigma_max is None else sigma_max
    return np.exp(np.linspace(math.log(sigma_max), math.log(sigma_min), steps))

"""PNDM / PLMS (Liu et al. 2022), the scheduler Stable Diffusion 1.x ships with.

SD configs set ``skip_prk_steps=True``: a pure linear multistep (PLMS) method whose second
model call revisits the first timestep (a Heun-like warm-up), so ``timesteps`` holds one more
entry than the number of steps. With ``skip_prk_steps=False`` the first three steps are
Runge-Kutta (four calls each) as in the paper.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .base import Scheduler, Timestep, make_alphas_cumprod, spaced_timesteps


class PNDMScheduler(Scheduler):
    """numpy twin of ``diffusers.PNDMScheduler`` (epsilon and v_prediction)."""

    DEFAULTS = {
        "num_train_timesteps": 1000,
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "trained_betas": None,
        "skip_prk_steps": False,
        "set_alpha_to_one": False,
        "prediction_type": "epsilon",
        "timestep_spacing": "leading",
        "steps_offset": 0,
    }
    PNDM_ORDER = 4

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        self._require_choice("prediction_type", ("epsilon", "v_prediction"))
        self.alphas_cumprod = make_alphas_cumprod(self.config)
        self.final_alpha_cumprod = np.float32(1.0) if self.config["set_alpha_to_one"] else self.alphas_cumprod[0]
        self.prk_timesteps = np.zeros(0, dtype=np.int64)
        self._reset()

    def _reset(self) -> None:
        self.counter = 0
        self.ets: list[np.ndarray] = []
        self.cur_model_output: np.ndarray | float = 0.0
        self.cur_sample: np.ndarray | None = None

    def set_timesteps(self, num_inference_steps: int) -> None:
        steps = self._check_steps(num_inference_steps)
        skip_prk = bool(self.config["skip_prk_steps"])
        if not skip_prk and steps < self.PNDM_ORDER:
            raise ValueError(f"PNDM with Runge-Kutta steps (skip_prk_steps=False) needs at least 4 steps, not {steps}")
        ascending = spaced_timesteps(self.config, steps)[::-1].round().astype(np.int64)
        if skip_prk:
            self.prk_timesteps = np.zeros(0, dtype=np.int64)
            plms = np.concatenate([ascending[:-1], ascending[-2:-1], ascending[-1:]])[::-1]
        else:
            half = self.config["num_train_timesteps"] // steps // 2
            prk = ascending[-self.PNDM_ORDER :].repeat(2) + np.tile(np.array([0, half]), self.PNDM_ORDER)
            self.prk_timesteps = prk[:-1].repeat(2)[1:-1][::-1].copy()
            plms = ascending[:-3][::-1]
        self.timesteps = np.concatenate([self.prk_timesteps, plms]).astype(np.int64)
        self.num_inference_steps = steps
        self._reset()

    def step(
        self, model_output: np.ndarray, timestep: Timestep, sample: np.ndarray, noise: np.ndarray | None = None
    ) -> np.ndarray:
        self._require_timesteps()
        dtype = np.asarray(sample).dtype
        model_output = np.asarray(model_output, dtype=np.float32)
        sample = np.asarray(sample, dtype=np.float32)
        if self.counter < len(self.prk_timesteps) and not self.config["skip_prk_steps"]:
            prev = self._step_prk(model_output, int(timestep), sample)
        else:
            prev = self._step_plms(model_output, int(timestep), sample)
        self.counter += 1
        return prev.astype(dtype, copy=False)

    def _step_prk(self, model_output: np.ndarray, timestep: int, sample: np.ndarray) -> np.ndarray:
        """Fourth-order Runge-Kutta: four calls per step, combined with weights 1/6, 1/3, 1/3, 1/6."""
        half = self.config["num_train_timesteps"] // self.num_inference_steps // 2
        prev_timestep = timestep - (0 if self.counter % 2 else half)
        timestep = int(self.prk_timesteps[self.counter // 4 * 4])
        phase = self.counter % 4
        if phase == 0:
            self.cur_model_output = self.cur_model_output + (1 / 6) * model_output
            self.ets.append(model_output)
            self.cur_sample = sample
        elif phase in (1, 2):
            self.cur_model_output = self.cur_model_output + (1 / 3) * model_output
        else:
            model_output = self.cur_model_output + (1 / 6) * model_output
            self.cur_model_output = 0.0
        cur_sample = self.cur_sample if self.cur_sample is not None else sample
        return self._prev_sample(cur_sample, timestep, prev_timestep, model_output)

    def _step_plms(self, model_output: np.ndarray, timestep: int, sample: np.ndarray) -> np.ndarray:
        """Adams-Bashforth on the history of model outputs (order grows from 1 to 4)."""
        stride = self.config["num_train_timesteps"] // self.num_inference_steps
        prev_timestep = timestep - stride
        if self.counter != 1:
            self.ets = self.ets[-3:]
            self.ets.append(model_output)
        else:
            # Second call of the skip-PRK warm-up: redo the first step with the averaged output.
            prev_timestep, timestep = timestep, timestep + stride
        ets = self.ets
        if len(ets) == 1 and self.counter == 0:
            self.cur_sample = sample
        elif len(ets) == 1 and self.counter == 1:
            model_output = (model_output + ets[-1]) / 2
            if self.cur_sample is None:
                raise RuntimeError("PNDM's Runge-Kutta step lost its starting sample: call step() once per timestep, in order")
            sample, self.cur_sample = self.cur_sample, None
        elif len(ets) == 2:
            model_output = (3 * ets[-1] - ets[-2]) / 2
        elif len(ets) == 3:
            model_output = (23 * ets[-1] - 16 * ets[-2] + 5 * ets[-3]) / 12
        else:
            model_output = (1 / 24) * (55 * ets[-1] - 59 * ets[-2] + 37 * ets[-3] - 9 * ets[-4])
        return self._prev_sample(sample, timestep, prev_timestep, model_output)

    def _prev_sample(
        self, sample: np.ndarray, timestep: int, prev_timestep: int, model_output: np.ndarray
    ) -> np.ndarray:
        """x_(t-delta) from x_t and the (combined) noise estimate: formula (9) of the PNDM paper."""
        alpha_t = self.alphas_cumprod[timestep]
        alpha_prev = self.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else self.final_alpha_cumprod
        beta_t = np.float32(1) - alpha_t
        beta_prev = np.float32(1) - alpha_prev
        if self.config["prediction_type"] == "v_prediction":
            model_output = alpha_t ** np.float32(0.5) * model_output + beta_t ** np.float32(0.5) * sample
        sample_coeff = (alpha_prev / alpha_t) ** np.float32(0.5)
        denom = alpha_t * beta_prev ** np.float32(0.5) + (alpha_t * beta_t * alpha_prev) ** np.float32(0.5)
        return sample_coeff * sample - (alpha_prev - alpha_t) * model_output / denom

"""DPM-Solver++ multistep (Lu et al. 2022), "DPM++ 2M" in the web UIs.

A second-order multistep solver in log-SNR (lambda) time on the data prediction x0: each step
reuses the previous step's x0 estimate, so it costs one UNet call per step and converges in
20-25 steps. The first step is first order (no history yet) and, as diffusers does, the last
step too when the final sigma is zero or fewer than 15 steps are run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .base import Scheduler, Timestep, index_for_timestep, make_alphas_cumprod, threshold_sample
from .euler import exponential_sigmas, karras_sigmas, sigma_to_t


class DPMSolverMultistepScheduler(Scheduler):
    """numpy twin of ``diffusers.DPMSolverMultistepScheduler`` for ``dpmsolver++`` and
    ``sde-dpmsolver++`` (the latter needs ``noise``), solver orders 1-3, midpoint or heun.

    Karras, exponential and Lu lambda sigma schedules are supported; beta and flow-matching
    sigmas and the deprecated non-``++`` algorithms are not.
    """

    DEFAULTS = {
        "num_train_timesteps": 1000,
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "trained_betas": None,
        "solver_order": 2,
        "prediction_type": "epsilon",
        "thresholding": False,
        "dynamic_thresholding_ratio": 0.995,
        "sample_max_value": 1.0,
        "algorithm_type": "dpmsolver++",
        "solver_type": "midpoint",
        "lower_order_final": True,
        "euler_at_final": False,
        "use_karras_sigmas": False,
        "use_exponential_sigmas": False,
        "use_beta_sigmas": False,
        "use_lu_lambdas": False,
        "use_flow_sigmas": False,
        "flow_shift": 1.0,
        "final_sigmas_type": "zero",
        "lambda_min_clipped": -float("inf"),
        "variance_type": None,
        "timestep_spacing": "linspace",
        "steps_offset": 0,
        "rescale_betas_zero_snr": False,
        "use_dynamic_shifting": False,
        "time_shift_type": "exponential",
    }

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        # diffusers maps these legacy names onto the ones it implements; so do we.
        if cfg["algorithm_type"] == "deis":
            cfg["algorithm_type"] = "dpmsolver++"
        if cfg["solver_type"] in ("logrho", "bh1", "bh2"):
            cfg["solver_type"] = "midpoint"
        self._require_choice("algorithm_type", ("dpmsolver++", "sde-dpmsolver++"))
        self._require_choice("solver_type", ("midpoint", "heun"))
        self._require_choice("prediction_type", ("epsilon", "sample", "v_prediction"))
        self._require_choice("final_sigmas_type", ("zero", "sigma_min"))
        if cfg["solver_order"] not in (1, 2, 3):
            raise ValueError(f"solver_order must be 1, 2 or 3, got {cfg['solver_order']!r}")
        unsupported = [k for k in ("use_beta_sigmas", "use_flow_sigmas", "use_dynamic_shifting") if cfg[k]]
        unsupported += ["variance_type"] if cfg["variance_type"] is not None else []
        if unsupported:
            raise ValueError(f"{', '.join(unsupported)} not supported by the nanoedge runtime")
        if sum(bool(cfg[k]) for k in ("use_karras_sigmas", "use_exponential_sigmas", "use_lu_lambdas")) > 1:
            raise ValueError("only one of use_karras_sigmas, use_exponential_sigmas and use_lu_lambdas can be set")

        self.alphas_cumprod = make_alphas_cumprod(cfg)
        if cfg["rescale_betas_zero_snr"]:
            self.alphas_cumprod[-1] = 2.0**-24
        one = np.float32(1)
        alpha_t = np.sqrt(self.alphas_cumprod)
        sigma_t = np.sqrt(one - self.alphas_cumprod)
        self.lambda_t = np.log(alpha_t) - np.log(sigma_t)
        self._train_sigmas = ((one - self.alphas_cumprod) / self.alphas_cumprod) ** np.float32(0.5)
        self.sigmas = self._train_sigmas
        self._reset()

    def _reset(self) -> None:
        self.model_outputs: list[np.ndarray | None] = [None] * self.config["solver_order"]
        self.lower_order_nums = 0
        self._step_index: int | None = None

    @property
    def needs_noise(self) -> bool:
        return self.config["algorithm_type"] == "sde-dpmsolver++"

    def set_timesteps(self, num_inference_steps: int) -> None:
        steps = self._check_steps(num_inference_steps)
        cfg = self.config
        n_train = cfg["num_train_timesteps"]
        clipped = int(np.searchsorted(self.lambda_t[::-1], cfg["lambda_min_clipped"]))
        last = n_train - clipped
        spacing = cfg["timestep_spacing"]
        if spacing == "linspace":
            timesteps = np.linspace(0, last - 1, steps + 1).round()[::-1][:-1].astype(np.int64)
        elif spacing == "leading":
            ratio = last // (steps + 1)
            timesteps = (np.arange(0, steps + 1) * ratio).round()[::-1][:-1].astype(np.int64) + cfg["steps_offset"]
        else:  # trailing
            timesteps = np.arange(last, 0, -n_train / steps).round().astype(np.int64) - 1

        train_sigmas = self._train_sigmas
        log_sigmas = np.log(train_sigmas)
        round_t = cfg["beta_schedule"] != "squaredcos_cap_v2"
        # diffusers reads sigma_min/sigma_max from the config even though this class does not
        # declare them (they ride along from an Euler config); mirror that.
        sigma_min, sigma_max = self.hidden_config.get("sigma_min"), self.hidden_config.get("sigma_max")
        if cfg["use_karras_sigmas"]:
            sigmas = karras_sigmas(train_sigmas[::-1], steps, sigma_min, sigma_max)
            timesteps = sigma_to_t(sigmas, log_sigmas)
            timesteps = timesteps.round() if round_t else timesteps
        elif cfg["use_lu_lambdas"]:
            lambdas = log_sigmas[::-1]
            lambda_min, lambda_max = float(lambdas[-1]), float(lambdas[0])
            lambdas = lambda_max + np.linspace(0, 1, steps) * (lambda_min - lambda_max)
            sigmas = np.exp(lambdas)
            timesteps = sigma_to_t(sigmas, log_sigmas)
            timesteps = timesteps.round() if round_t else timesteps
        elif cfg["use_exponential_sigmas"]:
            sigmas = exponential_sigmas(train_sigmas[::-1], steps, sigma_min, sigma_max)
            timesteps = sigma_to_t(sigmas, log_sigmas)
        else:
            sigmas = np.interp(timesteps, np.arange(len(train_sigmas)), train_sigmas)
        sigma_last = train_sigmas[0] if cfg["final_sigmas_type"] == "sigma_min" else 0.0
        self.sigmas = np.concatenate([sigmas, [sigma_last]]).astype(np.float32)
        self.timesteps = np.asarray(timesteps).astype(np.int64)
        self.num_inference_steps = len(self.timesteps)
        self._reset()

    def _alpha_sigma(self, sigma: np.float32) -> tuple[np.float32, np.float32]:
        """VP-space (alpha_t, sigma_t) of a VE sigma: alpha = 1 / sqrt(sigma^2 + 1)."""
        alpha = np.float32(1) / (sigma * sigma + np.float32(1)) ** np.float32(0.5)
        return alpha, sigma * alpha

    @staticmethod
    def _lambda(alpha: np.float32, sigma: np.float32) -> np.float32:
        with np.errstate(divide="ignore"):  # sigma = 0 at the end: lambda = +inf, handled below
            return np.log(alpha) - np.log(sigma)

    def _convert_model_output(self, model_output: np.ndarray, sample: np.ndarray) -> np.ndarray:
        """The solver integrates the data prediction x0, whatever the model predicts."""
        cfg = self.config
        alpha, sigma = self._alpha_sigma(self.sigmas[self._step_index])
        if cfg["prediction_type"] == "epsilon":
            x0 = (sample - sigma * model_output) / alpha
        elif cfg["prediction_type"] == "sample":
            x0 = model_output
        else:  # v_prediction
            x0 = alpha * sample - sigma * model_output
        if cfg["thresholding"]:
            x0 = threshold_sample(x0, cfg["dynamic_thresholding_ratio"], cfg["sample_max_value"])
        return x0

    def step(
        self, model_output: np.ndarray, timestep: Timestep, sample: np.ndarray, noise: np.ndarray | None = None
    ) -> np.ndarray:
        self._require_timesteps()
        noise = self._noise(noise, sample) if self.needs_noise else None
        if self._step_index is None:
            self._step_index = index_for_timestep(self.timesteps, timestep, missing_is_last=True)
        cfg = self.config
        index, n = self._step_index, len(self.timesteps)
        dtype = np.asarray(sample).dtype
        model_output = np.asarray(model_output, dtype=np.float32)
        sample = np.asarray(sample, dtype=np.float32)

        few_steps = cfg["lower_order_final"] and n < 15
        zero_final = cfg["final_sigmas_type"] == "zero"
        lower_order_final = index == n - 1 and (cfg["euler_at_final"] or few_steps or zero_final)
        lower_order_second = index == n - 2 and few_steps

        x0 = self._convert_model_output(model_output, sample)
        self.model_outputs = [*self.model_outputs[1:], x0]

        order = cfg["solver_order"]
        if order == 1 or self.lower_order_nums < 1 or lower_order_final:
            prev = self._first_order(x0, sample, noise)
        elif order == 2 or self.lower_order_nums < 2 or lower_order_second:
            prev = self._second_order(sample, noise)
        else:
            prev = self._third_order(sample)
        self.lower_order_nums = min(self.lower_order_nums + 1, order)
        self._step_index = index + 1
        return prev.astype(dtype, copy=False)

    def _lambdas(self, *offsets: int) -> tuple[list[np.float32], list[np.float32], list[np.float32]]:
        """alpha, sigma and lambda at step_index + offset for each offset (1 = the target)."""
        if self._step_index is None:
            raise RuntimeError("DPMSolverMultistepScheduler: step() sets the step index before the solver runs")
        alphas, sigmas, lambdas = [], [], []
        for offset in offsets:
            alpha, sigma = self._alpha_sigma(self.sigmas[self._step_index + offset])
            alphas.append(alpha)
            sigmas.append(sigma)
            lambdas.append(self._lambda(alpha, sigma))
        return alphas, sigmas, lambdas

    def _previous_outputs(self, count: int) -> list[np.ndarray]:
        """The last ``count`` converted model outputs, newest first (a higher order needs them all)."""
        outputs = [self.model_outputs[-1 - i] for i in range(count)]
        if any(o is None for o in outputs):
            raise RuntimeError(f"DPMSolverMultistepScheduler: order {count} needs {count} earlier steps")
        return [o for o in outputs if o is not None]

    def _first_order(self, x0: np.ndarray, sample: np.ndarray, noise: np.ndarray | None) -> np.ndarray:
        (alpha_t, _), (sigma_t, sigma_s), (lambda_t, lambda_s) = self._lambdas(1, 0)
        h = lambda_t - lambda_s
        one = np.float32(1)
        if noise is None:
            return (sigma_t / sigma_s) * sample - (alpha_t * (np.exp(-h) - one)) * x0
        return (
            (sigma_t / sigma_s * np.exp(-h)) * sample
            + (alpha_t * (one - np.exp(np.float32(-2.0) * h))) * x0
            + sigma_t * np.sqrt(one - np.exp(np.float32(-2) * h)) * noise
        )

    def _second_order(self, sample: np.ndarray, noise: np.ndarray | None) -> np.ndarray:
        (alpha_t, _, _), (sigma_t, sigma_s0, _), (lambda_t, lambda_s0, lambda_s1) = self._lambdas(1, 0, -1)
        m0, m1 = self._previous_outputs(2)
        one, half = np.float32(1), np.float32(0.5)
        h, h_0 = lambda_t - lambda_s0, lambda_s0 - lambda_s1
        r0 = h_0 / h
        d0, d1 = m0, (one / r0) * (m0 - m1)
        heun = self.config["solver_type"] == "heun"
        if noise is None:
            x = (sigma_t / sigma_s0) * sample - (alpha_t * (np.exp(-h) - one)) * d0
            if heun:
                return x + (alpha_t * ((np.exp(-h) - one) / h + one)) * d1
            return x - half * (alpha_t * (np.exp(-h) - one)) * d1
        decay = one - np.exp(np.float32(-2.0) * h)
        x = (sigma_t / sigma_s0 * np.exp(-h)) * sample + (alpha_t * decay) * d0
        if heun:
            x = x + (alpha_t * (decay / (np.float32(-2.0) * h) + one)) * d1
        else:
            x = x + half * (alpha_t * decay) * d1
        return x + sigma_t * np.sqrt(one - np.exp(np.float32(-2) * h)) * noise

    def _third_order(self, sample: np.ndarray) -> np.ndarray:
        (alpha_t, _, _, _), (sigma_t, sigma_s0, _, _), lambdas = self._lambdas(1, 0, -1, -2)
        lambda_t, lambda_s0, lambda_s1, lambda_s2 = lambdas
        m0, m1, m2 = self._previous_outputs(3)
        one, half = np.float32(1), np.float32(0.5)
        h, h_0, h_1 = lambda_t - lambda_s0, lambda_s0 - lambda_s1, lambda_s1 - lambda_s2
        r0, r1 = h_0 / h, h_1 / h
        d1_0, d1_1 = (one / r0) * (m0 - m1), (one / r1) * (m1 - m2)
        d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
        d2 = (one / (r0 + r1)) * (d1_0 - d1_1)
        return (
            (sigma_t / sigma_s0) * sample
            - (alpha_t * (np.exp(-h) - one)) * m0
            + (alpha_t * ((np.exp(-h) - one) / h + one)) * d1
            - (alpha_t * ((np.exp(-h) - one + h) / (h * h) - half)) * d2
        )

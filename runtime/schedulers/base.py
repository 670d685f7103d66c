"""What every numpy scheduler shares: config resolution, noise schedules and small helpers.

The schedulers mirror diffusers' classes of the same name closely enough that a package's
``scheduler/scheduler_config.json`` means the same thing here as there, and a denoising loop
gives the same latents to float32 rounding (the tests hold every scheduler to 1e-5 against
diffusers). To get there the noise schedule is built with diffusers' own float32 arithmetic
(``torch.linspace`` float32, a cumulative product accumulated in float64) and the per-step
arithmetic stays in float32, as torch does it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, TypeAlias

import numpy as np

TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")

#: One entry of ``Scheduler.timesteps`` (any int/float form of it is accepted).
Timestep: TypeAlias = "int | float | np.number | np.ndarray"


class Scheduler(ABC):
    """A diffusion sampler: ``set_timesteps`` once, then ``scale_model_input`` and ``step`` per
    UNet call, in the order of ``timesteps``.

    Schedulers are stateful (step index, multistep history), so use a fresh one per generation.
    ``DEFAULTS`` holds the constructor defaults of the diffusers class this one mirrors: a config
    key outside it is ignored, a key missing from the config takes its default, as with
    diffusers' ``from_config``.
    """

    DEFAULTS: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self.config, self.hidden_config = resolve_config(self.DEFAULTS, config or {})
        if "timestep_spacing" in self.config:
            self._require_choice("timestep_spacing", TIMESTEP_SPACINGS)
        self.num_inference_steps: int | None = None
        self.timesteps: np.ndarray = np.zeros(0, dtype=np.int64)

    @property
    def needs_noise(self) -> bool:
        """True when ``step`` injects fresh noise, which the caller must then pass as ``noise``."""
        return False

    @property
    def init_noise_sigma(self) -> float:
        """Standard deviation of the initial latents: ``N(0, 1) * init_noise_sigma``."""
        return 1.0

    @abstractmethod
    def set_timesteps(self, num_inference_steps: int) -> None:
        """Fix the schedule for ``num_inference_steps`` steps and reset the step state."""

    def scale_model_input(self, sample: np.ndarray, timestep: Timestep) -> np.ndarray:
        """Scale the latents before they go into the UNet (identity unless sigma-parameterised)."""
        return sample

    @abstractmethod
    def step(
        self, model_output: np.ndarray, timestep: Timestep, sample: np.ndarray, noise: np.ndarray | None = None
    ) -> np.ndarray:
        """Take one denoising step from ``sample`` at ``timestep``; return the previous sample."""

    # -- helpers for subclasses ---------------------------------------------------------------

    def _require_choice(self, key: str, allowed: tuple[str, ...]) -> None:
        """Reject a config value this scheduler does not implement, naming the ones it does."""
        value = self.config.get(key)
        if value not in allowed:
            raise ValueError(f"{type(self).__name__}: {key} must be one of {', '.join(allowed)}, got {value!r}")

    def _check_steps(self, num_inference_steps: int) -> int:
        steps = int(num_inference_steps)
        if steps != num_inference_steps or not 1 <= steps <= int(self.config["num_train_timesteps"]):
            raise ValueError(
                f"num_inference_steps must be an integer between 1 and {self.config['num_train_timesteps']},"
                f" got {num_inference_steps!r}"
            )
        return steps

    def _require_timesteps(self) -> int:
        """The step count set by set_timesteps(); an error before it was called."""
        if self.num_inference_steps is None:
            raise RuntimeError(f"call {type(self).__name__}.set_timesteps() before step()")
        return self.num_inference_steps

    def _noise(self, noise: np.ndarray | None, sample: np.ndarray) -> np.ndarray:
        """Validate the caller's standard-normal noise; a stochastic step without it is an error."""
        if noise is None:
            raise ValueError(
                f"{type(self).__name__} adds noise at each step: pass noise= (standard normal, sample's shape)"
            )
        noise = np.asarray(noise, dtype=np.float32)
        if noise.shape != np.shape(sample):
            raise ValueError(f"noise must have the sample's shape {np.shape(sample)}, got {noise.shape}")
        return noise


def resolve_config(defaults: Mapping[str, Any], config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a diffusers scheduler config into this class's settings and the rest.

    Keys that diffusers recorded in ``_use_default_values`` were defaults of the class that
    wrote the file, so (as in diffusers) they do not override this class's own defaults. The
    rest (``hidden``) is kept because a few diffusers code paths read foreign keys with
    ``hasattr(config, ...)``.
    """
    used_defaults = set(config.get("_use_default_values") or ())
    given = {k: v for k, v in config.items() if k not in used_defaults and k != "_use_default_values"}
    resolved = dict(defaults)
    resolved.update({k: v for k, v in given.items() if k in defaults})
    hidden = {k: v for k, v in given.items() if k not in defaults and not k.startswith("_")}
    return resolved, hidden


def linspace_f32(start: float, end: float, steps: int) -> np.ndarray:
    """``torch.linspace(start, end, steps, dtype=torch.float32)`` bit for bit.

    torch's CPU kernel fills the first half forwards and the second half backwards from a
    float32 step with a fused multiply-add. ``np.linspace`` differs in the last bit for about a
    third of the betas, which alone pushes several parity tests past 1e-5.
    """
    a, b = np.float32(start), np.float32(end)
    if steps == 1:
        return np.array([a], dtype=np.float32)
    step = np.float64((b - a) / np.float32(steps - 1))
    idx = np.arange(steps, dtype=np.float64)
    out = np.where(idx < steps // 2, np.float64(a) + step * idx, np.float64(b) - step * (steps - 1 - idx))
    return out.astype(np.float32)


def cumprod_f32(values: np.ndarray) -> np.ndarray:
    """``torch.cumprod`` on float32: accumulated in float64, each prefix rounded to float32."""
    return np.cumprod(values.astype(np.float64)).astype(np.float32)


def _betas_for_alpha_bar(num_train_timesteps: int, max_beta: float = 0.999) -> np.ndarray:
    """The cosine ("squaredcos_cap_v2") schedule of Nichol & Dhariwal, as diffusers builds it."""

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [
        min(1 - alpha_bar((i + 1) / num_train_timesteps) / alpha_bar(i / num_train_timesteps), max_beta)
        for i in range(num_train_timesteps)
    ]
    return np.asarray(betas, dtype=np.float32)


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Rescale betas to zero terminal SNR (arXiv 2305.08891, algorithm 1), in float32."""
    alphas_bar_sqrt = np.sqrt(cumprod_f32(np.float32(1.0) - betas))
    first, last = alphas_bar_sqrt[0], alphas_bar_sqrt[-1]
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * (first / (first - last))
    alphas_bar = alphas_bar_sqrt**2
    alphas = np.concatenate([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
    return (np.float32(1.0) - alphas).astype(np.float32)


def make_alphas_cumprod(config: Mapping[str, Any]) -> np.ndarray:
    """The training noise schedule ``alphas_cumprod`` (float32, one value per train timestep)."""
    n = int(config["num_train_timesteps"])
    schedule = config.get("beta_schedule", "linear")
    if config.get("trained_betas") is not None:
        betas = np.asarray(config["trained_betas"], dtype=np.float32)
    elif schedule == "linear":
        betas = linspace_f32(config["beta_start"], config["beta_end"], n)
    elif schedule == "scaled_linear":
        betas = linspace_f32(config["beta_start"] ** 0.5, config["beta_end"] ** 0.5, n) ** 2
    elif schedule == "squaredcos_cap_v2":
        betas = _betas_for_alpha_bar(n)
    else:
        raise ValueError(f"beta_schedule {schedule!r} is not supported (linear, scaled_linear, squaredcos_cap_v2)")
    if config.get("rescale_betas_zero_snr", False):
        betas = rescale_zero_terminal_snr(betas)
    return cumprod_f32(np.float32(1.0) - betas)


def threshold_sample(sample: np.ndarray, ratio: float, max_value: float) -> np.ndarray:
    """Dynamic thresholding (Imagen): clip each item's x0 to its ``ratio`` quantile and rescale."""
    flat = sample.reshape(sample.shape[0], -1)
    s = np.quantile(np.abs(flat), ratio, axis=1).astype(flat.dtype)
    s = np.clip(s, 1, max_value).astype(flat.dtype)[:, None]
    return (np.clip(flat, -s, s) / s).reshape(sample.shape)


def index_for_timestep(timesteps: np.ndarray, timestep: Timestep, missing_is_last: bool = False) -> int:
    """Where ``timestep`` sits in the schedule; the second match when it appears twice.

    diffusers picks the second occurrence so that a schedule with a repeated first timestep
    (img2img) does not skip a sigma; we do the same so the step index agrees with it.
    """
    matches = np.flatnonzero(timesteps == np.asarray(timestep, dtype=timesteps.dtype))
    if len(matches) == 0:
        if missing_is_last:
            return len(timesteps) - 1
        raise ValueError(f"timestep {timestep!r} is not in this scheduler's timesteps")
    return int(matches[1] if len(matches) > 1 else matches[0])


def spaced_timesteps(config: Mapping[str, Any], num_inference_steps: int) -> np.ndarray:
    """Descending float64 train timesteps for the configured ``timestep_spacing``.

    The three spacings of arXiv 2305.08891 table 2: ``leading`` (SD 1.x default, skips the
    noisiest timestep), ``trailing`` (starts at the last train step; what few-step turbo/LCM
    models need) and ``linspace``. Callers cast to their own dtype as their diffusers class does.
    """
    n_train = int(config["num_train_timesteps"])
    spacing = config["timestep_spacing"]
    if spacing == "linspace":
        return np.linspace(0, n_train - 1, num_inference_steps)[::-1].copy()
    if spacing == "leading":
        ratio = n_train // num_inference_steps
        return (np.arange(0, num_inference_steps) * ratio).round()[::-1] + config["steps_offset"]
    if spacing == "trailing":
        return np.arange(n_train, 0, -n_train / num_inference_steps).round() - 1
    raise ValueError(f"timestep_spacing must be one of {', '.join(TIMESTEP_SPACINGS)}, got {spacing!r}")

"""The diffusion objective's math: timestep draws, targets, min-SNR loss weights, the
learning-rate curve and the weight EMA.

Pure tensor functions with no model or data in them, so tests and bench/diagnose_demo.py can
check each one alone.
"""

from __future__ import annotations

import math

import torch


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


class _Ema:
    """Exponential moving average of a parameter list (what gets saved: it samples cleaner)."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float) -> None:
        self.params = params
        self.decay = decay
        self.shadow = [p.detach().clone() for p in params]
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - decay)

    @torch.no_grad()
    def copy_to(self, params: list[torch.nn.Parameter]) -> None:
        for target, value in zip(params, self.shadow):
            target.copy_(value)


def loss_weights(snr: torch.Tensor, gamma: float, prediction_type: str, v_weighting: str = "keep-noise") -> torch.Tensor:
    """Per-sample weights of the MSE on the model's target (min-SNR-gamma style).

    Epsilon: min(snr, gamma) / snr (Hang et al.). V-prediction: the v error is the x0 error
    times (snr + 1), so min(snr + 1, gamma) / (snr + 1) caps the easy low-noise steps the same
    way but keeps weight 1 at the pure-noise end (the usual min(snr, gamma) / (snr + 1) would
    give it 0, which is exactly where the layout has to come from the prompt). gamma <= 0: 1.

    ``v_weighting="epsilon"`` is that usual form: the clean-image error of every step weighted
    min(snr, gamma), as the epsilon objective weights it. The pure-noise end, whose error is
    the largest and cannot shrink below the spread of the scenes a prompt allows, then stops
    dominating the gradient, which is what the mid-noise steps (where shapes are drawn) need.
    """
    if v_weighting not in ("keep-noise", "epsilon"):
        raise ValueError(f"v_weighting must be keep-noise or epsilon, not {v_weighting!r}")
    if gamma <= 0:
        return torch.ones_like(snr)
    if prediction_type == "v_prediction":
        if v_weighting == "epsilon":
            return torch.clamp(snr, max=gamma) / (snr + 1)
        return torch.clamp(snr + 1, max=gamma) / (snr + 1)
    return torch.clamp(snr, max=gamma) / snr


def sample_timesteps(count: int, total: int, power: float, generator: torch.Generator) -> torch.Tensor:
    """Training timesteps: uniform for ``power`` 1 (the shipped recipe's exact draw), else
    ``total * (1 - (1 - u) ** power)``, which for power > 1 favours the noisy end."""
    if power == 1.0:
        return torch.randint(0, total, (count,), generator=generator)
    u = torch.rand(count, generator=generator)
    return (total * (1 - (1 - u) ** power)).long().clamp(0, total - 1)


def training_target(z0: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """What the UNet learns to output for ``sqrt(a) z0 + sqrt(1 - a) noise``: the noise, or v."""
    if prediction_type == "v_prediction":
        return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * z0
    return noise

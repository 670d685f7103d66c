"""The training recipe: every knob of a run (TrainConfig) and the diffusion phases it lists.

Kept apart from the loops so the CLI, the checkpoint loader and the previews can read a recipe
without importing the trainer; ``training.json`` records one of these as a dict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .configs import scheduler_config


@dataclass
class TrainConfig:
    """Every knob of a training run; the defaults are the shipped model's recipe."""

    seed: int = 0
    scenes: int = 12000
    vae_steps: int = 2000
    vae_batch: int = 16
    vae_crop: int = 32
    vae_lr: float = 2e-3
    vae_kl_weight: float = 1e-6
    # The shipped recipe has four phases (docs/demo-model.md, fifth round, run J): 2,500 steps
    # with the epsilon objective's weighting first (the text encoder learns to tell circle from
    # square before anything else), 5,000 that favour the noisy end with weight 1 at pure noise
    # (where the prompt must set the layout), 2,000 uniform steps at a lower rate (position),
    # 2,000 with the epsilon weighting again (colour and shape).
    unet_steps: int = 2500
    unet_batch: int = 32
    unet_lr: float = 1e-3
    warmup_steps: int = 100
    ema_decay: float = 0.998
    caption_dropout: float = 0.1
    min_snr_gamma: float = 5.0
    # V-prediction only: "keep-noise" keeps weight 1 at the pure-noise step (layout from the
    # prompt); "epsilon" weights each step's clean-image error as the epsilon objective does
    # (min(snr, gamma)), so the noisy steps stop dominating the gradient (shapes).
    v_weighting: str = "epsilon"
    # More diffusion phases after the first (which unet_steps, unet_lr, timestep_power and
    # v_weighting describe): "STEPS:LR:POWER:WEIGHTING" items separated by commas. Each starts
    # from the EMA weights with a fresh optimizer, warm-up, cosine cycle and EMA, exactly as
    # --init-from continues a saved checkpoint (tests/test_demo_training.py checks the two agree).
    later_phases: str = "5000:1e-3:2:keep-noise,2000:3e-4:1:keep-noise,2000:3e-4:1:epsilon"
    # Per caption, each of the colour, shape and position words is left out with this
    # probability (data.draw_captions), in the first phase; a later phase's fifth field sets its own.
    attribute_dropout: float = 0.0
    prediction_type: str = "v_prediction"
    zero_terminal_snr: bool = True
    timestep_spacing: str = "trailing"
    # The global prompt path (configs.unet_config): pooled text into the time embedding, AdaGN.
    unet_global_text: bool = True
    unet_scale_shift: bool = True
    # Training timesteps t = T * (1 - (1 - u) ** power), u uniform: 1 is uniform, 2 draws the
    # noisy half (where the layout is decided) 2.4 times as often as the clean half (71% : 29%).
    timestep_power: float = 1.0
    # x/y coordinate planes appended to the UNet's input (export/coordinates.py): with them,
    # v-prediction and zero terminal SNR the model places the object where the prompt says
    # (held-out position 11% without, 100% shipped; docs/demo-model.md, fourth and fifth rounds).
    unet_coordinates: bool = True
    preview_every: int = 1750
    preview_steps: int = 20
    preview_guidance: float = 5.0
    # One thread: on a shared CPU, two threads wait on each other and run 2-3x slower.
    threads: int = 1

    @classmethod
    def from_record(cls, recipe: dict[str, Any]) -> "TrainConfig":
        """The config a checkpoint's ``training.json`` recipe describes.

        Fields added to the trainer after that run are missing from its record; they take the
        value that reproduces what the trainer did before they existed (one phase, no
        attribute dropout, the keep-noise weighting), not today's defaults.
        """
        return cls(**{**_BEFORE_THEY_EXISTED, **recipe})


#: What a recorded recipe that lacks these fields ran with (see TrainConfig.from_record).
_BEFORE_THEY_EXISTED: dict[str, Any] = {"later_phases": "", "attribute_dropout": 0.0, "v_weighting": "keep-noise"}

Report = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class Phase:
    """One stretch of diffusion training: its steps, peak learning rate and timestep mix."""

    steps: int
    lr: float
    timestep_power: float
    v_weighting: str
    attribute_dropout: float = 0.0


def training_phases(cfg: TrainConfig) -> list[Phase]:
    """The first phase from cfg's own fields, then those ``cfg.later_phases`` lists
    (``STEPS:LR:POWER:WEIGHTING[:ATTRIBUTE_DROPOUT]``)."""
    phases = [Phase(cfg.unet_steps, cfg.unet_lr, cfg.timestep_power, cfg.v_weighting, cfg.attribute_dropout)]
    for item in filter(None, (part.strip() for part in cfg.later_phases.split(","))):
        fields = item.split(":")
        try:
            steps, lr, power, weighting, *rest = fields
            if len(rest) > 1:
                raise ValueError
            phase = Phase(int(steps), float(lr), float(power), weighting, float(rest[0]) if rest else 0.0)
        except ValueError:
            raise ValueError(
                f"later phase {item!r} is not STEPS:LR:POWER:WEIGHTING[:ATTRIBUTE_DROPOUT] (e.g. 3000:3e-4:1:epsilon:0.2)"
            ) from None
        if (
            phase.steps < 1 or phase.lr <= 0 or phase.timestep_power <= 0
            or phase.v_weighting not in ("keep-noise", "epsilon") or not 0 <= phase.attribute_dropout < 1
        ):
            raise ValueError(f"later phase {item!r}: steps >= 1, lr > 0, power > 0, weighting keep-noise or epsilon, dropout in [0, 1)")
        phases.append(phase)
    return phases


def _schedule(cfg: TrainConfig) -> dict[str, Any]:
    return scheduler_config(cfg.prediction_type, cfg.zero_terminal_snr, cfg.timestep_spacing)

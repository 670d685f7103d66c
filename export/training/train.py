"""Train the demo model: VAE first, then text encoder + UNet on cached latents.

Why two stages: the VAE only has to reconstruct flat shapes, which it learns in minutes;
freezing it and caching latents once makes every diffusion step a 16x16 UNet step, which is
what makes training on two CPU cores fit in well under an hour. The diffusion stage trains
the text encoder jointly (there is no pretrained CLIP here), with min-SNR loss weighting,
10% empty captions for classifier-free guidance and an EMA of the weights, which is what is
saved. Previews during training are scored by the same judge ``nanoedge eval`` uses.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from nanoedge.export.coordinates import CONFIG_KEY as COORDINATES_KEY
from nanoedge.export.coordinates import run_unet
from nanoedge.runtime.demo.judge import judge_image
from nanoedge.runtime.demo.world import evaluation_prompts

from .configs import TEXT_MAX_LENGTH, UNET_CONFIG, VAE_CONFIG, scheduler_config, text_encoder_config, unet_config
from .data import SceneSet, draw_captions, render_scene_set
from .tokenizer import BOS, EOS, PAD, build_tokenizer, save_tokenizer

log = logging.getLogger(__name__)


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


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


def train_vae(data: SceneSet, cfg: TrainConfig, report: Report):
    """Stage 1: the KL autoencoder (reconstruction MSE + L1, a tiny KL term)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(cfg.seed)
    vae = AutoencoderKL(**VAE_CONFIG)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _lr_factor(s, cfg.vae_steps, min(cfg.warmup_steps, cfg.vae_steps // 10 + 1))
    )
    rng = np.random.default_rng(cfg.seed + 1)
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    started = time.perf_counter()
    vae.train()
    for step in range(cfg.vae_steps):
        index = rng.integers(0, len(data), cfg.vae_batch)
        x = _object_crops(data, index, cfg.vae_crop, rng) if cfg.vae_crop < data.images.shape[-1] else data.images[torch.from_numpy(index)]
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=generator)).sample
        rec_loss = F.mse_loss(recon, x) + 0.1 * F.l1_loss(recon, x)
        loss = rec_loss + cfg.vae_kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == cfg.vae_steps - 1:
            report("vae", {"step": step, "loss": rec_loss.item(), "seconds": time.perf_counter() - started})
        if (step + 1) % 250 == 0:
            vae.eval()
            report("vae-check", {"step": step + 1, **_vae_check(vae, data)})
            vae.train()
    return vae.eval()


def _object_crops(data: SceneSet, index: np.ndarray, crop: int, rng: np.random.Generator) -> torch.Tensor:
    """Crops (at multiples of 4) that hold each scene's shape somewhere inside.

    The VAE has no attention, so crops train it like whole images at a quarter of the cost;
    centring them on the shape spends that effort on edges and corners, not flat background.
    """
    side = data.images.shape[-1]
    crops = []
    for i in index:
        scene = data.scenes[int(i)]
        top = int(np.clip(scene.cy - crop // 2 + rng.integers(-8, 9), 0, side - crop)) // 4 * 4
        left = int(np.clip(scene.cx - crop // 2 + rng.integers(-8, 9), 0, side - crop)) // 4 * 4
        crops.append(data.images[int(i), :, top : top + crop, left : left + crop])
    return torch.stack(crops)


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Posterior means of every image (the cached training latents, before scaling)."""
    return torch.cat([vae.encode(images[i : i + batch]).latent_dist.mean for i in range(0, len(images), batch)])


@torch.no_grad()
def _vae_check(vae, data: SceneSet, count: int = 64) -> dict[str, float]:
    """Judge reconstructions of training scenes: the VAE must keep colour, shape and position."""
    from PIL import Image

    from nanoedge.runtime.demo.world import canonical_caption

    recon = vae.decode(vae.encode(data.images[:count]).latent_dist.mean).sample
    arrays = ((recon.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    right = [
        judge_image(Image.fromarray(a), canonical_caption(s.colour, s.shape, s.position)).all_correct for a, s in zip(arrays, data.scenes)
    ]
    return {"vae_mse": float(F.mse_loss(recon, data.images[:count])), "vae_judged_right": float(np.mean(right))}


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


def _token_ids(tokenizer, texts: list[str]) -> torch.Tensor:
    return torch.tensor([e.ids for e in tokenizer.encode_batch(texts)], dtype=torch.long)


@torch.no_grad()
def sample_images(
    text_encoder, unet, vae, tokenizer, prompts: list[str], seed: int, steps: int, guidance: float, scaling: float, schedule: dict[str, Any]
) -> list:
    """DDIM + classifier-free guidance in torch, for previews while training."""
    from diffusers import DDIMScheduler
    from PIL import Image

    scheduler = DDIMScheduler.from_config(schedule)
    scheduler.set_timesteps(steps)
    cond = text_encoder(_token_ids(tokenizer, prompts))[0]
    uncond = text_encoder(_token_ids(tokenizer, [""] * len(prompts)))[0]
    states = torch.cat([uncond, cond])
    size = UNET_CONFIG["sample_size"]
    latents = torch.randn(len(prompts), int(unet.config.out_channels), size, size, generator=torch.Generator().manual_seed(seed))
    for t in scheduler.timesteps:
        out = run_unet(unet, torch.cat([latents, latents]), t, states)
        noise_uncond, noise_cond = out.chunk(2)
        latents = scheduler.step(noise_uncond + guidance * (noise_cond - noise_uncond), t, latents).prev_sample
    pixels = vae.decode(latents / scaling).sample
    arrays = ((pixels.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in arrays]


def _preview(text_encoder, unet, vae, tokenizer, cfg: TrainConfig, scaling: float, path: Path) -> dict[str, float]:
    """Sample the evaluation prompts once each, score them with the judge, save a strip."""
    from PIL import Image

    prompts = evaluation_prompts()
    images = sample_images(
        text_encoder,
        unet,
        vae,
        tokenizer,
        [p.prompt for p in prompts],
        cfg.seed,
        cfg.preview_steps,
        cfg.preview_guidance,
        scaling,
        _schedule(cfg),
    )
    scores: dict[str, list[bool]] = {}
    for p, image in zip(prompts, images):
        for attribute, ok in judge_image(image, p.prompt).correct.items():
            scores.setdefault(f"{'held_out' if p.held_out else 'seen'}_{attribute}", []).append(ok)
    sheet = Image.new("RGB", (64 * len(images), 64))
    for i, image in enumerate(images):
        sheet.paste(image, (64 * i, 0))
    sheet.save(path)
    return {k: round(float(np.mean(v)), 3) for k, v in sorted(scores.items())}


def _schedule(cfg: TrainConfig) -> dict[str, Any]:
    return scheduler_config(cfg.prediction_type, cfg.zero_terminal_snr, cfg.timestep_spacing)


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


def build_unet(global_text: bool, scale_shift: bool, coordinates: bool):
    """A fresh UNet of the demo configs; a coordinate UNet records so in its config (for export)."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(**unet_config(global_text, scale_shift, coordinates))
    if coordinates:
        unet.register_to_config(**{COORDINATES_KEY: 2})
    return unet


def load_for_fine_tuning(folder: Path, cfg: TrainConfig, tokenizer) -> tuple[Any, Any]:
    """The text encoder and UNet of a demo checkpoint, to continue training from.

    Refuses a checkpoint the recipe ``cfg`` could not continue: another architecture, another
    prediction target or noise schedule, or another vocabulary would silently train a
    different model than the one the flags describe.
    """
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    folder = Path(folder)
    if not (folder / "unet" / "config.json").exists():
        raise FileNotFoundError(f"{folder} is not a demo checkpoint (no unet/config.json): pass a folder this trainer wrote")
    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    # the config build_unet would give (without building a UNet to read it)
    wanted = {
        **unet_config(cfg.unet_global_text, cfg.unet_scale_shift, cfg.unet_coordinates),
        COORDINATES_KEY: 2 if cfg.unet_coordinates else None,
    }
    different = [
        k
        for k in ("in_channels", "block_out_channels", "addition_embed_type", "resnet_time_scale_shift", COORDINATES_KEY)
        if unet.config.get(k) != wanted.get(k)
    ]
    if different:
        raise ValueError(
            f"{folder}'s UNet differs from the recipe's in {', '.join(different)}: pass the same architecture flags it was trained with"
        )
    saved = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    schedule = _schedule(cfg)
    for key in ("prediction_type", "rescale_betas_zero_snr", "beta_schedule"):
        if saved.get(key, False) != schedule.get(key, False):
            raise ValueError(
                f"{folder} was trained with {key}={saved.get(key, False)!r}, the recipe "
                f"asks {schedule.get(key, False)!r}: pass the same schedule flags"
            )
    saved_vocab = json.loads((folder / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"]
    if saved_vocab != tokenizer.get_vocab():
        raise ValueError(f"{folder}'s tokenizer has another vocabulary than this world's: it cannot be continued here")
    return CLIPTextModel.from_pretrained(folder / "text_encoder"), unet


def train_diffusion(
    data: SceneSet,
    latents: torch.Tensor,
    vae,
    tokenizer,
    cfg: TrainConfig,
    report: Report,
    preview_dir: Path | None,
    init_from: "Path | None" = None,
):
    """Stage 2: text encoder + UNet on SD's scaled-linear schedule (epsilon or v-prediction).

    ``init_from``: start from that checkpoint's text encoder and UNet instead of fresh weights
    (a second stage with another timestep mix, or a fine-tune); the rest of the run is the same.
    The phases (``training_phases``) run one after the other on the same weights.
    """
    from diffusers import DDPMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(cfg.seed + 2)
    vocab = tokenizer.get_vocab()
    if init_from is not None:
        text_encoder, unet = load_for_fine_tuning(init_from, cfg, tokenizer)
    else:
        text_encoder = CLIPTextModel(CLIPTextConfig(**text_encoder_config(len(vocab), vocab[BOS], vocab[EOS], vocab[PAD])))
        unet = build_unet(cfg.unet_global_text, cfg.unet_scale_shift, cfg.unet_coordinates)
    noise_schedule = DDPMScheduler.from_config(_schedule(cfg))
    alphas = noise_schedule.alphas_cumprod.float()
    scaling = float(vae.config.scaling_factor)
    params = [p for p in list(unet.parameters()) + list(text_encoder.parameters()) if p.requires_grad]
    phases = training_phases(cfg)
    total_steps = sum(p.steps for p in phases)
    started = time.perf_counter()
    previews: dict[int, dict[str, float]] = {}
    offset = 0
    ema = None
    for number, phase in enumerate(phases):
        if ema is not None:  # a later phase continues from the EMA weights, as --init-from does
            ema.copy_to(params)
            report("phase", {"phase": number + 1, "step": offset, **asdict(phase)})
        optimizer = torch.optim.AdamW(params, lr=phase.lr, weight_decay=0.01)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s, n=phase.steps: _lr_factor(s, n, cfg.warmup_steps))
        ema = _Ema(params, cfg.ema_decay)
        rng = np.random.default_rng(cfg.seed + 2)
        generator = torch.Generator().manual_seed(cfg.seed + 2)
        running = None
        for phase_step in range(phase.steps):
            step = offset + phase_step
            unet.train()
            text_encoder.train()
            index = rng.integers(0, len(data), cfg.unet_batch)
            ids = _token_ids(tokenizer, draw_captions(data.scenes, index, rng, cfg.caption_dropout, phase.attribute_dropout))
            z0 = latents[torch.from_numpy(index)] * scaling
            noise = torch.randn(z0.shape, generator=generator)
            t = sample_timesteps(cfg.unet_batch, len(alphas), phase.timestep_power, generator)
            a = alphas[t].view(-1, 1, 1, 1)
            noisy = a.sqrt() * z0 + (1 - a).sqrt() * noise
            pred = run_unet(unet, noisy, t, text_encoder(ids)[0])
            target = training_target(z0, noise, a, cfg.prediction_type)
            weight = loss_weights(alphas[t] / (1 - alphas[t]), cfg.min_snr_gamma, cfg.prediction_type, phase.v_weighting)
            loss = (weight * F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            ema.update()
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            last = step == total_steps - 1
            if step % 50 == 0 or last:
                report("unet", {"step": step, "loss": running, "lr": schedule.get_last_lr()[0], "seconds": time.perf_counter() - started})
            if preview_dir is not None and cfg.preview_every and ((step + 1) % cfg.preview_every == 0 or last):
                current = [p.detach().clone() for p in params]
                ema.copy_to(params)
                unet.eval()
                text_encoder.eval()
                previews[step + 1] = _preview(text_encoder, unet, vae, tokenizer, cfg, scaling, preview_dir / f"preview-{step + 1:05d}.png")
                report("preview", {"step": step + 1, **previews[step + 1]})
                with torch.no_grad():
                    for p, value in zip(params, current):
                        p.copy_(value)
        offset += phase.steps
    assert ema is not None
    ema.copy_to(params)
    return text_encoder.eval(), unet.eval(), previews


def save_demo_checkpoint(folder: Path, text_encoder, unet, vae, tokenizer, extra: dict[str, Any], schedule: dict[str, Any]) -> Path:
    """Write a diffusers pipeline folder (safetensors) that ``nanoedge export`` reads."""
    folder.mkdir(parents=True, exist_ok=True)
    text_encoder.save_pretrained(folder / "text_encoder")
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    save_tokenizer(tokenizer, folder / "tokenizer", TEXT_MAX_LENGTH)
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(schedule, indent=2) + "\n")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "scheduler": ["diffusers", schedule["_class_name"]],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    (folder / "training.json").write_text(json.dumps(extra, indent=2) + "\n")
    return folder


def train_demo(
    output: "str | Path",
    cfg: TrainConfig | None = None,
    report: Report | None = None,
    previews: bool = True,
    vae_only: bool = False,
    vae_from: "str | Path | None" = None,
    init_from: "str | Path | None" = None,
) -> Path:
    """Run the whole recipe and write the checkpoint folder ``output``; returns its path.

    The stages can run apart with the same result as one run (each has its own seeds):
    ``vae_only`` stops after stage 1 and writes ``output/vae``; ``vae_from`` loads that VAE
    (``DIR/vae``) instead of training it. ``init_from`` continues the text encoder and UNet
    of a checkpoint this trainer wrote (its VAE too, unless ``vae_from`` says otherwise); the
    training time recorded is then the whole chain's, the earlier run's included.
    """
    cfg = cfg or TrainConfig()
    if cfg.zero_terminal_snr and cfg.prediction_type == "epsilon":
        raise ValueError("zero terminal SNR needs v-prediction: epsilon is undefined at the pure-noise step")
    report = report or (lambda stage, info: log.info("%s %s", stage, info))
    output = Path(output)
    torch.set_num_threads(cfg.threads)
    started = time.perf_counter()
    data = render_scene_set(cfg.seed, cfg.scenes)
    report("data", {"scenes": len(data), "seconds": time.perf_counter() - started})
    vae_started = time.perf_counter()
    if init_from is not None and vae_from is None:
        vae_from = init_from
    if vae_from is not None:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(Path(vae_from) / "vae").eval()
        # A --vae-only folder records its time in vae-training.json; a full checkpoint in training.json.
        record = Path(vae_from) / "vae-training.json"
        if record.exists():
            vae_seconds = float(json.loads(record.read_text())["seconds"])
        else:
            vae_seconds = float(json.loads((Path(vae_from) / "training.json").read_text())["seconds"]["vae"])
    else:
        vae = train_vae(data, cfg, report)
        vae_seconds = time.perf_counter() - vae_started
    if vae_only:
        output.mkdir(parents=True, exist_ok=True)
        vae.save_pretrained(output / "vae")
        (output / "vae-training.json").write_text(json.dumps({"recipe": asdict(cfg), "seconds": round(vae_seconds, 1)}, indent=2) + "\n")
        report("done", {"output": str(output), "vae_seconds": vae_seconds})
        return output
    latents = encode_latents(vae, data.images)
    scaling = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    report("latents", {"std": float(latents.std()), "scaling_factor": scaling, "vae_seconds": vae_seconds, **_vae_check(vae, data)})
    tokenizer = build_tokenizer(TEXT_MAX_LENGTH)
    preview_dir = output.parent / f"{output.name}-previews" if previews else None
    if preview_dir is not None:
        preview_dir.mkdir(parents=True, exist_ok=True)
    unet_started = time.perf_counter()
    text_encoder, unet, scores = train_diffusion(
        data, latents, vae, tokenizer, cfg, report, preview_dir, None if init_from is None else Path(init_from)
    )
    total = time.perf_counter() - started + (vae_seconds if vae_from is not None else 0.0)
    earlier = None
    if init_from is not None:
        earlier = json.loads((Path(init_from) / "training.json").read_text())
        # The earlier run's total already holds the VAE: count it once.
        total += float(earlier["seconds"]["total"]) - vae_seconds
    extra = {
        "recipe": asdict(cfg),
        **(
            {
                "continued_from": {
                    "path": str(init_from),
                    "recipe": earlier["recipe"],
                    "seconds": earlier["seconds"],
                    **({"continued_from": earlier["continued_from"]} if "continued_from" in earlier else {}),
                }
            }
            if earlier
            else {}
        ),
        "seconds": {"vae": round(vae_seconds, 1), "diffusion": round(time.perf_counter() - unet_started, 1), "total": round(total, 1)},
        "parameters": {
            "text_encoder": sum(p.numel() for p in text_encoder.parameters()),
            "unet": sum(p.numel() for p in unet.parameters()),
            "vae": sum(p.numel() for p in vae.parameters()),
        },
        "previews": {str(k): v for k, v in scores.items()},
        "torch": torch.__version__,
    }
    save_demo_checkpoint(output, text_encoder, unet, vae, tokenizer, extra, _schedule(cfg))
    report("done", {"output": str(output), "seconds": total})
    return output

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
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nanoedge.export.coordinates import run_unet

from .checkpoint import build_unet, load_for_fine_tuning, save_demo_checkpoint
from .configs import TEXT_MAX_LENGTH, VAE_CONFIG, text_encoder_config
from .data import SceneSet, _object_crops, _token_ids, draw_captions, encode_latents, render_scene_set
from .objective import _Ema, _lr_factor, loss_weights, sample_timesteps, training_target
from .preview import _preview, _vae_check
from .recipe import Report, TrainConfig, _schedule, training_phases
from .tokenizer import BOS, EOS, PAD, build_tokenizer

log = logging.getLogger(__name__)


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

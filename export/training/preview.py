"""Judged looks at a model while it trains: VAE reconstructions and sampled preview strips.

Both are scored by the same judge ``nanoedge eval`` uses, so the numbers in the training log
mean what the evaluation's numbers mean.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nanoedge.export.coordinates import run_unet
from nanoedge.runtime.demo.judge import judge_image
from nanoedge.runtime.demo.world import evaluation_prompts

from .configs import UNET_CONFIG
from .data import SceneSet, _token_ids
from .recipe import TrainConfig, _schedule


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

"""``python -m nanoedge.export.training.diagnose CKPT``: when does a checkpoint decide what it draws?

Samples the evaluation prompts with DDIM + classifier-free guidance (as the package does) and,
at each of the first denoising steps, decodes the model's current estimate of the clean image
and judges it against the prompt. A model that takes the layout from the prompt shows the
right position from the first steps on; one that reads it from the noise does not, and its
conditional and unconditional outputs barely differ there (printed as ``cond-uncond``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch


@torch.no_grad()
def first_step_judgements(checkpoint: "str | Path", steps: int = 20, guidance: float = 5.0, seed: int = 7, show: int = 6) -> list[dict]:
    """Per denoising step (the first ``show``): judged accuracy of the x0 estimate, cond-uncond gap."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from PIL import Image
    from tokenizers import Tokenizer
    from transformers import CLIPTextModel

    from nanoedge.runtime.demo.judge import judge_image
    from nanoedge.runtime.demo.world import evaluation_prompts

    folder = Path(checkpoint)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet").eval()
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder").eval()
    vae = AutoencoderKL.from_pretrained(folder / "vae").eval()
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer" / "tokenizer.json"))
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    scheduler = DDIMScheduler.from_config(config)
    scheduler.set_timesteps(steps)
    prompts = [p.prompt for p in evaluation_prompts()]
    ids = lambda texts: torch.tensor([e.ids for e in tokenizer.encode_batch(texts)], dtype=torch.long)  # noqa: E731
    states = torch.cat([text_encoder(ids([""] * len(prompts)))[0], text_encoder(ids(prompts))[0]])
    size = unet.config.sample_size
    x = torch.randn(len(prompts), unet.config.in_channels, size, size, generator=torch.Generator().manual_seed(seed))
    rows = []
    for t in scheduler.timesteps[:show]:
        a = scheduler.alphas_cumprod[t]
        uncond, cond = unet(torch.cat([x, x]), t, states).sample.chunk(2)
        out = uncond + guidance * (cond - uncond)
        if config["prediction_type"] == "v_prediction":
            x0 = a.sqrt() * x - (1 - a).sqrt() * out
        else:
            x0 = (x - (1 - a).sqrt() * out) / a.sqrt()
        pixels = vae.decode(x0 / vae.config.scaling_factor).sample
        arrays = ((pixels.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        scores: dict[str, list[bool]] = {}
        for prompt, array in zip(prompts, arrays):
            for attribute, ok in judge_image(Image.fromarray(array), prompt).correct.items():
                scores.setdefault(attribute, []).append(ok)
        rows.append({"timestep": int(t), **{k: round(float(np.mean(v)), 3) for k, v in scores.items()}, "cond_uncond": round(float((cond - uncond).abs().mean()), 4)})
        x = scheduler.step(out, t, x).prev_sample
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nanoedge.export.training.diagnose", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--show", type=int, default=6, help="how many of the first denoising steps to judge")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for row in first_step_judgements(args.checkpoint, args.steps, args.guidance, show=args.show):
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python bench/diagnose_demo.py CKPT``: when does a checkpoint decide what it draws?

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


def _load_prompt_to_latent(checkpoint: "str | Path"):
    """A checkpoint's UNet and text encoder (eval mode), its tokenizer and its scheduler config."""
    from diffusers import UNet2DConditionModel
    from tokenizers import Tokenizer
    from transformers import CLIPTextModel

    folder = Path(checkpoint)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet").eval()
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder").eval()
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer" / "tokenizer.json"))
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    return unet, text_encoder, tokenizer, config


def clean_estimate(x: torch.Tensor, out: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """The clean latent a UNet output implies at noise level ``alpha_bar`` (v or epsilon)."""
    if prediction_type == "v_prediction":
        return alpha_bar.sqrt() * x - (1 - alpha_bar).sqrt() * out
    return (x - (1 - alpha_bar).sqrt() * out) / alpha_bar.sqrt()


@torch.no_grad()
def first_step_judgements(checkpoint: "str | Path", steps: int = 20, guidance: float = 5.0, seed: int = 7, show: int = 6) -> list[dict]:
    """Per denoising step (the first ``show``): judged accuracy of the x0 estimate, cond-uncond gap."""
    from diffusers import AutoencoderKL, DDIMScheduler
    from PIL import Image

    from nanoedge.export.coordinates import run_unet
    from nanoedge.runtime.demo.judge import judge_image
    from nanoedge.runtime.demo.world import evaluation_prompts

    unet, text_encoder, tokenizer, config = _load_prompt_to_latent(checkpoint)
    vae = AutoencoderKL.from_pretrained(Path(checkpoint) / "vae").eval()
    scheduler = DDIMScheduler.from_config(config)
    scheduler.set_timesteps(steps)
    prompts = [p.prompt for p in evaluation_prompts()]
    ids = lambda texts: torch.tensor([e.ids for e in tokenizer.encode_batch(texts)], dtype=torch.long)  # noqa: E731
    states = torch.cat([text_encoder(ids([""] * len(prompts)))[0], text_encoder(ids(prompts))[0]])
    size = unet.config.sample_size
    x = torch.randn(len(prompts), unet.config.out_channels, size, size, generator=torch.Generator().manual_seed(seed))
    rows = []
    for t in scheduler.timesteps[:show]:
        a = scheduler.alphas_cumprod[t]
        uncond, cond = run_unet(unet, torch.cat([x, x]), t, states).chunk(2)
        out = uncond + guidance * (cond - uncond)
        x0 = clean_estimate(x, out, a, config["prediction_type"])
        pixels = vae.decode(x0 / vae.config.scaling_factor).sample
        arrays = ((pixels.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        scores: dict[str, list[bool]] = {}
        for prompt, array in zip(prompts, arrays):
            for attribute, ok in judge_image(Image.fromarray(array), prompt).correct.items():
                scores.setdefault(attribute, []).append(ok)
        rows.append(
            {
                "timestep": int(t),
                **{k: round(float(np.mean(v)), 3) for k, v in scores.items()},
                "cond_uncond": round(float((cond - uncond).abs().mean()), 4),
            }
        )
        x = scheduler.step(out, t, x).prev_sample
    return rows


@torch.no_grad()
def position_response(
    checkpoint: "str | Path", noises: int = 64, timesteps: tuple[int, ...] = (999, 951, 851, 701), seed: int = 0
) -> list[dict]:
    """Does the checkpoint's clean-image estimate move when only the position word changes?

    For "a red circle <position> on a white background" (and blue, yellow), the conditional
    clean-latent estimate from pure noise, averaged over ``noises`` draws, is the model's idea
    of where the prompt puts the object. Per timestep: ``position_spread`` is the mean norm (per
    latent cell) of each position's average minus the five positions' mean, ``colour_spread``
    the same across six colours on the left (a model that reads the prompt moves these by
    tenths), and ``position_right`` the share of the 15 averages whose weighted centroid of
    change lies nearest the asked anchor (chance 0.2). Independent of any sampler or judge.
    """
    from diffusers import DDPMScheduler

    from nanoedge.export.coordinates import run_unet
    from nanoedge.runtime.demo.world import COLOURS, IMAGE_SIZE, POSITIONS, canonical_caption

    unet, text_encoder, tokenizer, config = _load_prompt_to_latent(checkpoint)
    alphas = DDPMScheduler.from_config(config).alphas_cumprod
    size = int(unet.config.sample_size)
    noise = torch.randn(noises, int(unet.config.out_channels), size, size, generator=torch.Generator().manual_seed(seed))
    cell = IMAGE_SIZE / size
    anchors = {name: (x / cell, y / cell) for name, (x, y) in POSITIONS.items()}
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")

    def mean_estimate(prompt: str, t: int) -> torch.Tensor:
        ids = torch.tensor([tokenizer.encode(prompt).ids] * noises, dtype=torch.long)
        out = run_unet(unet, noise, t, text_encoder(ids)[0])
        return clean_estimate(noise, out, alphas[t], config["prediction_type"]).mean(0)

    def with_background(prompt: str) -> str:
        return f"{prompt} on a white background"

    rows = []
    for t in timesteps:
        right, spreads = 0, []
        for colour in ("red", "blue", "yellow"):
            maps = {p: mean_estimate(with_background(canonical_caption(colour, "circle", p)), t) for p in POSITIONS}
            centre = torch.stack(list(maps.values())).mean(0)
            for p, estimate in maps.items():
                change = (estimate - centre).norm(dim=0)
                spreads.append(float(change.mean()))
                w = change**2
                cx, cy = float((w * xs).sum() / w.sum()), float((w * ys).sum() / w.sum())
                right += min(anchors, key=lambda q: (anchors[q][0] - cx) ** 2 + (anchors[q][1] - cy) ** 2) == p
        colours = [mean_estimate(with_background(canonical_caption(c, "circle", "left")), t) for c in COLOURS]
        colour_centre = torch.stack(colours).mean(0)
        colour_spread = float(np.mean([float((c - colour_centre).norm(dim=0).mean()) for c in colours]))
        rows.append(
            {
                "timestep": t,
                "position_spread": round(float(np.mean(spreads)), 4),
                "colour_spread": round(colour_spread, 4),
                "position_right": round(right / 15, 3),
            }
        )
    return rows


def explained_variance(vae_folder: "str | Path", scenes: int = 1500, seed: int = 0) -> dict[str, float]:
    """Variance of the scaled latents left once scene attributes are known (1.0: nothing explained).

    What a model could at best reach at the pure-noise step (its v target is minus the latent)
    if it read those attributes from the caption: the floor the layout probe's loss is judged by.
    """
    from diffusers import AutoencoderKL

    from nanoedge.export.training.data import encode_latents, render_scene_set

    data = render_scene_set(seed, scenes)
    vae = AutoencoderKL.from_pretrained(Path(vae_folder) / "vae").eval()
    latents = encode_latents(vae, data.images)
    latents = latents / latents.std()

    def residual(key) -> float:
        groups: dict = {}
        for i, scene in enumerate(data.scenes):
            groups.setdefault(key(scene), []).append(i)
        total = 0.0
        for members in groups.values():
            chunk = latents[torch.tensor(members)]
            total += float(((chunk - chunk.mean(0)) ** 2).sum())
        return round(total / latents.numel(), 3)

    return {
        "nothing": residual(lambda s: 0),
        "background": residual(lambda s: s.background),
        "background_colour": residual(lambda s: (s.background, s.colour)),
        "background_position": residual(lambda s: (s.background, s.position)),
        "background_colour_position": residual(lambda s: (s.background, s.colour, s.position)),
        "every_attribute": residual(lambda s: (s.background, s.colour, s.position, s.shape, s.size)),
    }


@torch.no_grad()
def word_separation(checkpoint: "str | Path") -> dict[str, float]:
    """How far apart the text encoder puts prompts that differ in one shape or colour word.

    Mean L2 distance between the last hidden states (what the UNet attends to) of "a COLOUR
    SHAPE POSITION" prompts that differ only in the shape word, per pair of shapes, averaged
    over every colour and position, and the same for colour pairs. Two words the encoder maps
    to nearly the same states cannot be told apart by any UNet downstream: this is how the
    v-prediction runs were found to draw circles and squares interchangeably
    (docs/demo-model.md, fifth round).
    """
    from nanoedge.runtime.demo.world import COLOURS, POSITIONS, SHAPES, canonical_caption

    _, text_encoder, tokenizer, _ = _load_prompt_to_latent(checkpoint)

    def gap(one: list[str], two: list[str]) -> float:
        """Mean distance between the states of two prompt lists, pairwise."""
        states = [text_encoder(torch.tensor([e.ids for e in tokenizer.encode_batch(p)], dtype=torch.long))[0] for p in (one, two)]
        return float((states[0] - states[1]).flatten(1).norm(dim=1).mean())

    result: dict[str, float] = {}
    for i, a in enumerate(SHAPES):
        for b in SHAPES[i + 1 :]:
            one, two = ([canonical_caption(c, shape, p) for c in COLOURS for p in POSITIONS] for shape in (a, b))
            result[f"shape {a}-{b}"] = round(gap(one, two), 3)
    colours = list(COLOURS)
    pairs = [(a, b) for i, a in enumerate(colours) for b in colours[i + 1 :]]
    gaps = [gap(*([canonical_caption(c, s, p) for s in SHAPES for p in POSITIONS] for c in pair)) for pair in pairs]
    result["colour pairs (mean)"] = round(float(np.mean(gaps)), 3)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/diagnose_demo.py", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--show", type=int, default=6, help="how many of the first denoising steps to judge")
    parser.add_argument(
        "--layout-probe",
        type=int,
        default=0,
        metavar="STEPS",
        help="instead: train a fresh model on the pure-noise step only (CHECKPOINT gives the VAE)",
    )
    parser.add_argument("--probe-lr", type=float, default=1e-3, help="AdamW learning rate of the layout probe")
    parser.add_argument("--probe-cross-attention-16", action="store_true", help="layout probe with cross-attention at 16x16 too")
    parser.add_argument(
        "--position-response",
        action="store_true",
        help="instead: how far the clean-image estimate moves when only the position word changes",
    )
    parser.add_argument(
        "--word-separation",
        action="store_true",
        help="instead: how far apart the text encoder puts prompts differing in one shape or colour word",
    )
    parser.add_argument("--explained-variance", action="store_true", help="instead: latent variance left once scene attributes are known")
    parser.add_argument(
        "--prompt-use-probe",
        type=int,
        default=0,
        metavar="STEPS",
        help="instead: train a fresh model (v-prediction, zero terminal SNR, all timesteps) and print how much it uses the prompt",
    )
    parser.add_argument(
        "--probe-global-text", action="store_true", help="prompt-use probe with the pooled-text time embedding (--unet-global-text)"
    )
    parser.add_argument("--probe-scale-shift", action="store_true", help="prompt-use probe with AdaGN ResNet blocks (--unet-scale-shift)")
    parser.add_argument("--probe-timestep-power", type=float, default=1.0, help="prompt-use probe's timestep bias (--timestep-power)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.position_response:
        for row in position_response(args.checkpoint):
            print(json.dumps(row))
        return 0
    if args.word_separation:
        print(json.dumps(word_separation(args.checkpoint)))
        return 0
    if args.explained_variance:
        print(json.dumps(explained_variance(args.checkpoint)))
        return 0
    if args.prompt_use_probe:
        prompt_use_probe(args.checkpoint, args.prompt_use_probe, args.probe_global_text, args.probe_scale_shift, args.probe_timestep_power)
        return 0
    if args.layout_probe:
        layout_probe(args.checkpoint, steps=args.layout_probe, lr=args.probe_lr, cross_attention_16=args.probe_cross_attention_16)
        return 0
    for row in first_step_judgements(args.checkpoint, args.steps, args.guidance, show=args.show):
        print(json.dumps(row))
    return 0



def layout_probe(
    vae_folder: "str | Path",
    steps: int = 300,
    scenes: int = 3000,
    batch: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    report=print,
    cross_attention_16: bool = False,
) -> list[dict]:
    """Train a fresh text encoder + UNet (the shipped configs) on the pure-noise step only.

    At zero SNR the v target there is minus the clean latent, so this asks the architecture
    one thing: can it draw the prompt's conditional mean image (colour and place) from text
    alone? Returns the judged accuracy of its x0 on the evaluation prompts every 100 steps.
    ``cross_attention_16`` puts cross-attention in the 16x16 blocks too (the shipped UNet has
    it from 8x8 down).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from PIL import Image
    from transformers import CLIPTextConfig, CLIPTextModel

    from nanoedge.export.training.configs import TEXT_MAX_LENGTH, UNET_CONFIG, text_encoder_config
    from nanoedge.export.training.data import draw_captions, encode_latents, render_scene_set
    from nanoedge.export.training.tokenizer import BOS, EOS, PAD, build_tokenizer
    from nanoedge.runtime.demo.judge import judge_image
    from nanoedge.runtime.demo.world import evaluation_prompts

    torch.manual_seed(seed)
    data = render_scene_set(seed, scenes)
    vae = AutoencoderKL.from_pretrained(Path(vae_folder) / "vae").eval()
    latents = encode_latents(vae, data.images)
    scaling = float(1.0 / latents.std())
    tokenizer = build_tokenizer(TEXT_MAX_LENGTH)
    vocab = tokenizer.get_vocab()
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_encoder_config(len(vocab), vocab[BOS], vocab[EOS], vocab[PAD])))
    unet_config = dict(UNET_CONFIG)
    if cross_attention_16:
        unet_config["down_block_types"] = ["CrossAttnDownBlock2D"] * len(unet_config["down_block_types"])
        unet_config["up_block_types"] = ["CrossAttnUpBlock2D"] * len(unet_config["up_block_types"])
    unet = UNet2DConditionModel(**unet_config)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    ids = lambda texts: torch.tensor([e.ids for e in tokenizer.encode_batch(texts)], dtype=torch.long)  # noqa: E731
    prompts = [p.prompt for p in evaluation_prompts()]
    t = torch.full((batch,), 999)
    rows = []
    for step in range(1, steps + 1):
        index = rng.integers(0, len(data), batch)
        z0 = latents[torch.from_numpy(index)] * scaling
        noise = torch.randn(z0.shape, generator=generator)
        pred = unet(noise, t, text_encoder(ids(draw_captions(data.scenes, index, rng, 0.0)))[0]).sample
        loss = torch.nn.functional.mse_loss(pred, -z0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 100 == 0:
            with torch.no_grad():
                noise = torch.randn(
                    len(prompts), 4, UNET_CONFIG["sample_size"], UNET_CONFIG["sample_size"], generator=torch.Generator().manual_seed(7)
                )
                x0 = -unet(noise, torch.full((len(prompts),), 999), text_encoder(ids(prompts))[0]).sample
                pixels = vae.decode(x0 / scaling).sample
            arrays = ((pixels.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
            scores: dict[str, list[bool]] = {}
            for prompt, array in zip(prompts, arrays):
                for attribute, ok in judge_image(Image.fromarray(array), prompt).correct.items():
                    scores.setdefault(attribute, []).append(ok)
            rows.append({"step": step, "loss": round(loss.item(), 4), **{k: round(float(np.mean(v)), 3) for k, v in scores.items()}})
            report(json.dumps(rows[-1]))
    return rows


def prompt_use_probe(
    vae_folder: "str | Path",
    steps: int = 400,
    global_text: bool = False,
    scale_shift: bool = False,
    timestep_power: float = 1.0,
    report=print,
) -> list[dict]:
    """Train a fresh text encoder + UNet with the real objective and measure its use of the prompt.

    The objective is the trainer's (v-prediction, zero terminal SNR, min-SNR-5 weights, 10%
    empty captions, AdamW 1e-3 with 100 warm-up steps, clipping at 1; 3,000 scenes, batch 32).
    Every 100 steps, on 128 other scenes with fixed captions and noise, it prints the mean
    squared error of the model's clean-latent estimate at t = 999, 800 and 500 with the right
    prompt (``t999``) and with another scene's prompt (``t999_shuf``): a model that does not
    use the prompt scores the same on both. ``g_te`` / ``g_kv`` are the gradient norms of the
    text encoder and of the cross-attention key/value projections at that step.
    Unlike ``layout_probe`` (the pure-noise step alone), every timestep is trained, so the
    UNet's features do not collapse to a prompt-independent mean first.
    """
    import time

    import torch.nn.functional as F
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from nanoedge.export.training.configs import TEXT_MAX_LENGTH, scheduler_config, text_encoder_config, unet_config
    from nanoedge.export.training.data import draw_captions, encode_latents, render_scene_set
    from nanoedge.export.training.objective import loss_weights, sample_timesteps, training_target
    from nanoedge.export.training.tokenizer import BOS, EOS, PAD, build_tokenizer
    from nanoedge.runtime.demo.world import caption_for

    seed, batch = 0, 32
    data = render_scene_set(seed, 3000)
    vae = AutoencoderKL.from_pretrained(Path(vae_folder) / "vae").eval()
    latents = encode_latents(vae, data.images)
    scaling = float(1.0 / latents.std())
    tokenizer = build_tokenizer(TEXT_MAX_LENGTH)
    vocab = tokenizer.get_vocab()
    ids = lambda texts: torch.tensor([e.ids for e in tokenizer.encode_batch(texts)], dtype=torch.long)  # noqa: E731
    held = render_scene_set(123, 128)
    held_z = encode_latents(vae, held.images) * scaling
    caption_rng = np.random.default_rng(5)
    held_ids = ids([caption_for(s, caption_rng) for s in held.scenes])
    held_noise = torch.randn(held_z.shape, generator=torch.Generator().manual_seed(9))
    other = torch.roll(torch.arange(len(held_z)), 1)
    alphas = DDPMScheduler.from_config(scheduler_config("v_prediction", True, "trailing")).alphas_cumprod.float()
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_encoder_config(len(vocab), vocab[BOS], vocab[EOS], vocab[PAD])))
    unet = UNet2DConditionModel(**unet_config(global_text, scale_shift))
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 100))
    rng = np.random.default_rng(seed + 2)
    generator = torch.Generator().manual_seed(seed + 2)
    kv = [p for n, p in unet.named_parameters() if "attn2.to_k" in n or "attn2.to_v" in n]
    started = time.perf_counter()
    rows = []
    for step in range(1, steps + 1):
        unet.train()
        text_encoder.train()
        index = rng.integers(0, len(data), batch)
        z0 = latents[torch.from_numpy(index)] * scaling
        noise = torch.randn(z0.shape, generator=generator)
        t = sample_timesteps(batch, len(alphas), timestep_power, generator)
        a = alphas[t].view(-1, 1, 1, 1)
        pred = unet(a.sqrt() * z0 + (1 - a).sqrt() * noise, t, text_encoder(ids(draw_captions(data.scenes, index, rng, 0.1)))[0]).sample
        weight = loss_weights(alphas[t] / (1 - alphas[t]), 5.0, "v_prediction")
        loss = (weight * F.mse_loss(pred, training_target(z0, noise, a, "v_prediction"), reduction="none").mean(dim=(1, 2, 3))).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        g_te = float(torch.sqrt(sum((p.grad**2).sum() for p in text_encoder.parameters() if p.grad is not None)))
        g_kv = float(torch.sqrt(sum((p.grad**2).sum() for p in kv)))
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        if step % 100 == 0:
            unet.eval()
            text_encoder.eval()
            row = {"step": step, "g_te": round(g_te, 3), "g_kv": round(g_kv, 3), "seconds": round(time.perf_counter() - started)}
            with torch.no_grad():
                states = text_encoder(held_ids)[0]
                for timestep in (999, 800, 500):
                    ab = alphas[timestep]
                    x = ab.sqrt() * held_z + (1 - ab).sqrt() * held_noise
                    for key, cond in ((f"t{timestep}", states), (f"t{timestep}_shuf", states[other])):
                        v = unet(x, torch.full((len(x),), timestep), cond).sample
                        row[key] = round(float(((clean_estimate(x, v, ab, "v_prediction") - held_z) ** 2).mean()), 3)
            rows.append(row)
            report(json.dumps(row))
    return rows


if __name__ == "__main__":
    sys.exit(main())

"""``nanoedge generate PROMPT [-m PKG] -o out.png``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from .common import StepProgress, handle_errors


def output_paths(output: str, count: int) -> list[Path]:
    """out.png for one image; out-1.png, out-2.png... for several."""
    path = Path(output)
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{i + 1}{path.suffix or '.png'}") for i in range(count)]


@click.command()
@click.argument("prompt")
@click.option("-m", "--model", "package", default=None, help="Package folder (default: the built-in model).")
@click.option("-o", "--output", default="out.png", show_default=True, help="Image file; with --n > 1, numbered files.")
@click.option("--negative-prompt", default=None)
@click.option("--size", default=None, help="WxH (default: the package's).")
@click.option("--steps", type=int, default=None)
@click.option("--guidance", type=float, default=None, help="Classifier-free guidance scale; <= 1 disables it.")
@click.option("--seed", type=int, default=None, help="Same package + parameters + seed = same image.")
@click.option("--scheduler", default=None, help="pndm, ddim, euler, euler_a, dpmpp_2m, lcm.")
@click.option("--n", "n", type=int, default=1, show_default=True, help="Number of images.")
@click.option("--target", default="cpu", show_default=True, help="Execution target (cpu, cuda, auto...).")
@click.option("--two-pass", is_flag=True, help="Run guidance as two UNet passes (lower memory).")
@click.option("--reduce-memory/--resident", default=True, show_default=True,
              help="Load each model just before its stage and release it after (peak = the largest stage). "
              "A one-shot command loads every model once either way, so this costs no time here.")
@click.option("--json", "as_json", is_flag=True, help="Print what was generated as JSON.")
@handle_errors
def generate(prompt, package, output, negative_prompt, size, steps, guidance, seed, scheduler, n, target, two_pass, reduce_memory, as_json):
    """Generate images from PROMPT with the lean runtime (no torch)."""
    from nanoedge.runtime import GenerationRequest, Pipeline

    started = time.perf_counter()
    pipe = Pipeline.load(package, target=target, two_pass=two_pass, reduce_memory=reduce_memory)
    loaded = time.perf_counter()
    resolved = pipe.resolve(GenerationRequest(prompt, negative_prompt, n, seed, size, steps, guidance, scheduler))
    progress = StepProgress("denoising", enabled=None if not as_json else False)
    result = pipe.generate_batch([resolved], progress=progress)[0]
    progress.close()
    paths = output_paths(output, len(result.images))
    for image, path in zip(result.images, paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
    r = result.request
    summary = {
        "files": [str(p) for p in paths],
        "model": pipe.id,
        "prompt": r.prompt,
        "seed": r.seed,
        "size": str(r.output_size),
        "steps": r.steps,
        "guidance": r.guidance,
        "scheduler": r.scheduler,
        "load_s": round(loaded - started, 2),
        "generate_s": round(time.perf_counter() - loaded, 2),
        "reduce_memory": reduce_memory,
    }
    if as_json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for p in paths:
            click.echo(f"wrote {p}")
        click.echo(
            f"seed {r.seed}, {r.output_size}, {r.steps} steps, guidance {r.guidance:g}, scheduler {r.scheduler}; "
            f"load {summary['load_s']} s, generate {summary['generate_s']} s"
            + (" (models loaded per stage: --resident keeps them)" if reduce_memory else ""),
            err=True,
        )
        if target.lower() == "auto":
            click.echo(f"target auto -> {pipe.profile.name}: {pipe.target_reason}", err=True)

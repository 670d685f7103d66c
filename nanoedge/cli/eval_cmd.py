"""``nanoedge eval [PKG]``: score a package of the demo model with the deterministic judge."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .common import StepProgress, handle_errors


def _table(report) -> str:
    rows = [("overall", report.accuracy(None)), ("held-out", report.accuracy(True)), ("seen", report.accuracy(False))]
    counts = {
        "overall": sum(len(r.images) for r in report.results),
        "held-out": sum(len(r.images) for r in report.results if r.prompt.held_out),
        "seen": sum(len(r.images) for r in report.results if not r.prompt.held_out),
    }
    lines = [f"{'':<10}{'images':>7}{'colour':>9}{'shape':>9}{'position':>10}{'all':>8}"]
    for name, acc in rows:
        if not counts[name]:
            continue
        lines.append(
            f"{name:<10}{counts[name]:>7}{acc['colour']:>9.1%}{acc['shape']:>9.1%}{acc['position']:>10.1%}{acc['all']:>8.1%}"
        )
    return "\n".join(lines)


@click.command("eval")
@click.argument("package", required=False)
@click.option("--n", "images_per_prompt", type=int, default=4, show_default=True, help="Images per prompt.")
@click.option("--seed", type=int, default=0, show_default=True, help="Image i of every prompt uses seed + i.")
@click.option("--limit", type=int, default=None, help="Only the first N prompts (half held-out, half seen): a quick check.")
@click.option("--steps", type=int, default=None, help="Denoising steps (default: the package's).")
@click.option("--guidance", type=float, default=None, help="Guidance scale (default: the package's).")
@click.option("--scheduler", default=None, help="Sampler (default: the package's).")
@click.option("--target", default="cpu", show_default=True, help="Execution target.")
@click.option("--sheet", type=click.Path(dir_okay=False), default=None, help="Write a contact sheet PNG of every image here.")
@click.option("--json", "as_json", is_flag=True, help="Print every judgement as JSON.")
@handle_errors
def eval_cmd(package, images_per_prompt, seed, limit, steps, guidance, scheduler, target, sheet, as_json):
    """Generate the demo world's fixed prompts and judge colour, shape and position.

    PACKAGE defaults to the built-in model. Held-out prompts name colour x shape x position
    combinations the model never saw in training. The judge is pixel statistics, no model.
    """
    from nanoedge.core.errors import InvalidRequestError
    from nanoedge.runtime import Pipeline
    from nanoedge.runtime.demo.evaluate import contact_sheet, evaluate, select_prompts

    if images_per_prompt < 1:
        raise InvalidRequestError(f"--n must be at least 1, got {images_per_prompt}")
    if limit is not None and limit < 1:
        raise InvalidRequestError(f"--limit must be at least 1, got {limit}")
    pipe = Pipeline.load(package, target=target)
    progress = StepProgress("prompts", enabled=None if not as_json else False)
    report = evaluate(pipe, select_prompts(limit), images_per_prompt, seed, steps, guidance, scheduler, progress=progress)
    progress.close()
    if sheet:
        Path(sheet).parent.mkdir(parents=True, exist_ok=True)
        contact_sheet(report).save(sheet)
    if as_json:
        data = report.as_dict()
        if sheet:
            data["sheet"] = str(sheet)
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    s = report.settings
    click.echo(
        f"{s['package']}: {len(report.results)} prompts x {images_per_prompt} images, "
        f"{s['steps']} steps, guidance {s['guidance']:g}, scheduler {s['scheduler']}, seed {seed}"
    )
    click.echo(_table(report))
    if sheet:
        click.echo(f"wrote {sheet}")

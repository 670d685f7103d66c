"""``nanoedge quantize IN -o OUT --scheme SCHEME``."""

from __future__ import annotations

import json
import sys

import click

from nanoedge.quantize.recipes import COMPONENT_SCHEMES, SCHEMES, WEIGHT_TYPES

from .common import StepProgress, handle_errors


class StageProgress:
    """One line per stage on stderr, plus a progress bar on a terminal for stages with a count."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.stage: str | None = None
        self.bar: StepProgress | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.quiet:
            return
        if stage != self.stage:
            self.close()
            self.stage = stage
            if total > 0:
                self.bar = StepProgress(stage)
                if not self.bar.enabled:
                    click.echo(f"{stage} ({total})", err=True)
            else:
                click.echo(stage, err=True)
        if self.bar is not None and total > 0:
            self.bar(done, total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# Library errors name QuantizeOptions fields; the CLI user typed flags.
_FLAGS = {
    "max_attempts": "--max-attempts",
    "report_samples": "--report-samples",
    "sensitivity_samples": "--sensitivity-samples",
    "min_component_psnr": "--min-component-psnr",
    "min_psnr": "--min-psnr",
    "min_responsiveness": "--min-responsiveness",
    "max_size_ratio": "--max-size-ratio",
    "threads": "--threads",
    "steps": "--steps",
    "guidance": "--guidance",
    "overwrite": "--overwrite",
    "output": "-o",
    "scheme": "--scheme",
    "components": "--text-encoder/--unet/--vae-decoder",
    "calibration_prompts": "--calibration-prompts",
    "eval_prompts": "--eval-prompts",
    "time_budget_s": "--time-budget",
}


def _as_flags(error):
    """The same error, with the option field its message starts with ("max_attempts must be
    >= 0") replaced by the flag that sets it ("--max-attempts must be >= 0")."""
    from nanoedge.core.errors import InvalidRequestError

    flag = _FLAGS.get(error.param or "")
    if flag is None or not error.message.startswith(error.param + " "):
        return error
    return InvalidRequestError(flag + error.message[len(error.param):], hint=error.hint, param=error.param)


@click.command()
@click.argument("package", type=click.Path(file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(), help="Package folder to write (must not exist unless --overwrite).")
@click.option("--scheme", type=click.Choice(SCHEMES), default="int8", show_default=True, help="Scheme for every component (see below).")
@click.option(
    "--text-encoder", "text_encoder", type=click.Choice(COMPONENT_SCHEMES), default=None, help="Scheme for the text encoder only."
)
@click.option("--unet", type=click.Choice(COMPONENT_SCHEMES), default=None, help="Scheme for the UNet only.")
@click.option("--vae-decoder", "vae_decoder", type=click.Choice(COMPONENT_SCHEMES), default=None, help="Scheme for the VAE decoder only.")
@click.option(
    "--prompts", "prompts_file", type=click.Path(dir_okay=False), default=None, help="Prompt file, one per line (default: the shipped set)."
)
@click.option(
    "--calibration-prompts",
    type=int,
    default=None,
    help="Prompts from the top of the file to calibrate on (default: 16, fewer if the time budget needs).",
)
@click.option(
    "--eval-prompts",
    type=int,
    default=16,
    show_default=True,
    help="Held-out prompts from the bottom of the file for the report (image PSNR median).",
)
@click.option("--size", default=None, help="WxH to calibrate and measure at (default: the package's, half each side if the budget needs).")
@click.option("--steps", type=int, default=None, help="Denoising steps per prompt (default: the package's, fewer if the budget needs).")
@click.option(
    "--time-budget",
    type=float,
    default=600,
    show_default=True,
    help="Seconds the run should take; the plan shrinks what you left open (calibration prompts, size, steps) to fit.",
)
@click.option("--guidance", type=float, default=None, help="Guidance scale (> 1; default: the package's).")
@click.option("--scheduler", default=None, help="Scheduler for calibration runs (default: the package's).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the first prompt (prompt i uses seed + i).")
@click.option(
    "--weight-type",
    type=click.Choice(WEIGHT_TYPES),
    default="auto",
    show_default=True,
    help="INT8 weight type for int8/dynamic; auto picks by CPU (VNNI).",
)
@click.option(
    "--min-component-psnr",
    type=float,
    default=35.0,
    show_default=True,
    help="Gate: each quantized component's output PSNR vs FP32 on the same inputs, dB.",
)
@click.option(
    "--min-psnr", type=float, default=30.0, show_default=True, help="Gate: median image PSNR vs FP32 over the held-out prompts, dB."
)
@click.option("--min-responsiveness", type=float, default=0.85, show_default=True, help="Gate: std(cond-uncond) ratio vs FP32.")
@click.option(
    "--max-size-ratio",
    type=float,
    default=0.35,
    show_default=True,
    help="Mixed precision may grow each component up to this fraction of its FP32 bytes.",
)
@click.option("--no-mixed-precision", is_flag=True, help="Fail at once when the gate is missed instead of keeping nodes in float.")
@click.option("--max-attempts", type=int, default=4, show_default=True, help="Mixed-precision candidates to try at most.")
@click.option(
    "--report-samples", type=int, default=16, show_default=True, help="Held-out calls per component for the per-component figures."
)
@click.option(
    "--sensitivity-samples", type=int, default=4, show_default=True, help="Calibration calls per component for the sensitivity ranking."
)
@click.option(
    "--calibration-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Keep recorded trajectories here and reuse them when settings match.",
)
@click.option("--work-dir", type=click.Path(file_okay=False), default=None, help="Scratch folder (default: the system temp folder).")
@click.option("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: all cores).")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists (atomically, at the end).")
@click.option("--json", "as_json", is_flag=True, help="Print the result (or the failed attempts) as JSON.")
@handle_errors
def quantize(
    package,
    output,
    scheme,
    text_encoder,
    unet,
    vae_decoder,
    prompts_file,
    calibration_prompts,
    eval_prompts,
    size,
    steps,
    time_budget,
    guidance,
    scheduler,
    seed,
    weight_type,
    min_component_psnr,
    min_psnr,
    min_responsiveness,
    max_size_ratio,
    no_mixed_precision,
    max_attempts,
    report_samples,
    sensitivity_samples,
    calibration_dir,
    work_dir,
    threads,
    overwrite,
    as_json,
):
    """Quantize an FP32 package to INT8, measured against FP32 and gated on quality.

    \b
    Schemes:
      int8         static W8A8 (QDQ, per-channel weights): CPU and NPUs
      w8a16        INT8 weights, 16-bit activations: the Qualcomm HTP recipe
      w8a8         INT8 weights, 8-bit activations, every op: INT8 for NPUs (HTP)
      dynamic      INT8 weights, activations quantized at run time: CPU
      weight-only  INT8 weights, float activations: size win, smallest loss
    Per component: --unet int8 --vae-decoder weight-only (fp32 leaves one alone).

    Calibration runs the FP32 package on real prompts and records what each model sees.
    The run is planned first: one FP32 call is timed and calibration prompts, size and steps
    (those you left open) shrink until the estimate fits --time-budget; the FP32 references
    are cached and reused by the next run on the same package and plan.
    The report (cosine/PSNR per component, end-to-end image PSNR, prompt responsiveness,
    sizes) is printed and stored in the package. If the gate is missed, the most
    sensitive nodes stay in float until it passes or the size budget is spent; if it still
    fails, nothing is written and the exit code is 6.
    """
    from nanoedge.core.errors import InvalidRequestError, QualityGateError
    from nanoedge.quantize.api import QuantizeOptions, quantize_package
    from nanoedge.quantize.summary import float_node_counts, format_report

    options = QuantizeOptions(
        scheme=scheme,
        components={"text_encoder": text_encoder, "unet": unet, "vae_decoder": vae_decoder},
        prompts_file=prompts_file,
        calibration_prompts=calibration_prompts,
        eval_prompts=eval_prompts,
        size=size,
        steps=steps,
        time_budget_s=time_budget,
        guidance=guidance,
        scheduler=scheduler,
        seed=seed,
        weight_type=weight_type,
        min_component_psnr=min_component_psnr,
        min_psnr=min_psnr,
        min_responsiveness=min_responsiveness,
        max_size_ratio=max_size_ratio,
        mixed_precision=not no_mixed_precision,
        max_attempts=max_attempts,
        report_samples=report_samples,
        sensitivity_samples=sensitivity_samples,
        overwrite=overwrite,
        threads=threads,
        work_dir=work_dir,
        calibration_dir=calibration_dir,
    )
    progress = StageProgress(quiet=as_json)
    try:
        result = quantize_package(package, output, options, progress=progress)
    except InvalidRequestError as error:
        raise _as_flags(error) from error
    except QualityGateError as missed:
        progress.close()
        if as_json:
            json.dump({"error": missed.message, "passed": False, "attempts": missed.attempts}, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            for attempt in missed.attempts:
                figures = f"UNet {attempt.get('unet_psnr_db')} dB, image median {attempt.get('median_image_psnr_db')} dB"
                click.echo(
                    f"  {attempt['attempt']:<14} {attempt['float_nodes']:>4} nodes float ({figures}): {'; '.join(attempt['shortfalls'])}",
                    err=True,
                )
        raise
    progress.close()
    section = result.manifest.quantization or {}
    summary = {
        "package": str(result.manifest.root),
        "seconds": result.seconds,
        "passed": True,
        "schemes": {name: c["scheme"] for name, c in section["components"].items()},
        "float_nodes": float_node_counts(section),
        "report": result.report,
        "attempts": result.attempts,
    }
    if as_json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    for line in format_report(result.report):
        click.echo(line)
    floats = summary["float_nodes"]
    kept = ", ".join(f"{name} {count}" for name, count in floats.items()) or "none"
    click.echo(
        f"wrote {result.manifest.root} in {result.seconds:.0f} s (gate passed: {result.attempts[-1]['attempt']}; nodes kept float: {kept})"
    )

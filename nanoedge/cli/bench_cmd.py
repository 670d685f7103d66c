"""``nanoedge bench PKG``."""

from __future__ import annotations

import json
import sys

import click

from .common import handle_errors


@click.command()
@click.argument("package", required=False)
@click.option("--target", default="cpu", show_default=True)
@click.option("--size", default=None, help="WxH (default: the package's).")
@click.option("--steps", type=int, default=None)
@click.option("--guidance", type=float, default=None)
@click.option("--scheduler", default=None)
@click.option("--repeats", type=int, default=3, show_default=True)
@click.option("--warmup", type=int, default=1, show_default=True)
@click.option("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: all cores).")
@click.option("--no-cold-start", is_flag=True, help="Skip the separate-process cold-start measurement.")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def bench(package, target, size, steps, guidance, scheduler, repeats, warmup, threads, no_cold_start, as_json):
    """Time text encoder, per-step UNet, VAE decoder, whole image; peak RSS; cold start."""
    from nanoedge.runtime.benchmark import run_benchmark
    from nanoedge.runtime.default_model import default_package_path

    if repeats < 1 or warmup < 0:
        raise click.BadParameter("--repeats must be >= 1 and --warmup >= 0")
    package = package or str(default_package_path())
    say = (lambda m: None) if as_json else (lambda m: click.echo(f"  {m}", err=True))
    result = run_benchmark(package, target, size, steps, guidance, scheduler, repeats, warmup, not no_cold_start, threads, say)
    if as_json:
        json.dump(result.as_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return

    def fmt(spread) -> str:
        return f"{spread.median * 1000:9.1f} ms  (min {spread.minimum * 1000:.1f}, max {spread.maximum * 1000:.1f})"

    click.echo(
        f"{result.package} on {result.target}: {result.size}, {result.steps} steps, "
        f"guidance {result.guidance:g}, {result.scheduler}, median of {result.repeats}"
    )
    if target.lower() == "auto":
        click.echo(f"  target auto -> {result.target}: {result.target_reason}")
    cpu = result.cpu
    click.echo(
        f"  CPU            {cpu.get('model')} ({cpu.get('vendor')}, {cpu.get('arch')}, kind {cpu.get('kind')}): "
        f"{' '.join(cpu.get('features', []))}"
    )
    click.echo(f"  text encoder   {fmt(result.text_encoder_s)}")
    click.echo(f"  UNet per step  {fmt(result.unet_step_s)}")
    click.echo(f"  VAE decoder    {fmt(result.vae_decoder_s)}")
    click.echo(f"  image          {fmt(result.image_s)}")
    click.echo(f"  load           {result.load_s * 1000:9.1f} ms")
    if result.cold_start_s is not None:
        click.echo(f"  cold start     {result.cold_start_s * 1000:9.1f} ms  (new process -> first image)")
    click.echo(f"  peak RSS       {result.peak_rss_mb:9.1f} MiB")
    click.echo(f"  package        {result.package_bytes / 2**20:9.1f} MiB")

"""``nanoedge export SOURCE -o OUT``."""

from __future__ import annotations

import json
import sys
import time

import click

from .common import handle_errors


@click.command()
@click.argument("source")
@click.option("-o", "--output", required=True, type=click.Path(), help="Package folder to write (must not exist unless --overwrite).")
@click.option("--static-shape", metavar="WxH", default=None, help="Fix height/width (NPUs need it), e.g. 512x512.")
@click.option("--batch", type=int, default=1, show_default=True, help="Batch size fixed by --static-shape.")
@click.option(
    "--target", default=None, help="Prepare graphs for this target (e.g. qnn: folds static-shape graphs so the NPU takes them whole)."
)
@click.option("--exporter", type=click.Choice(["torchscript", "dynamo"]), default="torchscript", show_default=True)
@click.option("--opset", type=int, default=17, show_default=True)
@click.option(
    "--tolerance",
    type=float,
    default=1e-3,
    show_default=True,
    help="Allowed ONNX-vs-PyTorch max abs difference, relative to max(1, |reference|).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Weight seed for preset:NAME sources.")
@click.option("--id", "model_id", default=None, help="Model id written into the manifest (default: the source's name).")
@click.option(
    "--output-sizes", default=None, metavar="WxH,...", help="Extra sizes served by resizing the native image, e.g. 512x512,768x768."
)
@click.option("--default-steps", type=int, default=None, help="Steps the package defaults to (default: the source's).")
@click.option("--default-guidance", type=float, default=None, help="Guidance the package defaults to (default: the source's).")
@click.option("--vae-decoder", "vae_decoder", default=None, metavar="SOURCE",
              help="Export this decoder instead of the model's VAE decoder: preset:taesd, an AutoencoderTiny folder or a hub id "
              "(e.g. madebyollin/taesd). TAESD decodes several times faster at a small quality cost.")
@click.option("--fuse-attention/--no-fuse-attention", default=True, show_default=True,
              help="Fuse attention into onnxruntime's MultiHeadAttention (CPU/CUDA: no score matrix in memory). "
              "Never applied for NPU targets; --no-fuse-attention keeps plain ONNX ops everywhere.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists (atomically, at the end).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest summary as JSON.")
@handle_errors
def export(
    source,
    output,
    static_shape,
    batch,
    target,
    exporter,
    opset,
    tolerance,
    seed,
    model_id,
    output_sizes,
    default_steps,
    default_guidance,
    vae_decoder,
    fuse_attention,
    overwrite,
    as_json,
):
    """Export a diffusers checkpoint to an ONNX package.

    SOURCE is a local diffusers folder, a hub id (owner/name) or preset:NAME
    (tiny-random, bk-sdm-tiny, bk-sdm-small, sd15, sd21-base: random weights).
    """
    from nanoedge.core.errors import require
    from nanoedge.core.sizes import parse_size

    require("torch", "export")
    from nanoedge.export import ExportOptions, export_package

    options = ExportOptions(
        static_shape=parse_size(static_shape) if static_shape else None,
        batch=batch,
        exporter=exporter,
        opset=opset,
        tolerance=tolerance,
        seed=seed,
        overwrite=overwrite,
        model_id=model_id,
        target=target,
        output_sizes=tuple(parse_size(s) for s in output_sizes.split(",") if s.strip()) if output_sizes else (),
        default_steps=default_steps,
        default_guidance=default_guidance,
        vae_decoder=vae_decoder,
        fuse_attention=fuse_attention,
    )
    started = time.perf_counter()
    quiet = as_json

    def on_stage(name: str, info: dict) -> None:
        if quiet:
            return
        if name == "load":
            click.echo(f"[1/5] loading {info['source']}", err=True)
        elif name == "export:text_encoder":
            click.echo(f"[2/5] text encoder ({info['parameters'] / 1e6:.1f} M params): export + check", err=True)
        elif name == "export:unet":
            click.echo(f"[3/5] UNet ({info['parameters'] / 1e6:.1f} M params): export + check", err=True)
        elif name == "load:decoder":
            click.echo(f"      decoder from {info['source']}", err=True)
        elif name == "export:vae_decoder":
            click.echo(
                f"[4/5] VAE decoder, {info.get('decoder', 'AutoencoderKL')} ({info['parameters'] / 1e6:.1f} M params): export + check",
                err=True,
            )
        elif name.endswith(":done") and name.startswith("export:"):
            click.echo(f"      ok in {info['seconds']:.1f} s, max |onnx - torch| = {info['max_abs_diff']:.2e}", err=True)
        elif name == "write":
            click.echo("[5/5] tokenizer, scheduler, manifest (sha256 of every file)", err=True)

    manifest = export_package(source, output, options, on_stage=on_stage)
    summary = {
        "package": str(manifest.root),
        "id": manifest.id,
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb": manifest.provenance["peak_rss_mb"],
        "components": {
            name: {"parameters": c["parameters"], "max_abs_diff": c["verification"]["max_abs_diff"]}
            for name, c in manifest.components.items()
        },
    }
    if as_json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        click.echo(f"wrote {manifest.root} in {summary['seconds']} s (peak RSS {summary['peak_rss_mb'] / 1024:.1f} GiB)")

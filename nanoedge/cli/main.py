"""Entry point: ``nanoedge [-v] COMMAND ...``."""

from __future__ import annotations

import click

from nanoedge import __version__

from .bench_cmd import bench
from .common import setup_logging
from .eval_cmd import eval_cmd
from .export_cmd import export
from .generate_cmd import generate
from .info_cmd import info
from .quantize_cmd import quantize
from .serve_cmd import serve
from .targets_cmd import check, compile_cmd, targets


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging and full tracebacks.")
@click.version_option(__version__, prog_name="nanoedge")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """nanoedge: text-to-image diffusion from PyTorch to the edge.

    \b
    nanoedge export preset:tiny-random -o pkg     checkpoint -> ONNX package
    nanoedge generate "a red circle" -m pkg       package -> image (no torch needed)
    nanoedge info pkg                             what a package holds
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    setup_logging(verbose)


cli.add_command(export)
cli.add_command(generate)
cli.add_command(info)
cli.add_command(quantize)
cli.add_command(eval_cmd)
cli.add_command(serve)
cli.add_command(targets)
cli.add_command(check)
cli.add_command(compile_cmd)
cli.add_command(bench)


def main() -> None:
    cli(prog_name="nanoedge")

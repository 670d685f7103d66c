"""``python -m nanoedge.export.training -o DIR [--unet-steps N ...]``: train the demo model.

Every TrainConfig field is a flag (``--unet-steps``, ``--seed``...); the defaults reproduce
the shipped checkpoint. Progress goes to stderr, one line per 50 steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from .recipe import TrainConfig
from .train import train_demo


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, TrainConfig]:
    """The command line and the TrainConfig it asks for (booleans take --flag / --no-flag)."""
    parser = argparse.ArgumentParser(prog="python -m nanoedge.export.training", description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", required=True, help="checkpoint folder to write (diffusers layout)")
    parser.add_argument("--no-previews", action="store_true", help="skip the judged preview strips written beside OUTPUT")
    parser.add_argument("--vae-only", action="store_true", help="stop after stage 1 and write OUTPUT/vae")
    parser.add_argument("--vae-from", default=None, help="reuse the VAE a --vae-only run wrote to this folder (same result as one run)")
    parser.add_argument(
        "--init-from", default=None, help="continue the text encoder and UNet of a checkpoint this trainer wrote (and reuse its VAE)"
    )
    for f in dataclasses.fields(TrainConfig):
        flag = f"--{f.name.replace('_', '-')}"
        if isinstance(f.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            parser.add_argument(flag, type=type(f.default), default=f.default)
    args = parser.parse_args(argv)
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    return args, cfg


def main(argv: list[str] | None = None) -> int:
    args, cfg = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    def report(stage: str, info: dict) -> None:
        text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
        logging.getLogger("nanoedge.train").info("%s %s", stage, text)

    train_demo(
        args.output,
        cfg,
        report=report,
        previews=not args.no_previews,
        vae_only=args.vae_only,
        vae_from=args.vae_from,
        init_from=args.init_from,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

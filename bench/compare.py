"""nanoedge against diffusers and optimum-onnx, side by side, each variant in its own process.

    python bench/compare.py prepare --preset bk-sdm-tiny --work /tmp/compare
    python bench/compare.py run --work /tmp/compare --out docs/benchmarks \
        --nanoedge fp32=/tmp/bk --nanoedge int8=/tmp/bkq/int8 ... \
        --config 512x512:25:7.5 --config 512x512:4:1 --rounds 2

``prepare`` writes the preset's deterministic random weights once as a diffusers folder
(``WORK/diffusers``, what ``StableDiffusionPipeline.from_pretrained`` loads) and exports that
same folder with optimum's own exporter (``WORK/optimum``, what
``ORTStableDiffusionPipeline.from_pretrained`` loads). The nanoedge packages must come from
the same preset and seed (their manifest's provenance is checked).

``run`` measures every variant for every config in rounds: round 1 runs A B C ... in turn,
round 2 runs A B C ... again, so background load on a shared machine spreads over all of
them. Each measurement is a fresh process (``bench/compare_worker.py``) that loads the model
and generates ``--images`` images from the same initial latents; the parent records cold start
(spawn -> first image written in memory), each image's time, and the process's peak RSS
(``os.wait4``). It then writes JSON, a markdown table with ratios against the diffusers
baseline and against optimum, and a PNG chart. ``--scaling`` adds time and peak-RSS curves
against resolution and steps for chosen variants.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# one module per subcommand: prepare, run (the measurements), report (the write-up)
from compare_output import report  # noqa: E402
from compare_prepare import prepare  # noqa: E402
from compare_report import parse_config  # noqa: E402
from compare_run import run_all  # noqa: E402

log = logging.getLogger("bench.compare")
HEAVY_LOCK = "/tmp/nanoedge-heavy.lock"


def parse_variant(text: str, kind: str) -> tuple[str, str, str]:
    label, sep, path = text.partition("=")
    if not sep or not label or not path:
        raise ValueError(f"expected LABEL=PATH, got {text!r}")
    return label, kind, path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="write the diffusers checkpoint and the optimum export")
    p.add_argument("--preset", default="bk-sdm-tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--skip-optimum", action="store_true")
    p.add_argument("--peers", action="append", default=[], metavar="LIST",
                   help="also convert for the peers (bench/peers.py): all, sdcpp, openvino, or labels such as sdcpp-q8_0,ov-int8w")
    p.add_argument("--hybrid-samples", type=int, default=100, help="UNet inputs NNCF calibrates the ov-hybrid variant on")
    r = sub.add_parser("run", help="measure every variant, interleaved, then write the report")
    r.add_argument("--work", type=Path, required=True, help="the folder `prepare` wrote; runs, images and logs go here too")
    r.add_argument("--out", type=Path, required=True, help="where compare.json, compare.md and the charts go")
    r.add_argument("--nanoedge", action="append", default=[], metavar="LABEL=PACKAGE")
    r.add_argument("--nanoedge-reduce-memory", action="append", default=[], metavar="LABEL=PACKAGE",
                   help="a nanoedge package run with Pipeline.load(reduce_memory=True): each model loaded for its stage")
    r.add_argument("--nanoedge-target", action="append", default=[], metavar="LABEL=TARGET",
                   help="run the nanoedge variant LABEL on this target profile (default cpu), e.g. int8-ov=openvino-cpu")
    r.add_argument("--peers", action="append", default=[], metavar="LIST",
                   help="peer variants to measure (bench/peers.py): all, sdcpp, openvino, or labels such as sdcpp-q8_0,ov-int8w")
    r.add_argument("--peer-options", dest="peer_option_overrides", action="append", default=[], metavar="LABEL=JSON",
                   help="override a peer's options, e.g. sdcpp-q8_0='{\"diffusion_conv_direct\": true}'")
    r.add_argument("--no-diffusers", action="store_true")
    r.add_argument("--no-optimum", action="store_true")
    r.add_argument("--config", action="append", type=parse_config, default=[], metavar="WxH:STEPS:GUIDANCE")
    r.add_argument("--rounds", type=int, default=2)
    r.add_argument("--images", type=int, default=1, help="images per process (>1: the first is warm-up, the rest are timed)")
    r.add_argument("--scaling", action="append", type=parse_config, default=[], metavar="WxH:STEPS:GUIDANCE",
                   help="extra configs for the scaling curves (only --scaling-variants run them)")
    r.add_argument("--scaling-variants", default="diffusers,int8")
    r.add_argument("--scaling-rounds", type=int, default=1)
    r.add_argument(
        "--scaling-after", type=int, default=None, help="run the scaling configs after this main round (default: after the last)"
    )
    r.add_argument("--int8-label", default="int8", help="the variant the issue's targets are checked for")
    r.add_argument("--seed", type=int, default=0, help="seed of the shared initial latents")
    r.add_argument("--timeout", type=float, default=1800, help="seconds before one run is killed")
    r.add_argument("--resume", action="store_true", help="keep WORK/runs.jsonl and skip runs already recorded")
    r.add_argument("--skip-provenance-check", action="store_true")
    r.add_argument("--heavy-lock", default=HEAVY_LOCK, help="flock held around runs of --heavy-min-pixels or more ('' = never)")
    r.add_argument(
        "--heavy-min-pixels", type=int, default=512 * 512 + 1, help="runs this size or bigger take --heavy-lock (default: above 512x512)"
    )
    r.add_argument(
        "--lock-variants",
        default="fp32,optimum",
        help="variants whose runs always take --heavy-lock (nanoedge FP32 peaked at 7.7 GB at 512x512 CFG)",
    )
    r.add_argument(
        "--unlocked-rss-limit-mib",
        type=float,
        default=5800,
        help="a run without the lock is killed past this RSS and run again under the lock",
    )
    r.add_argument("--lock-whole-run", action="store_true", help="take --heavy-lock once and hold it until every run is done")
    r.add_argument(
        "--stop-at", default=None, metavar="HH:MM", help="start no new run after this UTC time (the report covers what finished)"
    )
    r.add_argument(
        "--kill-at",
        default=None,
        metavar="HH:MM",
        help="kill a run still going at this UTC time, and skip runs whose previous round would end after it",
    )
    rep = sub.add_parser("report", help="rewrite the report from WORK/runs.jsonl")
    rep.add_argument("--work", type=Path, required=True)
    rep.add_argument("--out", type=Path, required=True)
    rep.add_argument("--int8-label", default="int8")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.command == "prepare":
        from peers import expand_peer_labels

        prepare(args.preset, args.seed, args.work, args.skip_optimum, expand_peer_labels(args.peers), args.hybrid_samples)
        return 0
    if args.command == "report":
        report(args.work, args.out, int8_label=args.int8_label)
        return 0
    if args.rounds < 1 or args.images < 1 or args.scaling_rounds < 0:
        parser.error("--rounds and --images must be at least 1, --scaling-rounds at least 0")
    if not args.config:
        args.config = [parse_config("512x512:25:7.5"), parse_config("512x512:4:1")]
    variants = []
    if not args.no_diffusers:
        variants.append(("diffusers", "diffusers", str(args.work / "diffusers")))
    if not args.no_optimum:
        variants.append(("optimum", "optimum", str(args.work / "optimum")))
    try:
        variants += [parse_variant(item, "nanoedge") for item in args.nanoedge]
        variants += [parse_variant(item, "nanoedge-reduce-memory") for item in args.nanoedge_reduce_memory]
    except ValueError as exc:
        parser.error(str(exc))
    from peers import PEERS, expand_peer_labels

    try:
        peer_labels = expand_peer_labels(args.peers)
    except ValueError as exc:
        parser.error(str(exc))
    variants += [(label, PEERS[label].kind, str(PEERS[label].path(args.work))) for label in peer_labels]
    args.peer_options = {label: dict(PEERS[label].options) for label in peer_labels}
    args.peer_options_checked = set()
    for item in args.peer_option_overrides:
        label, sep, text = item.partition("=")
        if not sep or label not in args.peer_options:
            parser.error(f"--peer-options expects LABEL=JSON for a peer being run ({', '.join(peer_labels) or 'none'}), got {item!r}")
        try:
            args.peer_options[label].update(json.loads(text))
        except (ValueError, TypeError) as exc:
            parser.error(f"--peer-options {label}: not a JSON object ({exc})")
    labels = [v[0] for v in variants]
    if len(set(labels)) != len(labels):
        parser.error(f"variant labels must be unique: {labels}")
    args.nanoedge_targets = {}
    nanoedge_labels = {label for label, kind, _ in variants if kind.startswith("nanoedge")}
    for item in args.nanoedge_target:
        label, sep, target = item.partition("=")
        if not sep or label not in nanoedge_labels or not target:
            parser.error(
                f"--nanoedge-target expects LABEL=TARGET for a nanoedge variant ({', '.join(sorted(nanoedge_labels))}), got {item!r}"
            )
        args.nanoedge_targets[label] = target
    args.variants = variants
    args.scaling_variants = [v for v in args.scaling_variants.split(",") if v]
    args.lock_variants = [v for v in args.lock_variants.split(",") if v]
    args.kill_at_epoch = None
    if args.kill_at:
        import calendar

        hour, minute = (int(v) for v in args.kill_at.split(":"))
        today = time.gmtime()
        args.kill_at_epoch = calendar.timegm((today.tm_year, today.tm_mon, today.tm_mday, hour, minute, 0, 0, 0, 0))
    run_all(args)
    report(args.work, args.out, int8_label=args.int8_label)
    log.info("report written to %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

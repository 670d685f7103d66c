"""Per-step UNet time of several packages, side by side, in one process.

    python bench/unet_step_time.py fp32=/tmp/bk int8=/tmp/bk-int8 ... [--size 512x512] [--batch 2]

Each package's UNet is opened exactly as the runtime opens it (``nanoedge.targets``), fed the
same seeded inputs (a CFG batch of 2 by default: what one denoising step costs), warmed up,
then timed. Packages are measured in rounds (A B C, A B C, ...) with one session alive at a
time: interleaving spreads background load on a shared machine over every variant, and one
session at a time keeps peak memory at one UNet's (four 512 px sessions at once took 21 GB).
Ratios are against the first package given.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from nanoedge.core.manifest import Manifest
from nanoedge.core.sizes import parse_size
from nanoedge.targets import create_session, get_profile
from nanoedge.targets.cpuinfo import cpu_info

log = logging.getLogger("bench.unet_step_time")


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * 4096 / 2**20


def unet_inputs(manifest: Manifest, width: int, height: int, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    latent = manifest.latent
    factor = int(latent["scale_factor"])
    states = next(i for i in manifest.component("unet")["inputs"] if i["name"] == "encoder_hidden_states")
    seq, dim = int(states["shape"][1]), int(states["shape"][2])
    return {
        "sample": rng.standard_normal((batch, int(latent["channels"]), height // factor, width // factor), dtype=np.float32),
        "timestep": np.full((batch,), 500.0, dtype=np.float32),
        "encoder_hidden_states": (rng.standard_normal((batch, seq, dim), dtype=np.float32) * 0.5).astype(np.float32),
    }


def unet_bytes(manifest: Manifest) -> int:
    return sum(manifest.files[rel]["bytes"] for rel in manifest.component("unet")["files"] if rel in manifest.files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("packages", nargs="+", help="LABEL=PACKAGE_DIR (the first is the baseline)")
    parser.add_argument("--size", default="512x512")
    parser.add_argument("--batch", type=int, default=2, help="2 = one CFG step")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--runs", type=int, default=2, help="timed runs per package per round (after one warm-up)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--target", action="append", default=[], metavar="LABEL=TARGET",
                        help="open LABEL's UNet on this target profile instead of cpu (e.g. int8-ov=openvino-cpu)")
    parser.add_argument("--json", dest="as_json", action="store_true")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.runs < 1:
        parser.error("--rounds and --runs must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    size = parse_size(args.size)
    entries = []
    for item in args.packages:
        label, _, path = item.partition("=")
        if not path:
            label, path = Path(item).name, item
        manifest = Manifest.load(path)
        entries.append({"label": label, "path": path, "manifest": manifest, "times": [], "rss_mib": 0.0, "target": "cpu"})
    targets = dict(item.partition("=")[::2] for item in args.target)
    unknown = set(targets) - {e["label"] for e in entries}
    if unknown:
        parser.error(f"--target names no package label: {', '.join(sorted(unknown))}")
    for entry in entries:
        entry["target"] = targets.get(entry["label"], "cpu")
    feeds = unet_inputs(entries[0]["manifest"], size.width, size.height, args.batch)
    for round_index in range(args.rounds):
        for entry in entries:
            session = create_session(entry["manifest"].component_path("unet"), get_profile(entry["target"]), args.threads)
            session.run(None, feeds)  # warm-up: first-run allocations and kernel selection
            for _ in range(args.runs):
                started = time.perf_counter()
                session.run(None, feeds)
                entry["times"].append(time.perf_counter() - started)
            entry["rss_mib"] = max(entry["rss_mib"], rss_mib())
            log.info("round %d %-12s %s", round_index + 1, entry["label"], " ".join(f"{t:.2f}s" for t in entry["times"][-args.runs:]))
            del session
            gc.collect()

    base = statistics.median(entries[0]["times"])
    base_bytes = unet_bytes(entries[0]["manifest"])
    rows = []
    for entry in entries:
        median = statistics.median(entry["times"])
        nbytes = unet_bytes(entry["manifest"])
        precision = entry["manifest"].component("unet").get("precision", "?")
        rows.append(
            {
                "label": entry["label"],
                "target": entry["target"],
                "precision": precision,
                "unet_mib": round(nbytes / 2**20, 1),
                "bytes_ratio": round(nbytes / base_bytes, 4),
                "median_s": round(median, 3),
                "min_s": round(min(entry["times"]), 3),
                "time_ratio": round(median / base, 3),
                "runs": len(entry["times"]),
                "rss_mib_after": round(entry["rss_mib"]),
            }
        )
    if args.as_json:
        json.dump({"size": str(size), "batch": args.batch, "cpu": cpu_info().as_dict(), "rows": rows}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"CPU: {cpu_info().describe()} [kind {cpu_info().kind}]")
    print(f"UNet per step, {size}, batch {args.batch} ({'CFG pair' if args.batch == 2 else 'no CFG'}), "
          f"{args.rounds} rounds x {args.runs} runs, median; ratios vs {entries[0]['label']}")
    print(f"{'label':<14}{'precision':<12}{'UNet MiB':>10}{'bytes':>8}{'median s':>10}{'min s':>8}{'time':>8}")
    for r in rows:
        print(
            f"{r['label']:<14}{r['precision']:<12}{r['unet_mib']:>10.1f}{r['bytes_ratio']:>8.3f}{r['median_s']:>10.2f}{r['min_s']:>8.2f}{r['time_ratio']:>8.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

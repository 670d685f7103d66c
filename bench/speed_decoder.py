"""VAE decoder time of several packages side by side (e.g. the KL decoder against TAESD).

    python bench/speed_decoder.py kl=/tmp/bk taesd=/tmp/bk-taesd [--size 512x512] [--rounds 3] [--runs 2] [--json]

Each package's ``vae_decoder`` is opened as the runtime opens it, fed the same seeded latent
(one image, as the runtime decodes), warmed up, then timed; packages take turns in rounds
(one session alive at a time) so background load falls on all of them. Prints median wall
time, CPU seconds per thread, peak RSS growth and parameters; ratios against the first.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time

import numpy as np

from nanoedge.core.manifest import Manifest
from nanoedge.core.sizes import parse_size
from nanoedge.targets import create_session, get_profile


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096 / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("packages", nargs="+", help="LABEL=PACKAGE_DIR (the first is the baseline)")
    parser.add_argument("--size", default="512x512")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--json", dest="as_json", action="store_true")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.runs < 1:
        parser.error("--rounds and --runs must be at least 1")
    size = parse_size(args.size)
    threads = max(1, len(os.sched_getaffinity(0)))
    entries = []
    for item in args.packages:
        label, _, path = item.partition("=")
        manifest = Manifest.load(path)
        entries.append({"label": label, "manifest": manifest, "wall": [], "cpu": [], "rss_growth_mib": 0.0})
    first = entries[0]["manifest"]
    factor = int(first.latent["scale_factor"])
    latent = np.random.default_rng(0).standard_normal(
        (1, int(first.latent["channels"]), size.height // factor, size.width // factor), dtype=np.float32
    )
    profile = get_profile("cpu")
    for round_index in range(args.rounds):
        for entry in entries:
            gc.collect()
            before = rss_mib()
            session = create_session(entry["manifest"].component_path("vae_decoder"), profile)
            feeds = {"latent_sample": latent / np.float32(entry["manifest"].decoder()["scaling_factor"])}
            session.run(None, feeds)
            for _ in range(args.runs):
                wall, cpu = time.perf_counter(), time.process_time()
                session.run(None, feeds)
                entry["wall"].append(time.perf_counter() - wall)
                entry["cpu"].append((time.process_time() - cpu) / threads)
            entry["rss_growth_mib"] = max(entry["rss_growth_mib"], rss_mib() - before)
            print(
                f"round {round_index + 1} {entry['label']:<8} {' '.join(f'{t:.3f}' for t in entry['wall'][-args.runs:])} s", file=sys.stderr
            )
            del session
    base_wall, base_cpu = statistics.median(entries[0]["wall"]), statistics.median(entries[0]["cpu"])
    rows = []
    for entry in entries:
        decoder = entry["manifest"].decoder()
        wall, cpu = statistics.median(entry["wall"]), statistics.median(entry["cpu"])
        rows.append(
            {
                "label": entry["label"],
                "decoder": decoder["class"],
                "parameters": entry["manifest"].component("vae_decoder").get("parameters"),
                "median_wall_s": round(wall, 3),
                "wall_ratio": round(wall / base_wall, 3),
                "median_cpu_s": round(cpu, 3),
                "cpu_ratio": round(cpu / base_cpu, 3),
                "rss_growth_mib": round(entry["rss_growth_mib"]),
                "runs": len(entry["wall"]),
            }
        )
    if args.as_json:
        json.dump({"size": str(size), "rows": rows, "loadavg_at_end": os.getloadavg()}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"VAE decoder, one {size} image, {args.rounds} rounds x {args.runs} runs, medians; ratios vs {entries[0]['label']}")
    print(f"{'label':<10}{'decoder':<17}{'params M':>9}{'wall s':>9}{'x':>7}{'cpu s':>8}{'x':>7}{'RSS +MiB':>10}")
    for r in rows:
        print(f"{r['label']:<10}{r['decoder']:<17}{(r['parameters'] or 0) / 1e6:>9.1f}{r['median_wall_s']:>9.3f}{r['wall_ratio']:>7.3f}"
              f"{r['median_cpu_s']:>8.3f}{r['cpu_ratio']:>7.3f}{r['rss_growth_mib']:>10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

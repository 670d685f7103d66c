"""Where a UNet step's time goes: onnxruntime's own profiler, summed by operator type.

    python bench/speed_profile.py PACKAGE [PACKAGE ...] [--size 512x512] [--batch 2] [--runs 2] [--top 12] [--json]

Each package's UNet is opened the way the runtime opens it (``nanoedge.targets.session_options``)
with onnxruntime's profiling switched on, warmed up once, then run ``--runs`` times; the
profiler's per-node events of the timed runs are summed by op type (and the heaviest single
nodes listed), so speed work starts from what actually dominates rather than from guesses.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

from nanoedge.core.manifest import Manifest
from nanoedge.core.sizes import parse_size
from nanoedge.targets import get_profile
from nanoedge.targets.session import session_options

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unet_step_time import unet_inputs  # noqa: E402


def profile_unet(package: str, width: int, height: int, batch: int, runs: int) -> dict:
    import onnxruntime as ort

    manifest = Manifest.load(package)
    feeds = unet_inputs(manifest, width, height, batch)
    with tempfile.TemporaryDirectory(prefix="nanoedge-profile-") as tmp:
        options = session_options(get_profile("cpu"))
        session = ort.InferenceSession(str(manifest.component_path("unet")), options, providers=["CPUExecutionProvider"])
        session.run(None, feeds)  # warm-up (not profiled: profiling starts below)
        del session
        options = session_options(get_profile("cpu"))
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "unet")
        session = ort.InferenceSession(str(manifest.component_path("unet")), options, providers=["CPUExecutionProvider"])
        session.run(None, feeds)  # warm-up, dropped below
        walls = []
        for _ in range(runs):
            started = time.perf_counter()
            session.run(None, feeds)
            walls.append(time.perf_counter() - started)
        trace = json.loads(Path(session.end_profiling()).read_text())
    # Node events belong to a model_run; keep the ones inside the last ``runs`` runs.
    run_events = sorted((e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"), key=lambda e: e["ts"])[-runs:]
    windows = [(e["ts"], e["ts"] + e["dur"]) for e in run_events]
    by_type: collections.Counter = collections.Counter()
    by_node: collections.Counter = collections.Counter()
    count: collections.Counter = collections.Counter()
    for event in trace:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        if not any(start <= event["ts"] <= end for start, end in windows):
            continue
        op = event.get("args", {}).get("op_name", "?")
        by_type[op] += event["dur"]
        by_node[(op, event["name"][: -len("_kernel_time")])] += event["dur"]
        count[op] += 1
    total = sum(by_type.values()) or 1
    run_us = sum(e["dur"] for e in run_events) or 1
    return {
        "package": package,
        "precision": manifest.component("unet").get("precision"),
        "wall_s": [round(w, 3) for w in walls],
        "kernel_share_of_run": round(total / run_us, 3),
        "by_op": [{"op": op, "ms_per_run": round(us / 1000 / runs, 1), "share": round(us / total, 4), "nodes": count[op] // runs}
                  for op, us in by_type.most_common()],
        "top_nodes": [{"op": op, "node": name, "ms_per_run": round(us / 1000 / runs, 1)} for (op, name), us in by_node.most_common(15)],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("packages", nargs="+")
    parser.add_argument("--size", default="512x512")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--json", dest="as_json", action="store_true")
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    results = [profile_unet(p, size.width, size.height, args.batch, args.runs) for p in args.packages]
    if args.as_json:
        json.dump({"size": str(size), "batch": args.batch, "results": results}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for r in results:
        print(f"\n{r['package']} ({r['precision']}), {size} batch {args.batch}: runs {r['wall_s']} s; "
              f"kernels are {r['kernel_share_of_run']:.0%} of run time")
        print(f"  {'op type':<28}{'ms/run':>10}{'share':>8}{'nodes':>7}")
        for row in r["by_op"][: args.top]:
            print(f"  {row['op']:<28}{row['ms_per_run']:>10.1f}{row['share']:>8.1%}{row['nodes']:>7}")
        print("  heaviest nodes:")
        for row in r["top_nodes"][:8]:
            print(f"    {row['op']:<22}{row['ms_per_run']:>9.1f} ms  {row['node'][:80]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

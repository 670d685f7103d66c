"""Each onnxruntime session option's effect on a UNet step, side by side in one run.

    python bench/speed_options.py fp32=/tmp/bk int8=/tmp/bkq/int8 \\
        [--variants default,no-arena,no-spin,...] [--model fp32:fused-attention=/tmp/fused/model.onnx] \\
        [--size 512x512] [--batch 2] [--rounds 2] [--runs 2] [--json OUT.json]

``default`` is the session exactly as the runtime opens it (``nanoedge.targets.session_options``);
each other variant changes one thing. Every (package, variant) is measured in its own process
(so peak RSS is that variant's alone and no allocator state leaks between variants), in rounds
that interleave all variants (A B C, A B C, ...) so background load on a shared machine falls on
all of them alike. Per run it records wall time and CPU seconds per thread (what the step costs
with the cores to itself), the session's creation time, the process's peak RSS, and the largest
difference of the output from ``default``'s (an option must not change results beyond float
noise). Ratios are medians against ``default`` of the same package.

``--model LABEL:VARIANT=FILE`` adds a variant that opens another model file (e.g. the UNet after
onnxruntime's transformer optimizer fused its attention) with the default options.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

VARIANTS = {
    "default": "the runtime's session (targets.session_options: ORT_ENABLE_ALL, arena on, threads = cores, spinning on)",
    "no-arena": "enable_cpu_mem_arena = False (allocations go straight to malloc/free)",
    "no-mem-pattern": "enable_mem_pattern = False (no pre-planned activation buffer)",
    "mem-pattern": "enable_mem_pattern = True (the onnxruntime default the runtime used before f79390e)",
    "no-spin": "session.intra_op.allow_spinning = 0 (idle pool threads sleep instead of spinning)",
    "spin": "NANOEDGE_SPIN=1: idle pool threads spin (onnxruntime's default, the runtime's before 2b85fba)",
    "old-default": "the runtime's session before f79390e: memory pattern on and spinning (onnxruntime's defaults)",
    "parallel": "execution_mode = ORT_PARALLEL, inter_op_num_threads = 2 (independent branches run concurrently)",
    "extended": "graph_optimization_level = ORT_ENABLE_EXTENDED (everything but the NCHWc layout transforms)",
    "basic": "graph_optimization_level = ORT_ENABLE_BASIC (constant folding and redundant-node removal only)",
    "denormal-zero": "session.set_denormal_as_zero = 1 (flush denormal floats to zero)",
    "iobinding": "default options, run through IOBinding (inputs as OrtValues, output into a preallocated buffer)",
    "threads-1": "intra_op_num_threads = 1",
}


def _options(variant: str):
    import onnxruntime as ort

    from nanoedge.targets import get_profile
    from nanoedge.targets.session import session_options

    if variant in ("spin", "old-default"):
        os.environ["NANOEDGE_SPIN"] = "1"
    options = session_options(get_profile("cpu"))
    if variant == "old-default":
        options.enable_mem_pattern = True
    elif variant == "no-arena":
        options.enable_cpu_mem_arena = False
    elif variant == "no-mem-pattern":
        options.enable_mem_pattern = False
    elif variant == "mem-pattern":
        options.enable_mem_pattern = True
    elif variant == "no-spin":
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    elif variant == "parallel":
        options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        options.inter_op_num_threads = 2
    elif variant == "extended":
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    elif variant == "basic":
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    elif variant == "denormal-zero":
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
    elif variant == "threads-1":
        options.intra_op_num_threads = 1
    return options


def worker(package: str, variant: str, model_file: str | None, size: str, batch: int, runs: int, output_npy: str) -> dict:
    import onnxruntime as ort

    from nanoedge.core.manifest import Manifest
    from nanoedge.core.sizes import parse_size

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from unet_step_time import unet_inputs

    manifest = Manifest.load(package)
    parsed = parse_size(size)
    feeds = unet_inputs(manifest, parsed.width, parsed.height, batch)
    threads = max(1, len(os.sched_getaffinity(0)))
    started = time.perf_counter()
    session = ort.InferenceSession(model_file or str(manifest.component_path("unet")), _options("default" if model_file else variant),
                                   providers=["CPUExecutionProvider"])
    create_s = time.perf_counter() - started
    if variant == "iobinding":
        binding = session.io_binding()
        for name, value in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value))
        out_meta = session.get_outputs()[0]
        out = ort.OrtValue.ortvalue_from_shape_and_type(list(feeds["sample"].shape), np.float32)
        binding.bind_ortvalue_output(out_meta.name, out)

        def run() -> np.ndarray:
            session.run_with_iobinding(binding)
            return out.numpy()
    else:
        def run() -> np.ndarray:
            return session.run(None, feeds)[0]

    result = run()  # warm-up
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        result = run()
        walls.append(time.perf_counter() - wall)
        cpus.append((time.process_time() - cpu) / threads)
    np.save(output_npy, result)
    return {"wall_s": walls, "cpu_s": cpus, "create_s": create_s, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("packages", nargs="*", help="LABEL=PACKAGE_DIR")
    parser.add_argument("--variants", default="default,no-arena,no-mem-pattern,no-spin,extended,denormal-zero,iobinding")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="LABEL:VARIANT=FILE",
        help="an extra variant that opens FILE instead of LABEL's UNet",
    )
    parser.add_argument("--size", default="512x512")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--runs", type=int, default=2, help="timed runs per variant per round (after one warm-up)")
    parser.add_argument("--json", dest="json_out", default=None, help="also write the results here")
    parser.add_argument("--worker", nargs=4, metavar=("PACKAGE", "VARIANT", "MODEL_FILE", "OUTPUT_NPY"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        package, variant, model_file, output_npy = args.worker
        print(json.dumps(worker(package, variant, model_file if model_file != "-" else None, args.size, args.batch, args.runs, output_npy)))
        return 0
    if not args.packages or args.rounds < 1 or args.runs < 1:
        parser.error("give LABEL=PACKAGE arguments, and --rounds/--runs of at least 1")

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or "default" not in variants:
        parser.error(f"unknown variants {unknown} (known: {', '.join(VARIANTS)}); 'default' is required as the baseline")
    packages = dict(item.split("=", 1) for item in args.packages)
    extra: dict[str, dict[str, str]] = {}
    for item in args.model:
        key, _, file = item.partition("=")
        label, _, variant = key.partition(":")
        if label not in packages or not variant or not file:
            parser.error(f"--model {item}: expected LABEL:VARIANT=FILE with LABEL one of {list(packages)}")
        extra.setdefault(label, {})[variant] = file
    cells = [(label, variant, None) for label in packages for variant in variants]
    cells += [(label, variant, file) for label, models in extra.items() for variant, file in models.items()]
    records: dict[tuple[str, str], dict] = {(label, variant): {"wall_s": [], "cpu_s": [], "create_s": [], "peak_rss_mib": 0.0}
                                           for label, variant, _ in cells}
    with tempfile.TemporaryDirectory(prefix="nanoedge-speed-") as tmp:
        for round_index in range(args.rounds):
            for label, variant, file in cells:
                output_npy = str(Path(tmp) / f"{label}-{variant}.npy")
                command = [sys.executable, __file__, "--worker", packages[label], variant, file or "-", output_npy,
                           "--size", args.size, "--batch", str(args.batch), "--runs", str(args.runs)]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0:
                    print(f"{label} {variant}: worker failed\n{done.stderr[-2000:]}", file=sys.stderr)
                    return 1
                measured = json.loads(done.stdout.strip().splitlines()[-1])
                record = records[(label, variant)]
                record["wall_s"] += measured["wall_s"]
                record["cpu_s"] += measured["cpu_s"]
                record["create_s"].append(measured["create_s"])
                record["peak_rss_mib"] = max(record["peak_rss_mib"], measured["peak_rss_mib"])
                print(
                    f"round {round_index + 1} {label:<6} {variant:<16} wall {' '.join(f'{t:.2f}' for t in measured['wall_s'])} s"
                    f"  cpu/thread {' '.join(f'{t:.2f}' for t in measured['cpu_s'])} s  peak {measured['peak_rss_mib']:.0f} MiB",
                    file=sys.stderr,
                )
        for label, variant, _ in cells:
            base = np.load(Path(tmp) / f"{label}-default.npy")
            out = np.load(Path(tmp) / f"{label}-{variant}.npy")
            records[(label, variant)]["max_abs_diff_vs_default"] = float(np.max(np.abs(out - base)))

    from nanoedge.core.manifest import Manifest

    precisions = {label: Manifest.load(path).component("unet").get("precision", "?") for label, path in packages.items()}
    rows = []
    for label, variant, file in cells:
        record, base = records[(label, variant)], records[(label, "default")]
        wall, cpu = statistics.median(record["wall_s"]), statistics.median(record["cpu_s"])
        rows.append({
            "package": label, "variant": variant, "precision": precisions[label], "what": VARIANTS.get(variant, f"model file {file}"),
            "median_wall_s": round(wall, 3), "median_cpu_s": round(cpu, 3),
            "wall_ratio": round(wall / statistics.median(base["wall_s"]), 3), "cpu_ratio": round(cpu / statistics.median(base["cpu_s"]), 3),
            "create_s": round(statistics.median(record["create_s"]), 2), "peak_rss_mib": round(record["peak_rss_mib"]),
            "rss_ratio": round(record["peak_rss_mib"] / base["peak_rss_mib"], 3),
            "max_abs_diff_vs_default": record["max_abs_diff_vs_default"], "runs": len(record["wall_s"]),
        })
    result = {"size": args.size, "batch": args.batch, "rounds": args.rounds, "runs_per_round": args.runs,
              "threads": max(1, len(os.sched_getaffinity(0))), "loadavg_at_end": os.getloadavg(), "rows": rows}
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"UNet step, {args.size} batch {args.batch}, {args.rounds} rounds x {args.runs} runs per variant, one process per "
          f"(package, variant, round), interleaved; medians; ratios vs 'default' of the same package")
    print(
        f"{'package':<8}{'variant':<18}{'wall s':>8}{'x':>7}{'cpu s':>8}{'x':>7}{'create s':>10}{'peak MiB':>10}{'x':>7}{'max|diff|':>11}"
    )
    for r in rows:
        print(
            f"{r['package']:<8}{r['variant']:<18}{r['median_wall_s']:>8.2f}{r['wall_ratio']:>7.3f}{r['median_cpu_s']:>8.2f}{r['cpu_ratio']:>7.3f}"
            f"{r['create_s']:>10.1f}{r['peak_rss_mib']:>10.0f}{r['rss_ratio']:>7.3f}{r['max_abs_diff_vs_default']:>11.2e}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

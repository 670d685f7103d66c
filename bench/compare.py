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
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from nanoedge.core.manifest import MANIFEST_NAME, Manifest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from compare_report import (  # noqa: E402
    Config,
    bar_chart,
    line_chart,
    load_average,
    machine_description,
    parse_config,
    psnr,
    render_table,
    summarize,
    targets_check,
    tree_bytes,
)

log = logging.getLogger("bench.compare")
HEAVY_LOCK = "/tmp/nanoedge-heavy.lock"


# -- prepare ---------------------------------------------------------------------------------
def prepare(
    preset: str, seed: int, work: Path, skip_optimum: bool = False, peers: list[str] | None = None, hybrid_samples: int = 100
) -> None:
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / "diffusers"
    if not (ckpt / "model_index.json").exists():
        from nanoedge.export.source import load_source, save_checkpoint

        started = time.perf_counter()
        model = load_source(f"preset:{preset}", seed)
        save_checkpoint(model, ckpt)
        (ckpt / "compare_source.json").write_text(json.dumps({"preset": preset, "seed": seed}))
        log.info("diffusers checkpoint written to %s in %.1f s", ckpt, time.perf_counter() - started)
    else:
        log.info("diffusers checkpoint already at %s", ckpt)
    onnx_dir = work / "optimum"
    if peers:  # stable-diffusion.cpp / OpenVINO GenAI models from the same folder (bench/peers.py)
        from peers import prepare_peers

        failures = prepare_peers(work, peers, hybrid_samples)
        if failures:
            raise SystemExit("peer conversion failed:\n" + "\n".join(failures))
    if skip_optimum or (onnx_dir / "model_index.json").exists():
        log.info("optimum export %s", "skipped" if skip_optimum else f"already at {onnx_dir}")
        return
    from optimum.exporters.onnx import main_export

    started = time.perf_counter()
    # optimum's own exporter, as a user runs it (optimum-cli export onnx --task text-to-image);
    # validation is skipped (it re-runs every model in PyTorch): the run's PSNR column checks the images
    main_export(str(ckpt), output=str(onnx_dir), task="text-to-image", do_validation=False)
    log.info("optimum export written to %s in %.1f s", onnx_dir, time.perf_counter() - started)
    (onnx_dir / "compare_export.json").write_text(json.dumps({"source": str(ckpt), "seconds": round(time.perf_counter() - started, 1)}))


# -- run -------------------------------------------------------------------------------------
def parse_variant(text: str, kind: str) -> tuple[str, str, str]:
    label, sep, path = text.partition("=")
    if not sep or not label or not path:
        raise ValueError(f"expected LABEL=PATH, got {text!r}")
    return label, kind, path


def check_provenance(package: str, work: Path) -> str | None:
    """Why ``package`` is not built from the same preset/seed as WORK's checkpoint (None = fine)."""
    source_file = work / "diffusers" / "compare_source.json"
    if not source_file.exists():
        return f"{source_file} is missing: run `bench/compare.py prepare` first"
    want = json.loads(source_file.read_text())
    got = Manifest.load(package).provenance.get("source") or {}
    if got.get("kind") != "preset" or got.get("name") != want["preset"] or int(got.get("seed", -1)) != int(want["seed"]):
        return f"{package} was exported from {got}, not preset:{want['preset']} seed {want['seed']}"
    return None


def model_bytes(kind: str, path: str) -> int:
    if Path(path).is_file():  # a single-file model (stable-diffusion.cpp's GGUF)
        return Path(path).stat().st_size
    if kind.startswith("nanoedge"):
        return sum(int(f["bytes"]) for f in Manifest.load(path).files.values())
    return tree_bytes(path, exclude={"compare_source.json", "compare_export.json"})


def latents_for(config: Config, work: Path, seed: int) -> Path:
    folder = work / "latents"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{config.width}x{config.height}-seed{seed}.npy"
    if not path.exists():
        rng = np.random.default_rng(seed)
        np.save(path, rng.standard_normal((1, 4, config.height // 8, config.width // 8), dtype=np.float32))
    return path


def _code_state() -> dict:
    """The repository commit and whether runtime/ or targets/ had uncommitted edits when a run started."""
    root = HERE.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=20).stdout.strip()
        # bytes: the diff may include binary files (the shipped ONNX packages under runtime/models)
        diff = subprocess.run(["git", "diff", "--", "runtime", "targets"], cwd=root, capture_output=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    import hashlib

    return {"head": head, "runtime_targets_dirty": bool(diff), "diff_sha1": hashlib.sha1(diff).hexdigest()[:10] if diff else None}


def _cpu_record() -> dict:
    """Vendor, model, kind and ISA features (nanoedge.targets.cpuinfo): the key of the per-CPU-kind tables."""
    try:
        from nanoedge.targets.cpuinfo import cpu_info
    except ImportError:  # an older nanoedge without cpuinfo: machine_description's flags still name the CPU
        return {}
    return cpu_info().as_dict()


def run_one(label: str, kind: str, path: str, config: Config, round_index: int, args, phase: str, locked: bool = False) -> dict:
    work: Path = args.work
    image_dir = work / "images" / config.key
    image_dir.mkdir(parents=True, exist_ok=True)
    image = image_dir / f"{label}-r{round_index}.png"
    record_file = work / "records" / f"{config.key}-{label}-r{round_index}.json"
    record_file.parent.mkdir(parents=True, exist_ok=True)
    for stale in (image, record_file):
        stale.unlink(missing_ok=True)
    cmd = [sys.executable, str(HERE / "compare_worker.py"), kind, path, "--size", config.size, "--steps", str(config.steps),
           "--guidance", f"{config.guidance:g}", "--latents", str(latents_for(config, work, args.seed)),
           "--images", str(args.images), "--image", str(image), "--json", str(record_file)]
    if label in args.nanoedge_targets:
        cmd += ["--target", args.nanoedge_targets[label]]
    if label in getattr(args, "peer_options", {}):
        cmd += ["--options", json.dumps(args.peer_options[label], sort_keys=True)]
    log_file = work / "logs" / f"{config.key}-{label}-r{round_index}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    load_before = load_average()
    code_state = _code_state()
    timeout = args.timeout if args.kill_at_epoch is None else max(1.0, min(args.timeout, args.kill_at_epoch - time.time()))
    run = _spawn(cmd, log_file, timeout, None if locked or not args.heavy_lock else args.unlocked_rss_limit_mib)
    started, ended, status, usage, timed_out, rss_killed = run
    proc_returncode = os.waitstatus_to_exitcode(status)
    run = {"phase": phase, "config": config.key, "size": config.size, "steps": config.steps, "guidance": config.guidance,
           "variant": label, "kind": kind, "path": path, "round": round_index, "command": " ".join(cmd),
           "wall_s": round(ended - started, 3),
           "cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "loadavg_before": load_before, "loadavg_after": load_average(),
           "model_bytes": model_bytes(kind, path), "image": str(image.relative_to(work)), "ok": False, "locked": locked, "code": code_state}
    if rss_killed:
        run["needs_lock"] = True
        run["error"] = f"killed: RSS passed {args.unlocked_rss_limit_mib} MiB without the heavy-memory lock"
        return run
    if proc_returncode != 0 or not record_file.exists():
        tail = log_file.read_text()[-1500:] if log_file.exists() else ""
        run["error"] = f"exit {proc_returncode}{' (timed out)' if timed_out else ''}: {tail}"
        return run
    record = json.loads(record_file.read_text())
    first, rest = record["image_s"][0], record["image_s"][1:]
    run.update({
        "ok": True,
        "peak_rss_mib": round(record["peak_rss_mib"], 1),
        "cold_start_s": round(record["image_done"][0] - started, 3),
        "load_s": round(record["loaded"] - record["process_t0"], 3),
        "first_image_s": round(first, 3),
        # the time of an image once loaded: later images when there are any, else the first
        "image_s": [round(v, 3) for v in (rest or [first])],
        "image_s_is_first_image": not rest,
        "image_cpu_s": [round(v, 3) for v in (record["image_cpu_s"][1:] or record["image_cpu_s"][:1])],
        "info": record.get("info", {}),
        "cpu_utilization": round(usage.ru_utime + usage.ru_stime, 2) / max(ended - started, 1e-9),
    })
    return run


def _rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def _spawn(cmd: list[str], log_file: Path, timeout: float, rss_limit_mib: float | None = None):
    """Start the worker, wait for it; (spawned, ended, wait status, rusage, timed out, killed for RSS).

    With ``rss_limit_mib`` the worker is killed once its RSS passes it (a run without the
    heavy-memory lock must stay under the machine's shared limit).
    """
    with open(log_file, "w") as log_handle:
        started = time.time()
        proc = subprocess.Popen(cmd + ["--started", repr(started)], stdout=log_handle, stderr=subprocess.STDOUT, env=os.environ.copy())
        deadline = started + timeout
        timed_out = rss_killed = False
        polls = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            polls += 1
            over = rss_limit_mib is not None and polls % 4 == 0 and _rss_mib(proc.pid) > rss_limit_mib
            if over or time.time() > deadline:
                timed_out, rss_killed = not over, over
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: keep Popen from waiting again
        return started, time.time(), status, usage, timed_out, rss_killed


def build_plan(args) -> list[tuple[str, Config, int, tuple[str, str, str]]]:
    """Main rounds (every config x every variant, in order), the scaling runs after round
    ``--scaling-after`` (default: the last)."""
    scaling_variants = [v for v in args.variants if v[0] in args.scaling_variants]
    scaling = [("scaling", config, round_index, variant) for round_index in range(1, args.scaling_rounds + 1)
               for config in args.scaling for variant in scaling_variants]
    after = args.rounds if args.scaling_after is None else args.scaling_after
    plan = []
    for round_index in range(1, args.rounds + 1):
        plan += [("main", config, round_index, variant) for config in args.config for variant in args.variants]
        if round_index == after:
            plan += scaling
    if after < 1 or after > args.rounds:
        plan += scaling
    return plan


def _ready(kind: str, path: str) -> bool:
    from peers import PEER_KINDS, peer_ready

    if kind in PEER_KINDS:
        return peer_ready(kind, path)
    marker = MANIFEST_NAME if kind.startswith("nanoedge") else "model_index.json"
    return (Path(path) / marker).exists()


def _next_run(pending: list, args, needs_lock: set, holding_whole: bool):
    """(position in ``pending``, lock file or None) of the run to start now, or None to wait.

    Plan order is kept whenever possible. A run that needs the heavy-memory lock (its variant
    is in ``needs_lock`` or its size is at least ``--heavy-min-pixels``) takes it if it is free;
    if it is busy, or the run's model folder is not written yet, the next runnable run goes
    first (recorded in the report). When nothing else can run, the first lock-needing run
    blocks on the lock.
    """
    import fcntl

    first_locked = None
    for position, (_index, (_phase, config, _round, (label, kind, path))) in enumerate(pending):
        if not _ready(kind, path):
            continue
        wants_lock = (
            bool(args.heavy_lock) and not holding_whole and (label in needs_lock or config.width * config.height >= args.heavy_min_pixels)
        )
        if not wants_lock:
            return position, None
        handle = open(args.heavy_lock, "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return position, handle
        except BlockingIOError:
            handle.close()
            if first_locked is None:
                first_locked = position
    if first_locked is None:
        return None
    handle = open(args.heavy_lock, "a")
    log.info("    waiting for %s (every runnable run needs it)", args.heavy_lock)
    fcntl.flock(handle, fcntl.LOCK_EX)
    return first_locked, handle


def run_all(args) -> None:
    work: Path = args.work
    if not args.skip_provenance_check:
        for label, kind, path in args.variants:
            if kind.startswith("nanoedge"):
                problem = check_provenance(path, work)
                if problem:
                    raise SystemExit(f"{label}: {problem} (--skip-provenance-check to run anyway)")
        from peers import PEER_KINDS, check_peer_provenance, weights_fingerprint

        fingerprint = None
        for label, kind, path in args.variants:
            if kind in PEER_KINDS:  # a peer model still being prepared is checked when it is written (its record names the weights)
                fingerprint = fingerprint or weights_fingerprint(work / "diffusers")  # hashed once per run
                problem = check_peer_provenance(path, work, fingerprint) if _ready(kind, path) else None
                if problem:
                    raise SystemExit(f"{label}: {problem} (--skip-provenance-check to run anyway)")
        args.peer_fingerprint = fingerprint
    work.mkdir(parents=True, exist_ok=True)
    runs_file = work / "runs.jsonl"
    if not args.resume:
        runs_file.unlink(missing_ok=True)
    done = set()
    if runs_file.exists():
        for line in runs_file.read_text().splitlines():
            r = json.loads(line)
            done.add((r["phase"], r["config"], r["round"], r["variant"]))
    plan = build_plan(args)
    meta = {"argv": sys.argv, "command": "python " + " ".join(sys.argv), "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {**machine_description(), "cpu": _cpu_record()}, "seed": args.seed, "images_per_process": args.images,
            "variants": [{"label": label, "kind": kind, "path": path} for label, kind, path in args.variants],
            "configs": [c.key for c in args.config], "scaling": [c.key for c in args.scaling], "rounds": args.rounds,
            "scaling_rounds": args.scaling_rounds, "scaling_variants": args.scaling_variants}
    previous = json.loads((work / "meta.json").read_text()) if args.resume and (work / "meta.json").exists() else {}
    meta["invocations"] = previous.get("invocations", []) + [{"command": meta["command"], "started_utc": meta["started_utc"]}]
    if previous:
        meta["started_utc"] = previous.get("started_utc", meta["started_utc"])
        # a resumed run may name fewer variants/configs: keep the earlier ones in the report
        labels = {v["label"] for v in meta["variants"]}
        meta["variants"] = [v for v in previous.get("variants", []) if v["label"] not in labels] + meta["variants"]
        order = [v["label"] for v in previous.get("variants", [])]
        meta["variants"].sort(key=lambda v: order.index(v["label"]) if v["label"] in order else len(order))
        for key in ("configs", "scaling", "scaling_variants"):
            meta[key] = list(dict.fromkeys(previous.get(key, []) + meta[key]))
        meta["rounds"] = max(meta["rounds"], previous.get("rounds", 0))
        meta["scaling_rounds"] = max(meta["scaling_rounds"], previous.get("scaling_rounds", 0))
    (work / "meta.json").write_text(json.dumps(meta, indent=2))
    whole_lock = None
    if args.heavy_lock and args.lock_whole_run:
        import fcntl

        whole_lock = open(args.heavy_lock, "a")
        log.info("waiting for %s, held for the whole run", args.heavy_lock)
        fcntl.flock(whole_lock, fcntl.LOCK_EX)
        meta["lock"] = f"{args.heavy_lock} held from {time.strftime('%H:%M:%S', time.gmtime())} UTC to the end"
    pending = [(i, item) for i, item in enumerate(plan, 1) if (item[0], item[1].key, item[2], item[3][0]) not in done]
    needs_lock = {label for label in args.lock_variants}
    retried: set = set()
    walls: dict = {}
    if runs_file.exists():
        for line in runs_file.read_text().splitlines():
            r = json.loads(line)
            walls[(r["variant"], r["config"])] = r["wall_s"]
    while pending:
        if args.stop_at and time.strftime("%H:%M", time.gmtime()) >= args.stop_at:
            log.warning("--stop-at %s UTC reached: %d planned runs not started", args.stop_at, len(pending))
            meta["stopped_early"] = f"--stop-at {args.stop_at} UTC reached; {len(pending)} planned runs not started"
            break
        choice = _next_run(pending, args, needs_lock, whole_lock is not None)
        if choice is None:
            time.sleep(10)  # every pending run waits for the lock or for its model folder
            continue
        position, lock = choice
        index, (phase, config, round_index, (label, kind, path)) = pending.pop(position)
        unchecked_peer = label in getattr(args, "peer_options", {}) and label not in args.peer_options_checked
        if getattr(args, "peer_fingerprint", None) and unchecked_peer:
            from peers import check_peer_provenance

            args.peer_options_checked.add(label)
            problem = check_peer_provenance(path, work, args.peer_fingerprint)
            if problem:  # written after the run started, from other weights
                raise SystemExit(f"{label}: {problem} (--skip-provenance-check to run anyway)")
        previous_wall = walls.get((label, config.key))
        if args.kill_at_epoch is not None and previous_wall is not None and time.time() + previous_wall > args.kill_at_epoch:
            if lock is not None:
                lock.close()
            log.warning(
                "    skipped %s %s round %d: its last run took %.0f s, past --kill-at %s",
                label,
                config.key,
                round_index,
                previous_wall,
                args.kill_at,
            )
            meta.setdefault("skipped", []).append(
                f"{phase} {config.key} r{round_index} {label}: the previous run took "
                f"{previous_wall:.0f} s, it would end after --kill-at {args.kill_at} UTC"
            )
            continue
        if position:
            meta.setdefault("reordered", []).append(
                f"{phase} {config.key} r{round_index} {label} ran before {position} earlier-planned run(s) (lock busy or model not ready)"
            )
        log.info(
            "[%d/%d] %s %s round %d: %s%s",
            index,
            len(plan),
            phase,
            config.key,
            round_index,
            label,
            " (heavy-memory lock held)" if lock or whole_lock else "",
        )
        try:
            run = run_one(label, kind, path, config, round_index, args, phase, locked=bool(lock or whole_lock))
        finally:
            if lock is not None:
                lock.close()
        run["order"] = len(done) + 1
        walls[(label, config.key)] = run["wall_s"]
        done.add((phase, config.key, round_index, label))
        if run.get("needs_lock") and (phase, config.key, round_index, label) not in retried:
            log.warning("    %s; will run again under the lock", run["error"])
            retried.add((phase, config.key, round_index, label))
            needs_lock.add(label)
            pending.insert(0, (index, (phase, config, round_index, (label, kind, path))))
            done.discard((phase, config.key, round_index, label))
            continue
        if run["ok"]:
            log.info("    cold start %.1f s, image %s s, peak RSS %.0f MiB, CPU %.2f cores, load %s",
                     run["cold_start_s"], run["image_s"], run["peak_rss_mib"], run["cpu_utilization"], run["loadavg_after"])
        else:
            log.warning("    FAILED: %s", run["error"][-400:])
        with open(runs_file, "a") as handle:
            handle.write(json.dumps(run) + "\n")
        (work / "meta.json").write_text(json.dumps(meta, indent=2))
    if whole_lock is not None:
        whole_lock.close()
    meta["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (work / "meta.json").write_text(json.dumps(meta, indent=2))


# -- report ----------------------------------------------------------------------------------
def add_psnr(runs: list[dict], work: Path, baseline: str) -> None:
    from PIL import Image

    reference: dict[str, Path] = {}
    for r in sorted(runs, key=lambda r: r["round"]):
        if r["ok"] and r["variant"] == baseline and r["config"] not in reference:
            reference[r["config"]] = work / r["image"]
    for r in runs:
        ref = reference.get(r["config"])
        if r["ok"] and ref is not None and (work / r["image"]).exists():
            with Image.open(ref) as a, Image.open(work / r["image"]) as b:
                r["psnr_vs_diffusers"] = round(psnr(a.convert("RGB"), b.convert("RGB")), 2)


def report(work: Path, out: Path, baseline: str = "diffusers", second: str = "optimum", int8_label: str = "int8",
           copy_images: bool = True) -> dict:
    meta = json.loads((work / "meta.json").read_text())
    runs = [json.loads(line) for line in (work / "runs.jsonl").read_text().splitlines() if line.strip()]
    add_psnr(runs, work, baseline)
    from peers_report import drop_incomparable_psnr, peers_section

    drop_incomparable_psnr(runs)
    order = [v["label"] for v in meta["variants"]]
    order += [label for label in dict.fromkeys(r["variant"] for r in runs) if label not in order]  # from earlier invocations
    configs = {}
    for r in runs:
        configs.setdefault(
            r["config"], Config(int(r["size"].split("x")[0]), int(r["size"].split("x")[1]), int(r["steps"]), float(r["guidance"]))
        )
    main_runs = [r for r in runs if r["phase"] == "main"]
    summary = summarize(main_runs)
    scaling_summary = summarize(runs)  # scaling curves use every run of their variants (main configs included)
    loads = [v for r in runs for v in (r["loadavg_before"][:1] + r["loadavg_after"][:1])]
    result = {
        "meta": meta,
        "summary": summary,
        "targets": {},
        "load_average_1min": {
            "min": min(loads, default=None),
            "max": max(loads, default=None),
            "median": round(float(np.median(loads)), 2) if loads else None,
        },
        "runs": runs,
    }
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# Side-by-side benchmark: diffusers vs optimum-onnx vs nanoedge ({meta['started_utc']})", "",
          "Command(s), in order (a later one with --resume adds the runs the earlier left):", ""]
    md += [f"    {inv['command']}" for inv in meta.get("invocations", [{"command": meta["command"]}])]
    md += ["", f"Stopped early: {meta['stopped_early']}" if meta.get("stopped_early") else "All planned runs were started.", ""]
    if meta.get("skipped"):
        md += ["Runs not started because they would not have finished before the time limit:", ""]
        md += [f"- {line}" for line in meta["skipped"]] + [""]
    if meta.get("reordered"):
        md += ["Runs started out of plan order (the heavy-memory lock was busy or a model folder was not written yet):", ""]
        md += [f"- {line}" for line in meta["reordered"]] + [""]
    if meta.get("lock"):
        md += [f"Memory lock: {meta['lock']} (no other memory-heavy job ran beside it).", ""]
    cpu = meta["machine"].get("cpu", {})
    md += [
        "",
        f"CPU kind: {cpu.get('kind', 'not recorded')} (vendor {cpu.get('vendor', '?')}; ISA {' '.join(cpu.get('features', [])) or '?'}).",
        "",
        f"Machine: {meta['machine'].get('cpu_model')}, {meta['machine'].get('logical_cpus')} logical CPUs "
        f"({meta['machine'].get('physical_cores_per_socket')} cores per socket; "
        f"flags {' '.join(meta['machine'].get('cpu_flags_of_note', []))}), "
        f"{meta['machine'].get('ram_gib')} GiB RAM; 1-min load average during the run "
        f"{result['load_average_1min']['min']}–{result['load_average_1min']['max']} (median {result['load_average_1min']['median']}).",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["machine"].get("versions", {}).items()),
        "",
        f"Rounds planned: up to {meta['rounds']} (variants interleaved A B C ... per round, each run a fresh process; "
        "the (n) column counts the images actually measured), "
        f"{meta['images_per_process']} image(s) per process. Image time = "
        + (
            "generation time of the images after the first in each process."
            if meta["images_per_process"] > 1
            else "generation time of the process's one image (model already loaded; includes first-run warm-up)."
        ),
        "",
    ]
    charts = []
    for key in meta["configs"]:
        if key not in summary:
            continue
        config = configs[key]
        md += [
            f"## {config.title}",
            "",
            render_table(config, summary[key], order, baseline, second if second in summary[key] else None),
            "",
        ]
        checks = targets_check(summary[key], int8_label, baseline, second) if int8_label in summary[key] else []
        result["targets"][key] = checks
        for c in checks:
            value = "—" if c["value"] is None else f"{c['value']:.2f}"
            md.append(
                f"- target {c['target']}: measured {value} (goal {c['goal']}) → "
                f"{'met' if c['met'] else 'MISSED' if c['met'] is not None else 'not measured'}"
            )
        md.append("")
        panels = [
            {
                "title": "image time, median (min–max)",
                "unit": "s",
                "bars": [
                    (
                        label,
                        summary[key][label]["image_s"]["median"],
                        summary[key][label]["image_s"]["min"],
                        summary[key][label]["image_s"]["max"],
                    )
                    for label in order
                    if label in summary[key]
                ],
            },
            {
                "title": "peak RSS of the process, median (min–max)",
                "unit": "MiB",
                "bars": [
                    (
                        label,
                        summary[key][label]["peak_rss_mib"]["median"],
                        summary[key][label]["peak_rss_mib"]["min"],
                        summary[key][label]["peak_rss_mib"]["max"],
                    )
                    for label in order
                    if label in summary[key]
                ],
            },
            {
                "title": "cold start: process start -> first image",
                "unit": "s",
                "bars": [
                    (
                        label,
                        summary[key][label]["cold_start_s"]["median"],
                        summary[key][label]["cold_start_s"]["min"],
                        summary[key][label]["cold_start_s"]["max"],
                    )
                    for label in order
                    if label in summary[key]
                ],
            },
        ]
        chart = out / f"compare-{key}.png"
        bar_chart(panels, chart, f"bk-sdm-tiny {config.title}")
        charts.append(chart.name)
        md += [f"![{config.title}]({chart.name})", ""]
    # scaling curves: series over size at fixed (steps, guidance), and over steps at fixed (size, guidance)
    scaling_variants = meta.get("scaling_variants") or []
    has_scaling_runs = any(r["phase"] == "scaling" for r in runs)
    if meta.get("scaling") and scaling_variants and has_scaling_runs:
        md += ["## Scaling curves", "", f"Variants {', '.join(scaling_variants)}; {meta['scaling_rounds']} round(s) for the extra points, "
               "the main table's points included.", ""]
        keys = [k for k in scaling_summary if any(v in scaling_summary[k] for v in scaling_variants)]
        by_res: dict[tuple, list[Config]] = {}
        by_steps: dict[tuple, list[Config]] = {}
        for k in keys:
            c = configs[k]
            by_res.setdefault((c.steps, c.guidance), []).append(c)
            by_steps.setdefault((c.size, c.guidance), []).append(c)
        panels = []
        rows = ["| curve | point | " + " | ".join(f"{v} image s | {v} image CPU s | {v} peak RSS MiB" for v in scaling_variants) + " |",
                "|---|---|" + "---:|---:|---:|" * len(scaling_variants)]
        def add_curve(name: str, xlabel: str, cs: list[Config], xof) -> None:
            cs = sorted(cs, key=xof)
            time_series, rss_series, cpu_series = {}, {}, {}
            for v in scaling_variants:
                time_series[v] = [(xof(c), (scaling_summary[c.key].get(v) or {}).get("image_s", {}).get("median")) for c in cs]
                cpu_series[v] = [(xof(c), (scaling_summary[c.key].get(v) or {}).get("image_cpu_s", {}).get("median")) for c in cs]
                rss_series[v] = [(xof(c), (scaling_summary[c.key].get(v) or {}).get("peak_rss_mib", {}).get("median")) for c in cs]
            panels.append({"title": f"image time vs {xlabel} ({name})", "xlabel": xlabel, "unit": "s", "series": time_series})
            panels.append({"title": f"image CPU seconds vs {xlabel} ({name})", "xlabel": xlabel, "unit": "CPU s", "series": cpu_series})
            panels.append({"title": f"peak RSS vs {xlabel} ({name})", "xlabel": xlabel, "unit": "MiB", "series": rss_series})
            for c in cs:
                cells = []
                for v in scaling_variants:
                    s = scaling_summary[c.key].get(v) or {}
                    cells += [f"{s['image_s']['median']:.2f}" if s and s["image_s"]["n"] else "—",
                              f"{s['image_cpu_s']['median']:.1f}" if s and s["image_cpu_s"]["n"] else "—",
                              f"{s['peak_rss_mib']['median']:.0f}" if s and s["peak_rss_mib"]["n"] else "—"]
                rows.append(f"| {xlabel} ({name}) | {xof(c):g} | " + " | ".join(cells) + " |")
        for (steps, guidance), cs in sorted(by_res.items()):
            if len({c.size for c in cs}) > 1:
                add_curve(f"{steps} steps, g{guidance:g}", "resolution", cs, lambda c: c.width)
        for (size, guidance), cs in sorted(by_steps.items()):
            if len({c.steps for c in cs}) > 1:
                add_curve(f"{size}, g{guidance:g}", "steps", cs, lambda c: c.steps)
        md += rows + [""]
        if panels:
            for i in range(0, len(panels), 6):
                chart = out / f"scaling-{i // 6 + 1}.png"
                line_chart(panels[i : i + 6], chart, "bk-sdm-tiny scaling: " + ", ".join(scaling_variants))
                charts.append(chart.name)
                md += [f"![scaling]({chart.name})", ""]
        result["scaling"] = {k: {v: scaling_summary[k][v] for v in scaling_variants if v in scaling_summary[k]} for k in keys}
    peer_md, result["peers"] = peers_section(meta, runs, out, order, int8_label, baseline)
    md += peer_md
    charts += (result["peers"] or {}).get("charts", [])
    failed = [r for r in runs if not r["ok"]]
    if failed:
        md += ["## Failed runs", ""] + [f"- {r['config']} {r['variant']} round {r['round']}: {r['error'][:300]!r}" for r in failed] + [""]
    md += [
        "## Per-run records",
        "",
        "In run order. `image CPU s`: CPU seconds the process spent on the image (all threads); "
        "`CPU cores used`: CPU seconds / wall seconds of the whole process (2.0 = both cores to itself).",
        "",
        "| phase | config | round | variant | cold start s | image s | image CPU s | peak RSS MiB | CPU cores used "
        "| load before→after | commit |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in runs:
        if r["ok"]:
            md.append(
                f"| {r['phase']} | {r['config']} | {r['round']} | {r['variant']} | "
                f"{r['cold_start_s']:.1f} | {', '.join(f'{v:.1f}' for v in r['image_s'])} | "
                f"{', '.join(f'{v:.1f}' for v in r.get('image_cpu_s', []))} | {r['peak_rss_mib']:.0f} | {r['cpu_utilization']:.2f} | "
                f"{r['loadavg_before'][0]}→{r['loadavg_after'][0]} "
                f"| {(r.get('code') or {}).get('head', '?')}{'+dirty' if (r.get('code') or {}).get('runtime_targets_dirty') else ''} |"
            )
    if copy_images:
        from PIL import Image

        for key in meta["configs"]:
            tiles = [(r["variant"], work / r["image"]) for r in runs if r["ok"] and r["config"] == key and r["round"] == 1]
            if tiles:
                thumbs = [Image.open(p).convert("RGB").resize((160, 160)) for _, p in tiles]
                sheet = Image.new("RGB", (160 * len(thumbs), 160), "white")
                for i, t in enumerate(thumbs):
                    sheet.paste(t, (160 * i, 0))
                sheet.save(out / f"images-{key}.png")
                md += [
                    "",
                    f"Images of round 1, {key} ({', '.join(label for label, _ in tiles)}; "
                    f"random-weight model, so noise-like): ![images](images-{key}.png)",
                ]
    result["charts"] = charts
    (out / "compare.json").write_text(json.dumps(result, indent=2, default=str))
    (out / "compare.md").write_text("\n".join(md) + "\n")
    return result


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

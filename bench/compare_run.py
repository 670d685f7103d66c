"""``bench/compare.py run``: the interleaved rounds, one worker process per measurement.

Plans every (config, round, variant), starts each run as a fresh ``compare_worker.py``
process (peak RSS from ``os.wait4``, killed on timeout or, without the heavy-memory lock,
past an RSS limit), and appends one record per run to ``WORK/runs.jsonl`` (``--resume``
skips the runs already there). ``WORK/meta.json`` records the machine and the commands.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from compare_prepare import check_provenance
from compare_report import Config, load_average, machine_description, tree_bytes

from nanoedge.core.manifest import MANIFEST_NAME, Manifest

HERE = Path(__file__).resolve().parent
log = logging.getLogger("bench.compare")


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

"""``bench/compare.py report``: ``WORK/runs.jsonl`` and ``WORK/meta.json`` -> compare.json, compare.md, charts.

``run`` calls it after its last run; ``report`` rewrites it from the records alone. The
statistics, tables and charts it assembles are the pure helpers of ``compare_report.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from compare_report import Config, bar_chart, line_chart, psnr, render_table, summarize, targets_check


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

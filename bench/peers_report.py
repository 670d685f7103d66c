"""The peers section of the comparison report: one table per CPU kind, ratios against diffusers
and against the fastest peer, the issue's targets, a chart, and the peers' per-stage seconds.

Pure functions over the records ``bench/compare.py`` collects (tested on canned records in
tests/test_bench_peers.py); nothing here runs a model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compare_report import Config, bar_chart, ratio, summarize

PEER_KINDS = ("sdcpp", "openvino-genai")


def cpu_heading(machine: dict[str, Any]) -> str:
    """'AVX-512-VNNI+BF16 — AMD EPYC (AMD, x86_64): AVX2 FMA ...' from a run's machine record."""
    cpu = machine.get("cpu") or {}
    if cpu:
        where = f"{cpu.get('model', '?')} ({cpu.get('vendor', '?')}, {cpu.get('arch', '?')})"
        return f"{cpu.get('kind', '?')} — {where}: {' '.join(cpu.get('features', []))}"
    return f"{machine.get('cpu_model', 'unknown CPU')}: {' '.join(machine.get('cpu_flags_of_note', []))}"


def drop_incomparable_psnr(runs: list[dict[str, Any]]) -> None:
    """A peer that draws its own initial noise (sd.cpp) makes another image: its PSNR means nothing."""
    for run in runs:
        if (run.get("info") or {}).get("comparable_pixels") is False:
            run["psnr_vs_diffusers"] = None
            run["psnr_note"] = "own RNG: not comparable"


def fastest(summary_cfg: dict[str, dict[str, Any]], labels: list[str]) -> str | None:
    """The label with the lowest median image time among ``labels`` that were measured."""
    timed = [(v["image_s"]["median"], label) for label, v in summary_cfg.items() if label in labels and v["image_s"]["n"]]
    return min(timed)[1] if timed else None


def peers_table(summary_cfg: dict[str, dict[str, Any]], order: list[str], kinds: dict[str, str], baseline: str = "diffusers") -> str:
    """Markdown: every variant with s/image, ratios vs ``baseline`` and vs the fastest peer, cold start, RSS, PSNR."""
    peer_labels = [label for label in order if kinds.get(label) in PEER_KINDS]
    best = fastest(summary_cfg, peer_labels)
    base = summary_cfg.get(baseline, {})
    base_t = (base.get("image_s") or {}).get("median")
    base_rss = (base.get("peak_rss_mib") or {}).get("median")
    best_t = summary_cfg[best]["image_s"]["median"] if best else None
    best_rss = summary_cfg[best]["peak_rss_mib"]["median"] if best else None
    best_cpu = (summary_cfg[best].get("image_cpu_s") or {}).get("median") if best else None
    head = [
        "variant",
        "what",
        "s/image (median)",
        "n",
        f"speed-up vs {baseline}",
        f"speed-up vs fastest peer ({best or '—'})",
        "image CPU s",
        "CPU-s ratio vs fastest peer",
        "cold start s",
        "peak RSS MiB",
        f"RSS vs {baseline}",
        "RSS vs fastest peer",
        f"PSNR vs {baseline}",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---", "---"] + ["---:"] * (len(head) - 2)) + "|"]
    for label in order:
        v = summary_cfg.get(label)
        if v is None:
            continue
        what = kinds.get(label, "?")
        if v["image_s"]["n"] == 0:
            lines.append("| " + " | ".join([label, what, "failed"] + ["—"] * (len(head) - 3)) + " |")
            continue
        t, rss = v["image_s"]["median"], v["peak_rss_mib"]["median"]
        if label == baseline:
            psnr = "(reference)"
        elif v.get("psnr_vs_diffusers") is None:
            psnr = "n/a (own RNG)" if what == "sdcpp" else "—"
        else:
            psnr = "identical" if v["psnr_vs_diffusers"] == float("inf") else f"{v['psnr_vs_diffusers']:.1f} dB"
        cpu = (v.get("image_cpu_s") or {}).get("median")
        row = [
            label,
            what,
            f"{t:.2f}",
            str(v["image_s"]["n"]),
            _x(ratio(base_t, t)),
            _x(ratio(best_t, t)),
            "—" if cpu is None else f"{cpu:.1f}",
            _x(ratio(best_cpu, cpu)),
            f"{v['cold_start_s']['median']:.1f}",
            f"{rss:.0f}",
            _x(None if base_rss is None else rss / base_rss),
            _x(None if best_rss is None else rss / best_rss),
            psnr,
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _x(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def peer_targets(summary_cfg: dict[str, dict[str, Any]], nanoedge_label: str, kinds: dict[str, str]) -> list[dict[str, Any]]:
    """Issue 22's targets: nanoedge >= 1.5x the fastest peer (at equal or better PSNR where comparable), RSS below every peer."""
    peers = [label for label, kind in kinds.items() if kind in PEER_KINDS and (summary_cfg.get(label) or {}).get("image_s", {}).get("n")]
    mine = summary_cfg.get(nanoedge_label)
    if not peers or not mine or not mine["image_s"]["n"]:
        return []
    best = fastest(summary_cfg, peers)
    speed = ratio(summary_cfg[best]["image_s"]["median"], mine["image_s"]["median"])
    out = [{"target": f"{nanoedge_label} >= 1.5x the fastest peer ({best})", "value": speed, "goal": 1.5, "met": speed >= 1.5}]
    best_psnr, my_psnr = summary_cfg[best].get("psnr_vs_diffusers"), mine.get("psnr_vs_diffusers")
    if best_psnr is not None and my_psnr is not None:
        out.append(
            {
                "target": f"{nanoedge_label} PSNR vs diffusers >= {best}'s",
                "value": my_psnr - best_psnr,
                "goal": 0.0,
                "met": my_psnr >= best_psnr,
            }
        )
    else:
        out.append(
            {
                "target": f"{nanoedge_label} PSNR vs diffusers >= {best}'s",
                "value": None,
                "goal": 0.0,
                "met": None,
                "note": f"{best} draws its own noise: images not comparable"
                if kinds.get(best) == "sdcpp"
                else "no PSNR: diffusers' image for this config was not measured",
            }
        )
    lowest = min(peers, key=lambda label: summary_cfg[label]["peak_rss_mib"]["median"])
    share = mine["peak_rss_mib"]["median"] / summary_cfg[lowest]["peak_rss_mib"]["median"]
    out.append(
        {"target": f"{nanoedge_label} peak RSS below every peer's (lowest: {lowest})", "value": share, "goal": 1.0, "met": share < 1.0}
    )
    return out


def stage_table(runs: list[dict[str, Any]], config_key: str) -> str:
    """Per-stage seconds of each run that reported them (the peers, and nanoedge's own timings)."""
    rows = ["| variant | round | total s | text encoder s | UNet s/step | VAE decode s | options |", "|---|---:|---:|---:|---:|---:|---|"]
    for run in runs:
        stages = (run.get("info") or {}).get("stages")
        if not run.get("ok") or run.get("config") != config_key or not stages:
            continue
        vae = stages.get("vae_decoder_s", stages.get("vae_and_rest_s"))
        opts = (run.get("info") or {}).get("options") or {}
        shown = ", ".join(
            f"{k}={v}"
            for k, v in sorted(opts.items())
            if k in ("n_threads", "diffusion_flash_attn", "diffusion_conv_direct", "vae_conv_direct")
        )
        rows.append(
            f"| {run['variant']} | {run['round']} | {_f(stages.get('total_s'))} | {_f(stages.get('text_encoder_s'))} | "
            f"{_f(stages.get('unet_step_s'))} | {_f(vae)} | {shown or '—'} |"
        )
    return "\n".join(rows) if len(rows) > 2 else ""


def _f(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _panel(summary_cfg: dict[str, dict[str, Any]], labels: list[str], field: str, title: str, unit: str) -> dict[str, Any]:
    """One bar-chart panel: median with min–max whiskers of ``field`` per variant."""
    bars = [
        (label, summary_cfg[label][field]["median"], summary_cfg[label][field]["min"], summary_cfg[label][field]["max"]) for label in labels
    ]
    return {"title": title, "unit": unit, "bars": bars}


def peers_section(
    meta: dict[str, Any], runs: list[dict[str, Any]], out: Path, order: list[str], nanoedge_label: str, baseline: str = "diffusers"
) -> tuple[list[str], dict[str, Any]]:
    """The markdown lines and JSON of the peers section, with one chart per config written to ``out``."""
    kinds = {r["variant"]: r["kind"] for r in runs}
    if not any(kind in PEER_KINDS for kind in kinds.values()):
        return [], {}
    main = [r for r in runs if r["phase"] == "main"]
    summary = summarize(main)
    md = [
        f"## Peers on {cpu_heading(meta.get('machine') or {})}",
        "",
        "stable-diffusion.cpp (`sdcpp-*`) and OpenVINO GenAI (`ov-*`) on the same weights (bench/peers.py). "
        "OpenVINO GenAI gets the same PNDM scheduler and the same initial latents, so its PSNR is comparable; "
        "sd.cpp has no PNDM (it runs iPNDM on the discrete schedule) and draws its own noise, so only its time and memory compare.",
        "",
    ]
    result: dict[str, Any] = {"cpu": cpu_heading(meta.get("machine") or {}), "targets": {}, "charts": []}
    for key in meta.get("configs", []):
        if key not in summary:
            continue
        first = next(r for r in main if r["config"] == key)
        config = Config(int(first["size"].split("x")[0]), int(first["size"].split("x")[1]), int(first["steps"]), float(first["guidance"]))
        md += [f"### {config.title}", "", peers_table(summary[key], order, kinds, baseline), ""]
        checks = peer_targets(summary[key], nanoedge_label, kinds)
        result["targets"][key] = checks
        for c in checks:
            value = "—" if c["value"] is None else f"{c['value']:.2f}"
            verdict = "met" if c["met"] else "MISSED" if c["met"] is not None else f"not measurable ({c.get('note', '')})"
            md.append(f"- target {c['target']}: measured {value} (goal {c['goal']}) → {verdict}")
        stages = stage_table(runs, key)
        if stages:
            md += [
                "",
                "Per-stage seconds (sd.cpp: from its step callbacks, so no text-encoder time — its log has it; "
                "OpenVINO GenAI: its performance metrics; nanoedge: its pipeline timings):",
                "",
                stages,
            ]
        labels = [label for label in order if label in summary[key]]
        panels = [
            _panel(summary[key], labels, "image_s", "s/image, median (min–max)", "s"),
            _panel(
                summary[key], labels, "image_cpu_s", "CPU seconds of the image (all threads; less sensitive to the machine's load)", "CPU s"
            ),
            _panel(summary[key], labels, "peak_rss_mib", "peak RSS of the process, median (min–max)", "MiB"),
        ]
        chart = out / f"peers-{key}.png"
        bar_chart(panels, chart, f"bk-sdm-tiny {config.title} — {(meta.get('machine') or {}).get('cpu', {}).get('kind', '')}")
        result["charts"].append(chart.name)
        md += ["", f"![peers {config.title}]({chart.name})", ""]
    return md, result

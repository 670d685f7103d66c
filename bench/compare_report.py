"""Pure helpers of ``bench/compare.py``: configs, statistics, ratios, the markdown table, charts.

Nothing here runs a model; everything takes the records the harness collected, so it is
tested on its own (tests/test_bench_compare.py).
"""

from __future__ import annotations

import os
import platform
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable


@dataclass(frozen=True)
class Config:
    width: int
    height: int
    steps: int
    guidance: float

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def key(self) -> str:
        return f"{self.size}-s{self.steps}-g{self.guidance:g}"

    @property
    def title(self) -> str:
        cfg = f"guidance {self.guidance:g} (CFG, UNet batch 2)" if self.guidance > 1 else "no guidance (UNet batch 1)"
        return f"{self.size}, {self.steps} steps, {cfg}"


def parse_config(text: str) -> Config:
    """``WxH:STEPS:GUIDANCE`` -> Config, e.g. ``512x512:25:7.5``."""
    try:
        size, steps, guidance = text.split(":")
        width, height = (int(v) for v in size.lower().split("x"))
        config = Config(width, height, int(steps), float(guidance))
    except ValueError:
        raise ValueError(f"config must look like 512x512:25:7.5, got {text!r}") from None
    if width % 8 or height % 8 or width <= 0 or height <= 0 or config.steps < 1 or config.guidance < 0:
        raise ValueError(f"bad config {text!r}: size must be positive multiples of 8, steps >= 1, guidance >= 0")
    return config


def psnr(a, b) -> float:
    """PSNR in dB of two 8-bit images (anything numpy can turn into arrays of one shape)."""
    import numpy as np

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {x.shape} vs {y.shape}")
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def tree_bytes(path: "str | os.PathLike[str]", exclude: Iterable[str] = ()) -> int:
    """Bytes of every regular file under ``path`` (names in ``exclude`` skipped)."""
    skip = set(exclude)
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            if name in skip:
                continue
            full = Path(root) / name
            if full.is_file() and not full.is_symlink():
                total += full.stat().st_size
    return total


def spread(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0, "samples": []}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values),
            "samples": [round(v, 3) for v in values]}


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Group measured runs by config key then variant label into medians and spreads.

    A run is ``{"config": key, "variant": label, "ok": bool, "image_s": [...], "cold_start_s":
    float, "peak_rss_mib": float, "model_bytes": int, "psnr_vs_diffusers": float|None}``.
    Image time pools every image of every round; cold start and peak RSS take one value per
    process. Failed runs are counted, not averaged.
    """
    grouped: dict[str, dict[str, dict[str, Any]]] = {}
    for run in runs:
        slot = grouped.setdefault(run["config"], {}).setdefault(
            run["variant"], {"image": [], "cpu": [], "cold": [], "rss": [], "bytes": None, "psnr": [], "failed": 0, "errors": []}
        )
        if not run.get("ok", True):
            slot["failed"] += 1
            slot["errors"].append(run.get("error", "")[-300:])
            continue
        slot["image"].extend(run["image_s"])
        slot["cpu"].extend(run.get("image_cpu_s", []))
        slot["cold"].append(run["cold_start_s"])
        slot["rss"].append(run["peak_rss_mib"])
        slot["bytes"] = run.get("model_bytes")
        if run.get("psnr_vs_diffusers") is not None:
            slot["psnr"].append(run["psnr_vs_diffusers"])
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for key, variants in grouped.items():
        summary[key] = {}
        for label, slot in variants.items():
            summary[key][label] = {
                "image_s": spread(slot["image"]),
                "image_cpu_s": spread(slot["cpu"]),
                "cold_start_s": spread(slot["cold"]),
                "peak_rss_mib": spread(slot["rss"]),
                "model_bytes": slot["bytes"],
                "psnr_vs_diffusers": min(slot["psnr"]) if slot["psnr"] else None,
                "failed_runs": slot["failed"],
                "errors": slot["errors"],
            }
    return summary


def ratio(baseline: float | None, value: float | None) -> float | None:
    """How many times faster/smaller ``value`` is than ``baseline`` (baseline / value)."""
    if baseline is None or value is None or value <= 0:
        return None
    return baseline / value


def _fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "—" if value is None else f"{value:.{digits}f}{suffix}"


def _fmt_psnr(value: float | None) -> str:
    if value is None:
        return "—"
    return "identical" if value == float("inf") else f"{value:.1f} dB"


def render_table(config: Config, variants: dict[str, dict[str, Any]], order: list[str], baseline: str = "diffusers",
                 second: str | None = "optimum") -> str:
    """One markdown table for one config: time, ratios, cold start, peak RSS, bytes, PSNR."""
    base = variants.get(baseline, {})
    other = variants.get(second, {}) if second else {}
    base_t = (base.get("image_s") or {}).get("median")
    base_rss = (base.get("peak_rss_mib") or {}).get("median")
    other_t = (other.get("image_s") or {}).get("median")
    base_cpu = (base.get("image_cpu_s") or {}).get("median")
    other_cpu = (other.get("image_cpu_s") or {}).get("median")
    head = ["variant", "image s (median)", "min–max (n)", "image CPU s", f"speed-up vs {baseline}"]
    if second:
        head.append(f"speed-up vs {second}")
    head.append(f"CPU-s ratio vs {baseline}" + (f" / {second}" if second else ""))
    head += ["cold start s", "peak RSS MiB", f"RSS vs {baseline}", "model MB on disk", f"PSNR vs {baseline}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for label in order:
        v = variants.get(label)
        if v is None:
            continue
        t = v["image_s"]
        if t["n"] == 0:
            row = [label, "failed"] + ["—"] * (len(head) - 2)
            lines.append("| " + " | ".join(row) + " |")
            continue
        cpu = (v.get("image_cpu_s") or {}).get("median")
        row = [label, f"{t['median']:.2f}", f"{t['min']:.2f}–{t['max']:.2f} ({t['n']})", _fmt(cpu, 1),
               _fmt(ratio(base_t, t["median"]), 2, "×")]
        if second:
            row.append(_fmt(ratio(other_t, t["median"]), 2, "×"))
        cpu_ratio = _fmt(ratio(base_cpu, cpu), 2, "×")
        row.append(cpu_ratio + (f" / {_fmt(ratio(other_cpu, cpu), 2, '×')}" if second else ""))
        rss = v["peak_rss_mib"]["median"]
        row += [
            _fmt(v["cold_start_s"]["median"], 1),
            _fmt(rss, 0),
            _fmt(None if base_rss is None or rss is None else rss / base_rss, 2, "×"),
            _fmt(None if v["model_bytes"] is None else v["model_bytes"] / 1e6, 0),
            _fmt_psnr(v["psnr_vs_diffusers"]) if label != baseline else "(reference)",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def targets_check(
    summary_cfg: dict[str, dict[str, Any]], int8_label: str, baseline: str = "diffusers", second: str = "optimum"
) -> list[dict[str, Any]]:
    """The issue's three targets for one config, each with its measured value and met/missed."""
    def med(label: str, field: str):
        return ((summary_cfg.get(label) or {}).get(field) or {}).get("median")

    out = []
    speed = ratio(med(baseline, "image_s"), med(int8_label, "image_s"))
    out.append({"target": f"{int8_label} >= 2.0× faster than {baseline} FP32", "value": speed, "goal": 2.0,
                "met": None if speed is None else speed >= 2.0})
    speed2 = ratio(med(second, "image_s"), med(int8_label, "image_s"))
    out.append({"target": f"{int8_label} >= 1.5× faster than {second} FP32", "value": speed2, "goal": 1.5,
                "met": None if speed2 is None else speed2 >= 1.5})
    rss_b, rss_i = med(baseline, "peak_rss_mib"), med(int8_label, "peak_rss_mib")
    share = None if rss_b is None or rss_i is None else rss_i / rss_b
    out.append({"target": f"{int8_label} peak RSS <= 0.5× {baseline}", "value": share, "goal": 0.5,
                "met": None if share is None else share <= 0.5})
    return out


# -- machine ---------------------------------------------------------------------------------
def machine_description() -> dict[str, Any]:
    from nanoedge.targets.cpuinfo import cpu_info

    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(), "logical_cpus": os.cpu_count()}
    # model, vendor, ISA (AVX2/AVX-512/VNNI/AMX/BF16) and the CPU kind benchmarks.md groups tables by
    info["cpu"] = cpu_info().as_dict()
    try:
        text = Path("/proc/cpuinfo").read_text()
        models = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")]
        flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
        info["cpu_model"] = models[0] if models else None
        cores = {line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("cpu cores")}
        info["physical_cores_per_socket"] = int(next(iter(cores))) if len(cores) == 1 else None
        info["cpu_flags_of_note"] = sorted(f for f in flags if f.startswith(("avx512", "amx", "avx2", "avx_vnni", "fma")))
    except OSError:
        pass
    try:
        mem = {line.split(":")[0]: line.split(":")[1].strip() for line in Path("/proc/meminfo").read_text().splitlines()}
        info["ram_gib"] = round(int(mem["MemTotal"].split()[0]) / 2**20, 1)
    except (OSError, KeyError, ValueError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    # distribution metadata only: importing torch & co. here would bloat the parent process
    for name in ("numpy", "onnxruntime", "torch", "diffusers", "transformers", "optimum", "optimum-onnx", "onnx", "pillow", "nanoedge",
                 "openvino", "onnxruntime-ep-openvino"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    info["versions"] = versions
    return info


def load_average() -> list[float]:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


# -- charts (Pillow only: matplotlib is not installed here) ---------------------------------
PALETTE = [(66, 103, 178), (219, 112, 41), (60, 150, 80), (200, 60, 60), (140, 90, 170), (120, 120, 120), (30, 160, 170), (180, 150, 40)]


def _font(size: int):
    from PIL import ImageFont

    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def bar_chart(panels: list[dict[str, Any]], path: "str | os.PathLike[str]", title: str) -> None:
    """Horizontal bars, one panel per metric; each bar = median, whisker = min..max.

    ``panels``: ``[{"title": str, "unit": str, "bars": [(label, median, lo, hi), ...]}]``.
    """
    from PIL import Image, ImageDraw

    row_h, label_w, plot_w, pad = 26, 170, 520, 16
    heights = [40 + row_h * max(1, len(p["bars"])) + 24 for p in panels]
    width = pad * 2 + label_w + plot_w + 90
    height = 50 + sum(heights) + pad
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    big, small = _font(17), _font(13)
    draw.text((pad, 12), title, fill="black", font=big)
    y = 50
    for panel, panel_h in zip(panels, heights):
        draw.text((pad, y), f"{panel['title']} ({panel['unit']})", fill="black", font=small)
        bars = [b for b in panel["bars"] if b[1] is not None]
        top = max([b[3] if b[3] is not None else b[1] for b in bars] or [1.0]) * 1.05 or 1.0
        x0 = pad + label_w
        for i, (label, med, lo, hi) in enumerate(panel["bars"]):
            yy = y + 24 + i * row_h
            draw.text((pad, yy + 4), str(label)[:24], fill="black", font=small)
            if med is None:
                draw.text((x0 + 4, yy + 4), "failed", fill=(200, 0, 0), font=small)
                continue
            color = PALETTE[i % len(PALETTE)]
            draw.rectangle([x0, yy + 3, x0 + int(plot_w * med / top), yy + row_h - 5], fill=color)
            if lo is not None and hi is not None and hi > lo:
                cy = yy + row_h // 2 - 1
                draw.line([x0 + int(plot_w * lo / top), cy, x0 + int(plot_w * hi / top), cy], fill="black", width=2)
                for edge in (lo, hi):
                    ex = x0 + int(plot_w * edge / top)
                    draw.line([ex, cy - 5, ex, cy + 5], fill="black", width=2)
            draw.text((x0 + int(plot_w * (hi if hi else med) / top) + 6, yy + 4), f"{med:.1f}", fill="black", font=small)
        draw.line([x0, y + 20, x0, y + 24 + row_h * len(panel["bars"])], fill=(90, 90, 90))
        y += panel_h
    img.save(path)


def line_chart(panels: list[dict[str, Any]], path: "str | os.PathLike[str]", title: str) -> None:
    """Line panels side by side: ``[{"title", "xlabel", "unit", "series": {label: [(x, y), ...]}}]``."""
    from PIL import Image, ImageDraw

    pw, ph, pad, left, bottom = 420, 300, 18, 62, 46
    columns = min(3, len(panels)) or 1
    rows = (len(panels) + columns - 1) // columns
    width = pad + columns * (pw + pad)
    height = 50 + rows * (ph + 20) + 20
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    big, small = _font(17), _font(12)
    draw.text((pad, 12), title, fill="black", font=big)
    for p_index, panel in enumerate(panels):
        ox, oy = pad + (p_index % columns) * (pw + pad), 50 + (p_index // columns) * (ph + 20)
        points = [pt for series in panel["series"].values() for pt in series if pt[1] is not None]
        if not points:
            continue
        xs = sorted({pt[0] for pt in points})
        xmin, xmax = min(xs), max(xs)
        ymax = max(pt[1] for pt in points) * 1.1 or 1.0
        ax0, ay0, ax1, ay1 = ox + left, oy + 22, ox + pw - 10, oy + ph - bottom

        def to_xy(x: float, yv: float) -> tuple[int, int]:
            fx = 0.5 if xmax == xmin else (x - xmin) / (xmax - xmin)
            return int(ax0 + fx * (ax1 - ax0)), int(ay1 - yv / ymax * (ay1 - ay0))

        draw.text((ox + 4, oy), f"{panel['title']} ({panel['unit']})", fill="black", font=small)
        draw.line([ax0, ay0, ax0, ay1, ax1, ay1], fill="black")
        for x in xs:
            px, _ = to_xy(x, 0)
            draw.line([px, ay1, px, ay1 + 4], fill="black")
            draw.text((px - 10, ay1 + 6), f"{x:g}", fill="black", font=small)
        for tick in range(5):
            yv = ymax * tick / 4
            _, py = to_xy(xmin, yv)
            draw.line([ax0 - 4, py, ax0, py], fill="black")
            draw.text((ox + 4, py - 7), f"{yv:.0f}", fill="black", font=small)
        draw.text((ax0 + (ax1 - ax0) // 2 - 30, ay1 + 22), panel["xlabel"], fill="black", font=small)
        for s_index, (label, series) in enumerate(panel["series"].items()):
            color = PALETTE[s_index % len(PALETTE)]
            pts = [to_xy(x, yv) for x, yv in sorted(series) if yv is not None]
            if len(pts) > 1:
                draw.line(pts, fill=color, width=3)
            for px, py in pts:
                draw.ellipse([px - 4, py - 4, px + 4, py + 4], fill=color)
            draw.text((ax0 + 8, ay0 + 2 + 16 * s_index), label, fill=color, font=small)
    img.save(path)

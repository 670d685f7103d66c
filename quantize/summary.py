"""Text views of a quantized package's recipe and report, for ``quantize`` and ``info``.

Pure formatting of the manifest's ``quantization`` section: no onnx, no numpy, so
``nanoedge info`` stays as lean as the runtime.
"""

from __future__ import annotations

from typing import Any


def _db(value: float | None, identical: bool = False) -> str:
    if value is None:
        return "inf" if identical else "n/a"
    return f"{value:.2f}"


def _mib(count: int | None) -> str:
    return "n/a" if count is None else f"{count / 2**20:.1f} MiB"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def format_report(report: dict[str, Any]) -> list[str]:
    """The accuracy report as aligned text lines."""
    lines = [f"{'component':<14}{'scheme':<13}{'cosine':>10}{'PSNR dB':>10}{'size':>12}{'vs fp32':>9}"]
    size = report.get("size", {})
    for name, figures in report.get("components", {}).items():
        comp_size = size.get("components", {}).get(name, {})
        cos = figures.get("cosine")
        lines.append(
            f"{name:<14}{figures.get('scheme', '?'):<13}{(f'{cos:.5f}' if cos is not None else 'n/a'):>10}"
            f"{_db(figures.get('psnr_db'), figures.get('identical', False)):>10}"
            f"{_mib(comp_size.get('bytes')):>12}{_ratio(comp_size.get('ratio')):>9}"
        )
    e2e = report.get("end_to_end", {})
    resp = report.get("responsiveness", {})
    same = e2e.get("identical", False)
    lines.append(
        f"end to end     image PSNR median {_db(e2e.get('median_image_psnr_db'), same)} dB vs FP32 "
        f"(pooled {_db(e2e.get('image_psnr_db'), same)} dB, worst prompt {_db(e2e.get('min_image_psnr_db'), same)} dB; "
        f"{e2e.get('prompts', 0)} held-out prompts)"
    )
    ratio = resp.get("ratio")
    lines.append(
        f"responsiveness {('%.3f' % ratio) if ratio is not None else 'n/a'} of FP32 "
        f"(std cond-uncond {resp.get('quantized_std') or 0:.4g} vs {resp.get('fp32_std') or 0:.4g}; "
        f"direction cosine {resp.get('direction_cosine') or 0:.4f})"
    )
    lines.append(
        f"size           package {_mib(size.get('package_bytes'))} = {_ratio(size.get('package_ratio'))} of FP32; "
        f"UNet {_mib(size.get('unet_bytes'))} = {_ratio(size.get('unet_ratio'))} of FP32"
    )
    return lines


def float_node_counts(quantization: dict[str, Any]) -> dict[str, int]:
    return {name: len(c.get("float_nodes", [])) for name, c in quantization.get("components", {}).items() if c.get("float_nodes")}


def describe_quantization(quantization: dict[str, Any]) -> list[str]:
    """Recipe, calibration, gate and report of a quantized package (``nanoedge info``)."""
    components = quantization.get("components", {})
    schemes = ", ".join(f"{name} {c.get('scheme', '?')}" for name, c in components.items())
    lines = [f"scheme {quantization.get('scheme', '?')} ({schemes})"]
    for name, c in components.items():
        recipe = c.get("recipe", {})
        if recipe.get("kind") in (None, "none"):
            continue
        acts = f"{recipe.get('activation_type')} activations" if recipe.get("kind") == "static" else (
            "dynamic uint8 activations" if recipe.get("kind") == "dynamic" else "float activations")
        weights = (
            f"{recipe.get('weight_type')} "
            f"weights{' per channel' if recipe.get('per_channel') else ''}{' (7-bit)' if recipe.get('reduce_range') else ''}"
        )
        kept = len(c.get("float_nodes", []))
        lines.append(f"  {name:<13}{recipe.get('kind')}: {weights}, {acts}; {kept} of {c.get('quantizable_nodes', '?')} nodes kept float")
    cal = quantization.get("calibration", {})
    settings = cal.get("settings", {})
    lines.append(
        f"calibration {cal.get('prompts', '?')} prompts ({cal.get('prompts_file', '?')}) "
        f"at {settings.get('size')}, {settings.get('steps')} steps, "
        f"guidance {settings.get('guidance')}; report on {cal.get('held_out_prompts', '?')} held-out prompts"
    )
    gate = quantization.get("gate", {})
    attempts = quantization.get("attempts", [])
    passed = next((a.get("attempt") for a in attempts if a.get("passed")), None)
    lines.append(
        f"gate        component output PSNR >= {gate.get('min_component_psnr', 'n/a')} dB, image PSNR median >= {gate.get('min_psnr')} dB, "
        f"responsiveness >= {gate.get('min_responsiveness')}, "
        f"float budget {gate.get('max_size_ratio')} of FP32: {'passed (' + passed + ')' if passed else 'not recorded'}"
    )
    if quantization.get("report"):
        lines.extend(format_report(quantization["report"]))
    return lines

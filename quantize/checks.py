"""Checks before any work: the source package, the scheme per component, the run settings.

Everything here reads the manifest only, so a bad request fails in milliseconds.
"""

from __future__ import annotations

import logging

from nanoedge.core.errors import InvalidRequestError, PackageError
from nanoedge.core.limits import DEFAULT_GUIDANCE, DEFAULT_STEPS, MAX_STEPS
from nanoedge.core.manifest import COMPONENTS, Manifest

from .calibration import CalibrationSettings
from .options import QuantizeOptions
from .recipes import COMPONENT_SCHEMES, SCHEMES

log = logging.getLogger(__name__)


def resolve_schemes(scheme: str, overrides: "dict[str, str | None]") -> dict[str, str]:
    """Scheme per component: ``scheme`` for all, unless a component names its own."""
    if scheme not in SCHEMES:
        raise InvalidRequestError(f"unknown scheme '{scheme}'", hint=f"use one of: {', '.join(SCHEMES)}", param="scheme")
    result = {name: scheme for name in COMPONENTS}
    for name, choice in overrides.items():
        if choice is None:
            continue
        if name not in COMPONENTS:
            raise InvalidRequestError(f"unknown component '{name}'", hint=f"components: {', '.join(COMPONENTS)}", param="components")
        if choice not in COMPONENT_SCHEMES:
            raise InvalidRequestError(
                f"unknown scheme '{choice}' for {name}", hint=f"use one of: {', '.join(COMPONENT_SCHEMES)}", param="components"
            )
        result[name] = choice
    return result


def warn_cpu_scheme_for_npu(manifest: Manifest, schemes: dict[str, str]) -> None:
    """A package exported for the HTP wants every operator quantized: ``int8`` (the CPU recipe,
    float norms and softmax) and ``dynamic`` would leave nodes the HTP hands back to the CPU."""
    targets = {(c.get("rewrites") or {}).get("target") for c in manifest.components.values()}
    cpu_only = sorted({s for s in schemes.values() if s in ("int8", "dynamic", "weight-only")})
    if "qnn" in targets and cpu_only:
        log.warning(
            "this package was exported for qnn; %s is a CPU recipe whose float operators the HTP will not take: "
            "use --scheme w8a8 (INT8 for NPUs) or w8a16",
            "/".join(cpu_only),
        )


def warn_fused_attention_for_npu(manifest: Manifest, schemes: dict[str, str]) -> None:
    """w8a16/w8a8 are the HTP recipes, but a package with fused attention (a CPU/GPU export)
    carries ``com.microsoft.MultiHeadAttention``, which NPU providers do not take."""
    npu = sorted({s for s in schemes.values() if s in ("w8a16", "w8a8")})
    fused = sorted(name for name, c in manifest.components.items() if c.get("fused_attention"))
    if npu and fused:
        log.warning(
            "%s is an NPU recipe, but this package's %s has fused attention (MultiHeadAttention, CPU/GPU only): "
            "for the HTP, export with --target qnn --static-shape WxH (or --no-fuse-attention) and quantize that",
            "/".join(npu),
            "/".join(fused),
        )


def check_source(manifest: Manifest) -> None:
    """The input must be a complete FP32 package."""
    quantized = {n: c.get("precision") for n, c in manifest.components.items() if c.get("precision") != "fp32"}
    if quantized or manifest.quantization:
        raise InvalidRequestError(
            f"'{manifest.root}' is already quantized ({', '.join(f'{k}: {v}' for k, v in quantized.items()) or 'see nanoedge info'})",
            hint="quantize the FP32 package it came from (nanoedge export writes one)",
        )
    missing = [n for n in COMPONENTS if n not in manifest.components]
    if missing:
        raise PackageError(f"package has no {', '.join(missing)}", hint="re-export the package with `nanoedge export`")


def calibration_settings(manifest: Manifest, options: QuantizeOptions) -> CalibrationSettings:
    """Size, steps and guidance of the calibration runs: the options, else the package defaults."""
    defaults = manifest.defaults
    run_size, _ = manifest.size_rules().resolve(options.size or defaults.get("size"))
    steps = int(options.steps if options.steps is not None else defaults.get("steps", DEFAULT_STEPS))
    if not 1 <= steps <= MAX_STEPS:
        raise InvalidRequestError(f"steps must be between 1 and {MAX_STEPS}, got {steps}", param="steps")
    guidance = float(options.guidance if options.guidance is not None else defaults.get("guidance", DEFAULT_GUIDANCE))
    if guidance <= 1.0:
        raise InvalidRequestError(
            f"calibration needs classifier-free guidance (guidance > 1), got {guidance:g}",
            hint=f"prompt responsiveness compares cond and uncond predictions; use a guidance of {DEFAULT_GUIDANCE:g}",
            param="guidance",
        )
    return CalibrationSettings(size=str(run_size), steps=steps, guidance=guidance, scheduler=options.scheduler, seed=options.seed)

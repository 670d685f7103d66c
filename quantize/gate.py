"""The quality gate: the figures a quantized package must reach to be written at all.

Three figures must hold, all measured against the FP32 package:

- ``min_component_psnr`` (35 dB): every quantized component's output PSNR on held-out calls,
  teacher-forced (the recorded FP32 inputs fed to both, as Apple's converter checks). It
  measures the quantization error itself and rises steadily as nodes go back to float.
- ``min_psnr`` (30 dB): the *median* image PSNR over the held-out prompts. A sampling
  trajectory is chaotic: one prompt can switch to another image under a tiny perturbation,
  so a pooled or worst-prompt PSNR over a few prompts flips between runs; the median over
  >= 16 prompts is what most users see and does not hinge on one prompt.
- ``min_responsiveness`` (0.85): the guidance signal must survive (PSNR misses a collapse).

``max_size_ratio`` is not a pass/fail figure: it bounds how big mixed precision may make
each component (counted on the written QDQ graph, structure included).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from nanoedge.core.errors import InvalidRequestError


@dataclass(frozen=True)
class QualityGate:
    min_component_psnr: float = 35.0
    min_psnr: float = 30.0
    min_responsiveness: float = 0.85
    max_size_ratio: float = 0.35

    def __post_init__(self) -> None:
        for name in ("min_component_psnr", "min_psnr"):
            if not math.isfinite(getattr(self, name)):
                raise InvalidRequestError(f"{name} must be a number of dB, got {getattr(self, name)}", param=name)
        if not math.isfinite(self.min_responsiveness) or self.min_responsiveness < 0:
            raise InvalidRequestError(f"min_responsiveness must be a ratio >= 0, got {self.min_responsiveness}", param="min_responsiveness")
        if not 0 < self.max_size_ratio <= 1:
            raise InvalidRequestError(
                f"max_size_ratio must be in (0, 1], got {self.max_size_ratio}",
                hint="0.35 keeps the UNet at most 35% of its FP32 bytes",
                param="max_size_ratio",
            )

    def shortfalls(self, report: dict[str, Any]) -> list[str]:
        """Human-readable figures that missed the gate; empty when the report passes."""
        missed = []
        for name, figures in report.get("components", {}).items():
            if figures.get("scheme", "fp32") == "fp32":
                continue
            value = math.inf if figures.get("identical") else figures.get("psnr_db")
            if value is None or value < self.min_component_psnr:
                shown = "n/a" if value is None else f"{value:.2f} dB"
                missed.append(f"{name} output PSNR {shown} < {self.min_component_psnr:g} dB")
        e2e = report["end_to_end"]
        psnr = math.inf if e2e.get("identical") else e2e.get("median_image_psnr_db")
        if psnr is None or psnr < self.min_psnr:
            shown = "n/a" if psnr is None else f"{psnr:.2f} dB"
            missed.append(f"median image PSNR {shown} < {self.min_psnr:g} dB")
        ratio = report["responsiveness"].get("ratio")
        if ratio is None or ratio < self.min_responsiveness:
            shown = "n/a" if ratio is None else f"{ratio:.3f}"
            missed.append(f"prompt responsiveness {shown} < {self.min_responsiveness:g}")
        return missed

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

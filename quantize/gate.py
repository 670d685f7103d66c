"""The quality gate: the figures a quantized package must reach to be written at all.

Two figures decide, both measured end to end against the FP32 package on held-out prompts:
image PSNR (``min_psnr``, dB) and prompt responsiveness (``min_responsiveness``, the ratio of
guidance-signal spread). ``max_size_ratio`` is not a pass/fail figure: it bounds how much of
each component mixed precision may keep in float (as a fraction of its FP32 bytes).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from nanoedge.core.errors import InvalidRequestError


@dataclass(frozen=True)
class QualityGate:
    min_psnr: float = 30.0
    min_responsiveness: float = 0.85
    max_size_ratio: float = 0.35

    def __post_init__(self) -> None:
        if not math.isfinite(self.min_psnr):
            raise InvalidRequestError(f"--min-psnr must be a number of dB, got {self.min_psnr}")
        if not math.isfinite(self.min_responsiveness) or self.min_responsiveness < 0:
            raise InvalidRequestError(f"--min-responsiveness must be a ratio >= 0, got {self.min_responsiveness}")
        if not 0 < self.max_size_ratio <= 1:
            raise InvalidRequestError(
                f"--max-size-ratio must be in (0, 1], got {self.max_size_ratio}", hint="0.35 keeps the UNet at most 35% of its FP32 bytes"
            )

    def shortfalls(self, report: dict[str, Any]) -> list[str]:
        """Human-readable figures that missed the gate; empty when the report passes."""
        missed = []
        e2e = report["end_to_end"]
        psnr = math.inf if e2e.get("identical") else e2e.get("image_psnr_db")
        if psnr is None or psnr < self.min_psnr:
            shown = "n/a" if psnr is None else f"{psnr:.2f} dB"
            missed.append(f"end-to-end image PSNR {shown} < {self.min_psnr:g} dB")
        ratio = report["responsiveness"].get("ratio")
        if ratio is None or ratio < self.min_responsiveness:
            shown = "n/a" if ratio is None else f"{ratio:.3f}"
            missed.append(f"prompt responsiveness {shown} < {self.min_responsiveness:g}")
        return missed

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

"""What a quantization run is asked (:class:`QuantizeOptions`) and what it returns.

Library errors name these fields (``max_attempts``); the CLI maps fields to its flags
(``--max-attempts``) in its own messages, see ``nanoedge/cli/quantize_cmd.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from nanoedge.core.errors import InvalidRequestError
from nanoedge.core.manifest import Manifest

from .gate import QualityGate

# progress(stage, done, total); total == 0 announces a stage that has no count.
ProgressCallback = Callable[[str, int, int], None]

DEFAULT_MAX_ATTEMPTS = 4


@dataclass
class QuantizeOptions:
    """Everything ``nanoedge quantize`` can be asked; ``None`` takes the package default."""

    scheme: str = "int8"
    components: dict[str, str | None] = field(default_factory=dict)
    prompts_file: "str | Path | None" = None
    # None: 16, or fewer where the time budget needs it (see quantize/plan.py).
    calibration_prompts: int | None = None
    # Held-out prompts: the image PSNR median is taken over them (>= 16 keeps it stable).
    eval_prompts: int = 16
    size: str | None = None
    steps: int | None = None
    guidance: float | None = None
    scheduler: str | None = None
    seed: int = 0
    weight_type: str = "auto"
    min_component_psnr: float = 35.0
    min_psnr: float = 30.0
    min_responsiveness: float = 0.85
    max_size_ratio: float = 0.35
    mixed_precision: bool = True
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    sensitivity_samples: int = 4
    report_samples: int = 16
    overwrite: bool = False
    threads: int | None = None
    work_dir: "str | Path | None" = None
    calibration_dir: "str | Path | None" = None
    # Seconds the run should take: the plan cuts calibration prompts, size and steps left
    # open (None) until its estimate fits; it never cuts the held-out prompts or report calls.
    time_budget_s: float = 600.0

    def validate(self) -> None:
        """Reject values no run can use; each error names the field (``param``)."""
        if self.max_attempts < 0:
            raise InvalidRequestError(f"max_attempts must be >= 0, got {self.max_attempts}", param="max_attempts")
        for name in ("report_samples", "sensitivity_samples"):
            if getattr(self, name) < 1:
                raise InvalidRequestError(f"{name} must be >= 1, got {getattr(self, name)}", param=name)
        if self.calibration_prompts is not None and self.calibration_prompts < 1:
            raise InvalidRequestError(f"calibration_prompts must be >= 1, got {self.calibration_prompts}", param="calibration_prompts")
        if not self.time_budget_s > 0:
            raise InvalidRequestError(f"time_budget_s must be > 0 seconds, got {self.time_budget_s}", param="time_budget_s")
        if self.threads is not None and self.threads < 1:
            raise InvalidRequestError(f"threads must be >= 1, got {self.threads}", param="threads")
        self.gate()

    def gate(self) -> QualityGate:
        """The quality gate these options ask for (its constructor checks the thresholds)."""
        return QualityGate(self.min_component_psnr, self.min_psnr, self.min_responsiveness, self.max_size_ratio)


@dataclass
class QuantizeResult:
    manifest: Manifest
    report: dict[str, Any]
    attempts: list[dict[str, Any]]
    seconds: float

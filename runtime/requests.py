"""What a generation call takes and gives back: requests, resolved requests, results, callbacks.

Kept apart from :mod:`.pipeline` (which runs them) so the server, the benchmark and the
pipeline share one definition of a request without the pipeline module growing with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from PIL import Image

from nanoedge.core.sizes import Size

ProgressCallback = Callable[[int, int], None]
# cancel(): polled before every denoising step and before decoding; True stops the batch
# StepCallback (from .preview): on_step(DenoiseStep) after each denoising step, latents included
CancelCheck = Callable[[], bool]
# observer(component, inputs, output): sees every model call, e.g. to record calibration data
Observer = Callable[[str, dict, np.ndarray], None]


class GenerationCancelled(Exception):
    """``generate_batch``'s ``cancel`` check said stop; no images were made."""


@dataclass
class GenerationRequest:
    """One caller's ask; ``None`` fields take the package defaults."""

    prompt: str
    negative_prompt: str | None = None
    n: int = 1
    seed: int | None = None
    size: "str | Size | None" = None
    steps: int | None = None
    guidance: float | None = None
    scheduler: str | None = None


@dataclass(frozen=True)
class ResolvedRequest:
    """A request with every default filled in and every value checked."""

    prompt: str
    negative_prompt: str
    n: int
    seed: int
    run_size: Size
    output_size: Size
    steps: int
    guidance: float
    scheduler: str

    def batch_key(self) -> tuple:
        """Requests with equal keys can share UNet calls (output sizes may differ)."""
        return (self.run_size, self.steps, self.guidance, self.scheduler)


@dataclass
class GenerationResult:
    images: list[Image.Image]
    request: ResolvedRequest
    truncated_prompt: bool = False
    timings: dict[str, float] = field(default_factory=dict)

"""Where batches run: the one seam between the request handling and the hosting of the model.

The server's request handling (routes, OpenAI error envelopes, API keys, styles, quality,
sizes, the result cache, the bounded queue with micro-batching in ``worker.py``) is one
implementation. What differs between hosting modes is only who runs a batch:

* :class:`LocalExecutor` - the pipeline in this process, one inference lane (the default);
* ``ray_host.RayExecutor`` - Ray Serve replicas, each with the package loaded once, one lane
  per replica pulling from the same queue (``nanoedge serve --engine ray``).

An executor hands the worker a :class:`~.worker.BatchGenerator` and a lane count, warms up,
turns a preview step into pixels, says how many replicas can take work (readiness) and adds
its own series to ``/metrics``. Nothing here imports Ray: the lean runtime never needs it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from nanoedge.runtime.pipeline import Pipeline
from nanoedge.runtime.preview import DenoiseStep
from nanoedge.runtime.requests import GenerationRequest

from .errors import APIError, unavailable
from .metrics import Metrics
from .worker import BatchGenerator


class Executor(Protocol):
    """What the image service needs from a hosting mode."""

    #: ``local`` or ``ray`` (shown on /healthz).
    engine: str
    #: The batch runner the worker's lanes call (thread-safe when ``lanes > 1``).
    runner: BatchGenerator
    #: Worker threads taking batches from the one queue: batches that may run at once.
    lanes: int

    def warm_up(self) -> float:
        """Make the first client's request not pay for first-run allocations; seconds taken."""
        ...

    def preview(self, step: DenoiseStep | RenderedStep, rows: slice) -> np.ndarray:
        """RGB preview pixels ``[B, H, W, 3]`` of ``rows`` at ``step``."""
        ...

    def check_live(self) -> None:
        """Raise a 503 :class:`APIError` when no replica can take work now."""
        ...

    def health(self) -> dict[str, Any]:
        """Extra fields for ``/healthz`` (empty when there is nothing to add)."""
        ...

    def register_metrics(self, metrics: Metrics) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RenderedStep:
    """A denoising step whose previews were already rendered elsewhere (in a replica).

    Carries the ``index``/``total`` a listener decides on, and the pixels of the rows that
    asked for a preview at this step, keyed by ``(start, stop)`` of the rows in the batch."""

    index: int
    total: int
    pixels: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)

    def rows(self, rows: slice) -> np.ndarray:
        key = (rows.start or 0, rows.stop)
        if key not in self.pixels:
            raise LookupError(f"no preview was rendered for rows {key} at step {self.index}")
        return self.pixels[key]


class LocalExecutor:
    """The pipeline in this process: one lane, previews rendered right here."""

    engine = "local"
    lanes = 1

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.runner: BatchGenerator = pipeline

    def warm_up(self) -> float:
        """Run one tiny generation (smallest size, one step) so the first client does not pay
        for onnxruntime's first-run allocations. Returns the seconds it took."""
        return warm_up_pipeline(self.pipeline)

    def preview(self, step: DenoiseStep | RenderedStep, rows: slice) -> np.ndarray:
        if isinstance(step, RenderedStep):
            return step.rows(rows)
        return self.pipeline.preview(step, rows)

    def check_live(self) -> None:
        return None

    def health(self) -> dict[str, Any]:
        return {}

    def register_metrics(self, metrics: Metrics) -> None:
        return None

    def close(self) -> None:
        return None


def warm_up_pipeline(pipeline: Pipeline) -> float:
    """One generation at the smallest size with one step; the seconds it took."""
    started = time.perf_counter()
    rules = pipeline.sizes
    m = rules.multiple_of
    side = max(m, -(-rules.minimum // m) * m)
    size = rules.static or f"{side}x{side}"
    request = pipeline.resolve(GenerationRequest("warm-up", n=1, seed=0, size=size, steps=1))
    pipeline.generate_batch([request])
    return time.perf_counter() - started


def no_replicas(retry_after_s: float) -> APIError:
    """503 while no replica is running (all died and are restarting, or none was placed)."""
    return unavailable(
        "No model replica is running right now (they are starting or restarting); retry in a moment.", "no_replicas", retry_after_s
    )


def replica_unavailable(retry_after_s: float) -> APIError:
    """503 when the replica running a request died and the one retry failed too."""
    return unavailable(
        "The model replica running this request stopped, and so did its retry on another replica; retry in a moment.",
        "replica_unavailable",
        retry_after_s,
    )

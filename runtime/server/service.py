"""The image service: an :class:`ImageRequest` in, encoded images out.

This is where a request meets the model: the model name is resolved (package id or alias),
style, quality and size are turned into prompt, steps and run/output sizes, the pipeline
validates the rest, and the work goes either to the result cache (seeded requests) or to the
inference worker. Nothing here knows about HTTP, so the same logic serves any front.
Where the worker's batches run (this process, or Ray replicas) is the ``executor``'s business
(``hosting.py``); ``pipeline`` here is used for names, sizes, validation and token counts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from nanoedge import __version__
from nanoedge.core.errors import InvalidRequestError
from nanoedge.runtime.pipeline import Pipeline
from nanoedge.runtime.requests import GenerationRequest, GenerationResult, ResolvedRequest

from .cache import ResultCache, package_fingerprint
from .encoding import encode_images
from .errors import APIError, invalid, model_not_found, queue_full, to_api_error, unavailable
from .files import ImageStore
from .hosting import Executor, LocalExecutor, RenderedStep
from .metrics import Metrics
from .quality import ECHOABLE as ECHOABLE_QUALITIES
from .quality import QualityTable
from .settings import ServerSettings
from .sizing import ECHOABLE_SIZES, SizePlanner
from .styles import StyleBook
from .validation import ImageRequest
from .worker import InferenceWorker, Job, QueueFull, StepListener, WorkerStopped

if TYPE_CHECKING:
    import numpy as np

    from nanoedge.runtime.preview import DenoiseStep

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedRequest:
    """A validated request, ready for the cache or the worker."""

    request: ImageRequest
    resolved: ResolvedRequest
    revised_prompt: str
    quality: str
    cache_key: str | None


@dataclass(frozen=True)
class ImageBatch:
    """Encoded images of one answered request."""

    images: list[bytes]
    fmt: str
    seed: int
    cache: str | None  # "hit" / "miss" for seeded requests, None otherwise


def _created_at(provenance: dict[str, Any]) -> int:
    stamp = provenance.get("exported_at")
    try:
        return int(datetime.fromisoformat(str(stamp)).timestamp())
    except (TypeError, ValueError):
        return int(time.time())


class ImageService:
    def __init__(self, pipeline: Pipeline, settings: ServerSettings, metrics: Metrics, executor: Executor | None = None) -> None:
        self.pipeline = pipeline
        self.executor: Executor = executor if executor is not None else LocalExecutor(pipeline)
        self.settings = settings
        self.metrics = metrics
        manifest = pipeline.manifest
        self.model_id = pipeline.manifest.id
        self.model_names = list(dict.fromkeys([self.model_id, *pipeline.manifest.aliases, *settings.aliases]))
        self.model_created = _created_at(manifest.provenance)
        self.styles = StyleBook.from_manifest(manifest)
        self.quality = QualityTable.from_manifest(manifest)
        self.sizes = SizePlanner(pipeline.sizes, manifest.defaults.get("size"), settings.max_pixels)
        self.worker = InferenceWorker(
            self.executor.runner,
            max_queue=settings.max_queue,
            max_batch=settings.max_batch,
            on_batch=metrics.observe_batch,
            lanes=self.executor.lanes,
        )
        self.cache: ResultCache | None = None
        if settings.cache_dir is not None and settings.cache_max_mb > 0:
            namespace = f"{package_fingerprint(pipeline.manifest.files)}:{__version__}:{pipeline.profile.name}:{pipeline.two_pass}"
            self.cache = ResultCache(settings.cache_dir, int(settings.cache_max_mb * 2**20), namespace)
        self.files = ImageStore(settings.files_dir, settings.files_ttl_s, int(settings.files_max_mb * 2**20))
        metrics.gauge("nanoedge_queue_depth", self.worker.depth)
        metrics.gauge("nanoedge_worker_busy", lambda: float(self.worker.busy()))
        stats = self.worker.stats
        metrics.counter(
            "nanoedge_dropped_requests_total",
            "Requests removed from the queue before their generation started, "
            "because the client disconnected or the request timeout passed.",
            lambda: stats.dropped,
        )
        metrics.counter(
            "nanoedge_cancelled_requests_total",
            "Requests whose generation had started when the client disconnected or the request timeout passed: "
            "their batch stops at the next denoising step, or finishes with their images discarded if live requests share it.",
            lambda: stats.cancelled,
        )
        metrics.counter(
            "nanoedge_isolated_batches_total",
            "Batches of several requests that failed and were retried request by request, so only the failing request got the error.",
            lambda: stats.isolated_batches,
        )
        self.executor.register_metrics(metrics)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self.worker.start()

    def warm_up(self) -> float:
        """Warm up where the batches run (see :meth:`Executor.warm_up`); seconds taken."""
        return self.executor.warm_up()

    def stop(self, timeout: float | None = None) -> None:
        self.worker.stop(timeout)
        self.files.close()
        self.executor.close()

    def preview(self, step: "DenoiseStep | RenderedStep", rows: slice) -> "np.ndarray":
        """Preview pixels of ``rows`` at ``step``, rendered here or already by a replica."""
        return self.executor.preview(step, rows)

    # -- requests ------------------------------------------------------------------------------
    def resolve_model(self, name: str | None) -> str:
        if name is None or name in self.model_names:
            return self.model_id
        raise model_not_found(name, self.model_names)

    def prepare(self, request: ImageRequest) -> PreparedRequest:
        """Turn a parsed request into pipeline terms; 400/404 APIError for what cannot be done."""
        self.resolve_model(request.model)
        prompt, negative = request.prompt, request.negative_prompt
        if request.style is not None:
            style = self.styles.lookup(request.style)
            if style is None:  # validation checks the label; a style book changed since is still a 400
                raise invalid(f"'style' {request.style!r} is not known; use one of {', '.join(self.styles.names())}.", "style")
            prompt, negative = style.apply(prompt, negative)
        plan = self.quality.plan(request.quality)
        steps = request.steps if request.steps is not None else plan.steps
        sizes = self.sizes.plan(request.size)
        generation = GenerationRequest(
            prompt=prompt,
            negative_prompt=negative,
            n=request.n,
            seed=request.seed,
            size=sizes.run,  # parsed once, by the planner; the pipeline only checks it
            steps=steps,
            guidance=request.guidance_scale,
            scheduler=request.scheduler,
        )
        try:
            resolved = self.pipeline.resolve(generation)
        except InvalidRequestError as exc:
            raise to_api_error(exc) from None
        resolved = dataclasses.replace(resolved, output_size=sizes.output)
        key = None
        if self.cache is not None and request.seed is not None:
            key = self.cache.key(
                {
                    "prompt": resolved.prompt,
                    "negative_prompt": resolved.negative_prompt,
                    "n": resolved.n,
                    "seed": resolved.seed,
                    "run_size": str(resolved.run_size),
                    "output_size": str(resolved.output_size),
                    "steps": resolved.steps,
                    "guidance": resolved.guidance,
                    "scheduler": resolved.scheduler,
                    "output_format": request.output_format,
                    "output_compression": request.output_compression if request.output_format != "png" else None,
                }
            )
        return PreparedRequest(request, resolved, prompt, plan.quality, key)

    async def cached(self, prepared: PreparedRequest) -> ImageBatch | None:
        """The cached answer of a seeded request, or None (counted as a hit or a miss)."""
        if prepared.cache_key is None or self.cache is None:
            return None
        cached = await asyncio.to_thread(self.cache.get, prepared.cache_key)
        self.metrics.count_cache(cached is not None)
        if cached is None:
            return None
        return ImageBatch(cached[0], prepared.request.output_format, prepared.resolved.seed, "hit")

    def submit(self, prepared: PreparedRequest, on_step: StepListener | None = None, previews: int = 0) -> Job:
        """Queue the request for the worker; APIError 429 (queue full) or 503 (shutting down).
        ``previews``: how many preview steps ``on_step`` wants."""
        try:
            return self.worker.submit(prepared.resolved, on_step, previews)
        except QueueFull as full:
            raise queue_full(full.retry_after_s) from None
        except WorkerStopped:
            raise unavailable(
                "The server is shutting down; retry in a moment.", "shutting_down", self.settings.unavailable_retry_after_s
            ) from None

    async def finish(self, prepared: PreparedRequest, result: GenerationResult) -> ImageBatch:
        """Encode the generated images and keep them in the cache (seeded requests)."""
        request, resolved = prepared.request, prepared.resolved
        images = await asyncio.to_thread(encode_images, result.images, request.output_format, request.output_compression)
        cache_state = None
        if prepared.cache_key is not None and self.cache is not None:
            await asyncio.to_thread(self.cache.put, prepared.cache_key, images, {"seed": resolved.seed, "format": request.output_format})
            cache_state = "miss"
        return ImageBatch(images, request.output_format, resolved.seed, cache_state)

    async def generate(self, prepared: PreparedRequest, disconnected: Callable[[], Awaitable[None]] | None = None) -> ImageBatch:
        """Answer from the cache or the worker; raises APIError for 429/503/504 and ClientGone
        when ``disconnected()`` (an awaitable that ends when the client leaves) finishes first."""
        hit = await self.cached(prepared)
        if hit is not None:
            return hit
        job = self.submit(prepared)
        result = await self._wait(job, disconnected)
        return await self.finish(prepared, result)

    async def _wait(self, job: Job, disconnected: Callable[[], Awaitable[None]] | None) -> GenerationResult:
        """Wait for the job, the timeout or the client leaving, whichever comes first."""
        waiter = asyncio.wrap_future(job.future)
        watch = asyncio.ensure_future(disconnected()) if disconnected is not None else None
        try:
            remaining = self.settings.request_timeout_s - (time.monotonic() - job.enqueued_at)
            pending = {waiter} if watch is None else {waiter, watch}
            done, _ = await asyncio.wait(pending, timeout=max(0.0, remaining), return_when=asyncio.FIRST_COMPLETED)
            if waiter in done:
                return waiter.result()
            outcome = self.worker.cancel(job)
            if outcome == "done":
                return job.future.result()  # it finished just as the deadline passed
            started = outcome != "dropped"
            if watch is not None and watch in done:
                log.info("client disconnected; %s", "its generation stops at the next step" if started else "dropped its queued work")
                raise ClientGone()
            raise self.timeout_error(started)
        finally:
            if watch is not None:
                watch.cancel()
            if not waiter.done():
                self.worker.cancel(job)  # counted as dropped/cancelled, whatever ended the wait
                waiter.cancel()

    def timeout_error(self, started: bool) -> APIError:
        """The 504 for a request that passed ``request_timeout_s`` (queued or running)."""
        return APIError(
            504,
            f"The request did not finish within the server's {self.settings.request_timeout_s:g} s limit"
            + (
                "; it was still waiting in the queue, retry later."
                if not started
                else "; ask for fewer steps, fewer images or a smaller size."
            ),
            type="server_error",
            code="timeout",
            headers={"x-should-retry": "true" if not started else "false"},
        )

    def prompt_tokens(self, text: str) -> int:
        """Tokens the text encoder reads of ``text`` (for the streamed ``usage``)."""
        return self.pipeline.tokenizer.count(text)

    def encode_echo(self, prepared: PreparedRequest) -> dict[str, Any]:
        """Top-level response fields; only values the official schema allows are echoed."""
        echo: dict[str, Any] = {"output_format": prepared.request.output_format}
        size = str(prepared.resolved.output_size)
        if size in ECHOABLE_SIZES:
            echo["size"] = size
        if prepared.quality in ECHOABLE_QUALITIES:
            echo["quality"] = prepared.quality
        return echo


class ClientGone(Exception):
    """The client closed the connection; there is nobody to answer."""

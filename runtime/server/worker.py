"""One inference thread fed by a bounded queue, batching compatible requests.

onnxruntime already uses every core for one generation, so a second concurrent generation
would only compete for the same cores and memory: the server runs exactly one, in one thread,
and lets the asyncio front wait on :class:`concurrent.futures.Future` objects. While a batch
runs, new requests queue up; the next batch takes the oldest waiting request plus any others
that share its size, steps, guidance, scheduler and output size, up to ``max_batch`` images,
so under load requests share UNet calls without anyone waiting on a timer.

A request whose client went away (or whose timeout passed) is cancelled with
:meth:`InferenceWorker.cancel`: still queued, it is dropped; already running, the pipeline's
per-step ``cancel`` check stops its batch at the next denoising step once every request in the
batch is cancelled. (A batch that still serves live requests runs on: the scheduler's state
covers the whole batch, so one row cannot leave it; the cancelled request's images are
discarded.) A request with more images than ``max_batch`` is generated in slices, checked
between slices too; the pipeline draws noise per image from ``seed + i``, so slicing (like
batching) does not change any image.

Isolation: if a batch of several requests fails, each request is retried alone, so only the
request that causes the failure gets an error; the others get their images.

A job may carry an ``on_step`` listener (a streamed request that wants previews): the worker
then passes the pipeline a per-step hook that hands each listener the rows of the batch that
are its own images, so a streamed request can share a batch with plain ones. Batches with no
listener call the pipeline exactly as before.

Lanes: ``lanes=N`` runs N threads that take batches from the same queue, each calling the
same (then thread-safe) :class:`BatchGenerator`. In-process there is one lane (one pipeline
owns the cores); with Ray replicas (``hosting.py``, ``ray_host.py``) there is one lane per
replica, so admission control (queue full -> 429), batching, cancellation and isolation stay
this one implementation whichever way the batches are run.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

from nanoedge.runtime.preview import DenoiseStep, StepCallback
from nanoedge.runtime.requests import CancelCheck, GenerationCancelled, GenerationResult, ResolvedRequest

log = logging.getLogger(__name__)


class BatchGenerator(Protocol):
    """What the worker needs from a pipeline (tests substitute slow or failing fakes)."""

    def generate_batch(
        self, requests: Sequence[ResolvedRequest], *, cancel: CancelCheck | None = None, on_step: StepCallback | None = None
    ) -> list[GenerationResult]: ...


class QueueFull(Exception):
    """The queue holds ``max_queue`` requests already; ``retry_after_s`` estimates the wait."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__("queue full")
        self.retry_after_s = retry_after_s


class WorkerStopped(Exception):
    """The worker is shutting down and takes no new work."""


#: listener(step, rows, first_image): the job's images are ``step.<array>[rows]``; ``first_image``
#: is the index (within the request) of the first of them (non-zero for later slices).
StepListener = Callable[[DenoiseStep, slice, int], None]


@dataclass
class Job:
    request: ResolvedRequest
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    enqueued_at: float = field(default_factory=time.monotonic)
    #: Set by InferenceWorker.cancel once the job is running: nobody waits for it any more.
    abandoned: threading.Event = field(default_factory=threading.Event)
    #: Per-step listener of a streamed request that wants previews.
    on_step: StepListener | None = None
    #: How many previews that listener wants (a remote runner renders only those steps).
    previews: int = 0

    def group(self) -> tuple:
        # output_size is part of the key: the pipeline resizes a whole batch to one size.
        return (self.request.batch_key(), self.request.output_size)

    @property
    def started(self) -> bool:
        return self.future.running() or self.future.done()


@dataclass
class WorkerStats:
    batches: int = 0
    images: int = 0
    #: Requests cancelled while queued: removed before any work was done for them.
    dropped: int = 0
    #: Requests cancelled while running: their batch stopped at the next step, or (when live
    #: requests shared it) finished with their images discarded.
    cancelled: int = 0
    #: Batches that failed as a whole and were retried request by request.
    isolated_batches: int = 0
    seconds_per_image: float = 0.0


BatchObserver = Callable[[int, float], None]


class InferenceWorker:
    """Owns the pipeline: every generation goes through :meth:`submit`."""

    def __init__(
        self,
        pipeline: BatchGenerator,
        *,
        max_queue: int = 32,
        max_batch: int = 4,
        on_batch: BatchObserver | None = None,
        lanes: int = 1,
    ) -> None:
        if max_queue < 1 or max_batch < 1 or lanes < 1:
            raise ValueError("max_queue, max_batch and lanes must be at least 1")
        self.pipeline = pipeline
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.lanes = lanes
        self.stats = WorkerStats()
        self._on_batch = on_batch
        self._queue: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._running = 0  # lanes running a batch now
        suffix = [""] if lanes == 1 else [f"-{i}" for i in range(lanes)]
        self._threads = [threading.Thread(target=self._loop, name=f"nanoedge-inference{s}", daemon=True) for s in suffix]

    # -- front side (any thread) ---------------------------------------------------------------
    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, request: ResolvedRequest, on_step: StepListener | None = None, previews: int = 0) -> Job:
        """Queue a request; raise QueueFull or WorkerStopped instead of waiting."""
        with self._cond:
            if self._stopping:
                raise WorkerStopped()
            self._purge_cancelled()
            if len(self._queue) >= self.max_queue:
                raise QueueFull(self._estimate_wait())
            job = Job(request, on_step=on_step, previews=previews)
            self._queue.append(job)
            self._cond.notify()
            return job

    def cancel(self, job: Job) -> str:
        """Nobody waits for ``job`` any more. Returns ``"dropped"`` (it was still queued and
        will never run), ``"cancelling"`` (it is running: the worker stops it at the next
        step it can) or ``"done"`` (it had already finished)."""
        with self._cond:
            if job.future.cancelled():  # cancelled before: counted then
                return "dropped"
            if job.future.cancel():
                self.stats.dropped += 1
                return "dropped"
            if job.future.done():
                return "done"
            job.abandoned.set()
            return "cancelling"

    def depth(self) -> int:
        """Requests waiting (cancelled ones excluded), not counting the running batch."""
        with self._cond:
            return sum(1 for j in self._queue if not j.future.cancelled())

    def busy(self) -> bool:
        return self._running > 0

    def running(self) -> int:
        """Lanes generating a batch now."""
        return self._running

    def stop(self, timeout: float | None = None) -> None:
        """Finish what is queued, then end the threads."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive():
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    # -- worker side ---------------------------------------------------------------------------
    def _purge_cancelled(self) -> None:
        if any(j.future.cancelled() for j in self._queue):  # counted by cancel()
            self._queue = collections.deque(j for j in self._queue if not j.future.cancelled())

    def _estimate_wait(self) -> float:
        images = sum(j.request.n for j in self._queue) + self.max_batch * self._running
        per_image = self.stats.seconds_per_image or 1.0
        return per_image * images / max(1, min(self.max_batch, 2)) / self.lanes + 1.0

    def _take_batch(self) -> list[Job]:
        """Oldest live job plus compatible followers, up to max_batch images (lock held)."""
        batch: list[Job] = []
        images = 0
        key = None
        remaining: collections.deque[Job] = collections.deque()
        while self._queue:
            job = self._queue.popleft()
            if job.future.cancelled():  # counted by cancel()
                continue
            if key is None:
                if job.future.set_running_or_notify_cancel():
                    key, images = job.group(), job.request.n
                    batch.append(job)
                continue
            if job.group() == key and images + job.request.n <= self.max_batch:
                if job.future.set_running_or_notify_cancel():
                    batch.append(job)
                    images += job.request.n
                continue
            remaining.append(job)
        self._queue = remaining
        return batch

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue and self._stopping:
                    return
                batch = self._take_batch()
                self._running += bool(batch)
            if batch:
                try:
                    self._run(batch)
                finally:
                    with self._cond:
                        self._running -= 1

    def _run(self, batch: list[Job]) -> None:
        started = time.perf_counter()
        images = sum(j.request.n for j in batch)

        def everyone_left() -> bool:
            return all(j.abandoned.is_set() for j in batch)

        try:
            if len(batch) == 1 and batch[0].request.n > self.max_batch:
                results = [self._run_sliced(batch[0], everyone_left)]
            else:
                results = self.pipeline.generate_batch([j.request for j in batch], cancel=everyone_left, **_hooks(batch))
        except GenerationCancelled as exc:
            log.info("stopped a batch of %d request(s): %s (every client left or timed out)", len(batch), exc)
            self._finish_cancelled(batch, exc)
            return
        except BaseException as exc:
            if len(batch) == 1:  # the thread lives on; the one waiting client gets the error
                log.exception("generation failed for one request")
                batch[0].future.set_exception(exc)
                return
            log.warning("a batch of %d requests failed (%s: %s); retrying them one by one", len(batch), type(exc).__name__, exc)
            self.stats.isolated_batches += 1
            for job in batch:
                self._run_alone(job)
            return
        elapsed = time.perf_counter() - started
        for job, result in zip(batch, results):
            if job.abandoned.is_set():
                self.stats.cancelled += 1
            job.future.set_result(result)
        with self._cond:  # several lanes update the stats
            self.stats.batches += 1
            self.stats.images += images
            per_image = elapsed / max(1, images)
            self.stats.seconds_per_image = (
                per_image if not self.stats.seconds_per_image else 0.8 * self.stats.seconds_per_image + 0.2 * per_image
            )
        log.debug("batch of %d request(s), %d image(s) in %.2f s", len(batch), images, elapsed)
        if self._on_batch is not None:
            self._on_batch(images, elapsed)

    def _finish_cancelled(self, jobs: list[Job], exc: BaseException) -> None:
        for job in jobs:
            self.stats.cancelled += 1
            job.future.set_exception(exc)

    def _run_alone(self, job: Job) -> None:
        """Retry one request of a failed batch by itself; its outcome is its own."""
        if job.abandoned.is_set():
            self._finish_cancelled([job], GenerationCancelled("cancelled before its retry"))
            return
        started = time.perf_counter()
        try:
            if job.request.n > self.max_batch:
                result = self._run_sliced(job, job.abandoned.is_set)
            else:
                result = self.pipeline.generate_batch([job.request], cancel=job.abandoned.is_set, **_hooks([job]))[0]
        except GenerationCancelled as exc:
            self._finish_cancelled([job], exc)
            return
        except Exception as exc:
            log.exception("generation failed for one request (retried alone after its batch failed)")
            job.future.set_exception(exc)
            return
        job.future.set_result(result)
        with self._cond:
            self.stats.batches += 1
            self.stats.images += job.request.n
        if self._on_batch is not None:
            self._on_batch(job.request.n, time.perf_counter() - started)

    def _run_sliced(self, job: Job, cancel: CancelCheck) -> GenerationResult:
        """Generate a request bigger than max_batch in slices; images stay the same."""
        request = job.request
        images = []
        truncated = False
        timings: dict[str, float] = {}
        for offset in range(0, request.n, self.max_batch):
            part = dataclasses.replace(request, n=min(self.max_batch, request.n - offset), seed=request.seed + offset)
            hooks = _hooks([Job(part, on_step=job.on_step, previews=job.previews)], first_image=offset)
            result = self.pipeline.generate_batch([part], cancel=cancel, **hooks)[0]
            images.extend(result.images)
            truncated = truncated or result.truncated_prompt
            for name, value in result.timings.items():
                timings[name] = timings.get(name, 0.0) + value
        return GenerationResult(images=images, request=request, truncated_prompt=truncated, timings=timings)


class StepFanout:
    """The per-step hook of one batch: hands each listening job the rows of its own images.

    ``plan`` says which rows listen and how many previews each wants, so a runner in another
    process (a Ray replica) can render just those previews there and replay them here."""

    def __init__(self, listeners: list[tuple[StepListener, slice, int]], first_image: int) -> None:
        self.listeners = listeners
        self.first_image = first_image

    @property
    def plan(self) -> list[tuple[slice, int]]:
        return [(rows, wanted) for _, rows, wanted in self.listeners]

    def __call__(self, step: DenoiseStep) -> None:
        for listener, rows, _ in self.listeners:
            try:
                listener(step, rows, self.first_image)
            except Exception:  # a preview must never fail the images it previews
                log.exception("a step listener failed; that preview is skipped, the images are not affected")


def _hooks(batch: list[Job], first_image: int = 0) -> dict[str, StepCallback]:
    """``{"on_step": StepFanout}`` when some job listens, else nothing (the pipeline call is unchanged)."""
    listeners, offset = [], 0
    for job in batch:
        if job.on_step is not None:
            listeners.append((job.on_step, slice(offset, offset + job.request.n), job.previews))
        offset += job.request.n
    if not listeners:
        return {}
    return {"on_step": StepFanout(listeners, first_image)}

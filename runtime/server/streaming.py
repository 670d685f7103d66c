"""``stream: true``: one request answered as server-sent events, the way the OpenAI API does.

Events (``event:`` line + JSON ``data:`` line, the shapes of the official
``ImageGenStreamEvent``):

* ``image_generation.partial_image`` - ``partial_images`` (0-3) previews per image, taken at
  evenly spread denoising steps (:func:`nanoedge.runtime.preview.preview_steps`) and decoded
  cheaply (:meth:`Pipeline.preview`) at the size the model runs at (which is the output size
  unless the server resizes); ``partial_image_index`` counts them from 0.
* ``image_generation.completed`` - the final image, one event per image, with ``usage``.
* ``error`` - ``{"type": "error", "error": {message, type, param, code}}`` when the request fails
  after the stream has started (a worker failure, the request timeout); the stream then ends.
  The openai SDKs raise an ``APIError`` with that message for any event whose data has an
  ``error`` key.

Both image events carry a nanoedge extension ``image_index`` (which of the ``n`` images it
belongs to). ``size`` and ``quality`` are echoed when the official enum allows the value and
are ``auto`` otherwise, as the schema requires them. ``usage`` counts the prompt tokens the
text encoder read; a diffusion model produces no output tokens, so ``output_tokens`` is 0.

Everything that can fail before the first byte (validation, the cache lookup, a full queue)
happens in :meth:`ImageStream.start`, so those failures are ordinary JSON error answers.
Previews are computed and encoded on the inference thread right after their step (the UNet
is idle for that moment anyway) and handed to the event loop as bytes. A cache hit streams
just the final images.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from typing import Any, AsyncIterator

import numpy as np
from PIL import Image

from nanoedge.runtime.preview import DenoiseStep, preview_steps

from .encoding import encode_image
from .errors import APIError, internal_error
from .hosting import RenderedStep
from .quality import ECHOABLE as ECHOABLE_QUALITIES
from .service import ImageBatch, ImageService, PreparedRequest
from .sizing import ECHOABLE_SIZES
from .worker import Job

log = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def error_event(error: APIError) -> bytes:
    return sse("error", {"type": "error", **error.body()})


class ImageStream:
    """The events of one streamed request; call :meth:`start` before sending any byte."""

    def __init__(self, service: ImageService, prepared: PreparedRequest, request_id: str) -> None:
        self.service = service
        self.prepared = prepared
        self.request_id = request_id
        self.hit: ImageBatch | None = None
        self.job: Job | None = None
        self._previews: asyncio.Queue[tuple[int, int, bytes]] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._wanted = prepared.request.partial_images
        self._steps: list[int] | None = None
        self._sent: set[tuple[int, int]] = set()  # a batch retried alone repeats its steps

    async def start(self) -> None:
        """Cache lookup and queueing; raises APIError (429/503) while an error answer is still possible."""
        self.hit = await self.service.cached(self.prepared)
        if self.hit is None:
            self.job = self.service.submit(self.prepared, self._on_step if self._wanted else None, self._wanted)

    @property
    def seed(self) -> int:
        return self.prepared.resolved.seed

    @property
    def cache_state(self) -> str | None:
        if self.hit is not None:
            return "hit"
        return "miss" if self.prepared.cache_key is not None and self.service.cache is not None else None

    # -- inference thread ----------------------------------------------------------------------
    def _on_step(self, step: "DenoiseStep | RenderedStep", rows: slice, first_image: int) -> None:
        if self._steps is None:
            self._steps = preview_steps(step.total, self._wanted)
        if step.index not in self._steps:
            return
        index = self._steps.index(step.index)
        if (index, first_image) in self._sent:
            return
        self._sent.add((index, first_image))
        pixels = self.service.preview(step, rows)
        for offset, image in enumerate(pixels):
            # Encoded here, between two UNet steps, rather than in another thread: a hand-off
            # per preview cost more wall time on a busy 2-core box than the encode itself
            # (a preview is at most the run size: ~1 ms at 64 px, ~10 ms at 512 px).
            data = self._encode_preview(image)
            self._loop.call_soon_threadsafe(self._previews.put_nowait, (index, first_image + offset, data))

    # -- event loop ----------------------------------------------------------------------------
    def _common(self) -> dict[str, Any]:
        request = self.prepared.request
        size = str(self.prepared.resolved.output_size)
        return {
            "created_at": int(time.time()),
            "size": size if size in ECHOABLE_SIZES else "auto",
            "quality": self.prepared.quality if self.prepared.quality in ECHOABLE_QUALITIES else "auto",
            "background": request.background,
            "output_format": request.output_format,
        }

    def _encode_preview(self, pixels: np.ndarray) -> bytes:
        # At the size the model runs at, not resized up to the output size: a preview cannot
        # hold more detail than that, and a small package serving 512x512 by resizing 64x64
        # would otherwise spend more time encoding previews than generating (clients scale it).
        size = self.prepared.resolved.run_size
        image = Image.fromarray(pixels)
        if image.size != (size.width, size.height):
            image = image.resize((size.width, size.height), Image.Resampling.BILINEAR)
        request = self.prepared.request
        return encode_image(image, request.output_format, request.output_compression)

    def _partial_event(self, item: tuple[int, int, bytes]) -> bytes:
        index, image_index, data = item
        return sse("image_generation.partial_image", {
            "type": "image_generation.partial_image",
            "b64_json": base64.b64encode(data).decode("ascii"),
            **self._common(),
            "partial_image_index": index,
            "image_index": image_index,
        })

    async def _completed_events(self, batch: ImageBatch) -> AsyncIterator[bytes]:
        prepared = self.prepared
        # inline, not in a thread: counting tokens of two short texts takes microseconds
        tokens = self.service.prompt_tokens(prepared.resolved.prompt)
        if prepared.resolved.guidance > 1.0 and prepared.resolved.negative_prompt:
            tokens += self.service.prompt_tokens(prepared.resolved.negative_prompt)
        usage = {"total_tokens": tokens, "input_tokens": tokens, "output_tokens": 0,
                 "input_tokens_details": {"text_tokens": tokens, "image_tokens": 0}}
        for image_index, image in enumerate(batch.images):
            yield sse("image_generation.completed", {
                "type": "image_generation.completed",
                "b64_json": base64.b64encode(image).decode("ascii"),
                **self._common(),
                "usage": usage,
                "image_index": image_index,
            })

    async def events(self) -> AsyncIterator[bytes]:
        """Partial images as they come, then the final ones; an error event if it fails."""
        if self.hit is not None:
            async for event in self._completed_events(self.hit):
                yield event
            return
        job = self.job
        assert job is not None
        waiter = asyncio.wrap_future(job.future)
        timeout = self.service.settings.request_timeout_s
        try:
            while True:
                getter = asyncio.ensure_future(self._previews.get())
                remaining = timeout - (time.monotonic() - job.enqueued_at)
                done, _ = await asyncio.wait({waiter, getter}, timeout=max(0.0, remaining), return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield self._partial_event(getter.result())
                    continue
                getter.cancel()
                if waiter not in done:
                    outcome = self.service.worker.cancel(job)  # stops it at the next step if running
                    if outcome != "done":
                        yield error_event(self.service.timeout_error(outcome != "dropped"))
                        return
                while not self._previews.empty():  # previews queued before the result landed
                    yield self._partial_event(self._previews.get_nowait())
                try:
                    result = waiter.result()
                except APIError as exc:
                    yield error_event(exc)
                    return
                except Exception as exc:  # the worker logged the traceback
                    log.warning("streamed generation failed (request id %s): %s", self.request_id, type(exc).__name__)
                    yield error_event(internal_error(self.request_id))
                    return
                batch = await self.service.finish(self.prepared, result)
                async for event in self._completed_events(batch):
                    yield event
                return
        finally:  # the client left mid-stream: drop the queued work or stop the running one
            if not job.future.done():
                self.service.worker.cancel(job)

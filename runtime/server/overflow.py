"""Hybrid overflow: which generation requests this box answers and which go to the upstream.

Users used to do this in their client code (fall back to a hosted API when the box is
saturated); with ``--upstream`` the server does it once for every client. The policy
(``--overflow-on``, any of :data:`~.settings.OVERFLOW_REASONS`):

* ``queue-full`` - the local queue holds ``--max-queue`` requests (the local answer would be a 429);
* ``unserved-size`` - a well-formed ``WxH`` the package cannot make here (out of its bounds,
  another aspect ratio than a static package's, not a multiple of 8);
* ``unserved-model`` - a ``model`` this server does not serve (sent on without local
  validation: the upstream judges its fields, e.g. ``background: transparent``);
* ``local-error`` (opt-in) - the local pipeline failed (what would be a 500).

A request overflows only *before* local work has been done for it, and never for the
client's own errors: a malformed body or invalid field (400), a missing or wrong key (401,
checked before any route), a body too large (413). Timeouts (504), loading and draining
(503) are answered here too. Every answer says who served it (``X-Nanoedge-Served-By``, and
``nanoedge_served_requests_total{served_by,status}``).

When the upstream cannot take the request (breaker open, ``--upstream-max-concurrent``
reached), a request that overflowed because the box was busy gets the local answer (429
``queue_full`` with the local wait, or the local 500): it is what the client would have got
without an upstream, and it clears as soon as the local queue moves. One that this box cannot
serve at all gets 503 ``upstream_unavailable`` (or 429 ``upstream_busy``). Upstream answers
are mapped in :meth:`Overflow._relay`; the table is in docs/serving.md ("Hybrid overflow").
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, AsyncGenerator, AsyncIterator, Awaitable, Callable

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from nanoedge.core.errors import InvalidRequestError
from nanoedge.core.sizes import parse_size

from .breaker import STATE_VALUES, CircuitBreaker
from .errors import APIError, internal_error, retry_after_header, unavailable
from .metrics import Metrics
from .service import ClientGone, ImageService
from .settings import UpstreamSettings
from .streaming import SSE_HEADERS, error_event
from .upstream import UpstreamAnswer, UpstreamClient, UpstreamFailure, map_model
from .validation import parse_json_body

log = logging.getLogger(__name__)

SERVED_BY = "X-Nanoedge-Served-By"
REASON_HEADER = "X-Nanoedge-Overflow-Reason"
SERVED_METRIC = "nanoedge_served_requests_total"
SERVED_HELP = "Generation requests by who answered them (local or upstream) and the status sent to the client."
OVERFLOW_METRIC = "nanoedge_overflow_requests_total"
OVERFLOW_HELP = "Generation requests sent to the upstream, by the reason (queue-full, unserved-size, unserved-model, local-error)."
#: Reasons that mean "this box is busy or broken", not "this box cannot do it": when the
#: upstream cannot take such a request, the local answer (429/500) is the right one.
LOCAL_ANSWER_REASONS = ("queue-full", "local-error")

LocalAnswer = Callable[[Request, ImageService, bytes], Awaitable[Response]]
Disconnected = Callable[[], Awaitable[None]]


class Overflow:
    """The policy and its upstream; one per server, built when ``--upstream`` is given."""

    def __init__(self, settings: UpstreamSettings, metrics: Metrics, retry_after_s: float = 2.0) -> None:
        self.settings = settings
        self.metrics = metrics
        self.reasons = frozenset(settings.overflow_on)
        self.models = dict(settings.models)
        self.retry_after_s = retry_after_s
        self.client = UpstreamClient(settings)
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown_s)
        self.in_flight = 0
        metrics.gauge("nanoedge_upstream_in_flight", lambda: float(self.in_flight))
        metrics.gauge("nanoedge_upstream_breaker_state", lambda: STATE_VALUES[self.breaker.state])
        metrics.counter(
            "nanoedge_upstream_breaker_opened_total",
            "Times the upstream circuit breaker opened (consecutive failures reached --breaker-failures, or a half-open trial failed).",
            lambda: self.breaker.opened_total,
        )

    async def close(self) -> None:
        await self.client.close()

    # -- the policy ----------------------------------------------------------------------------
    async def answer(
        self, request: Request, raw: bytes, service: ImageService, local: LocalAnswer, disconnected: Disconnected | None = None
    ) -> Response:
        """``local(request, service, raw)`` unless the policy sends the request upstream."""
        try:
            body = parse_json_body(raw)
        except APIError as error:  # the client's own mistake: never forwarded
            raise self._served_locally(error)
        model = body.get("model")
        if "unserved-model" in self.reasons and isinstance(model, str) and model not in service.model_names:
            return await self._forward(request, raw, body, "unserved-model", None, disconnected)
        try:
            response = await local(request, service, raw)
        except APIError as error:
            reason = self._reason(error, body)
            if reason is None:
                raise self._served_locally(error)
            return await self._forward(request, raw, body, reason, error, disconnected)
        except Exception:
            if "local-error" not in self.reasons:
                self.metrics.increment(SERVED_METRIC, SERVED_HELP, served_by="local", status="500")
                raise
            request_id = _request_id(request)
            log.exception("local generation failed (request id %s); overflowing it to the upstream (local-error)", request_id)
            return await self._forward(request, raw, body, "local-error", internal_error(request_id), disconnected)
        if response.status_code != 499:  # 499: the client left, nobody reads a header
            response.headers[SERVED_BY] = "local"
        self.metrics.increment(SERVED_METRIC, SERVED_HELP, served_by="local", status=str(response.status_code))
        return response

    def _reason(self, error: APIError, body: dict[str, Any]) -> str | None:
        if error.status == 429 and error.code == "queue_full" and "queue-full" in self.reasons:
            return "queue-full"
        if error.status == 400 and error.param == "size" and "unserved-size" in self.reasons and _well_formed_size(body.get("size")):
            return "unserved-size"
        return None

    def _served_locally(self, error: APIError) -> APIError:
        error.headers[SERVED_BY] = "local"
        self.metrics.increment(SERVED_METRIC, SERVED_HELP, served_by="local", status=str(error.status))
        return error

    # -- the upstream --------------------------------------------------------------------------
    async def _forward(
        self,
        request: Request,
        raw: bytes,
        body: dict[str, Any],
        reason: str,
        local_error: APIError | None,
        disconnected: Disconnected | None,
    ) -> Response:
        if self.in_flight >= self.settings.max_concurrent:
            if local_error is not None and reason in LOCAL_ANSWER_REASONS:
                raise self._served_locally(local_error)
            raise self._upstream_error(
                APIError(
                    429,
                    f"This request needs the upstream API, which already has {self.settings.max_concurrent} requests "
                    "in flight from this server; retry after the time in the Retry-After header.",
                    type="rate_limit_error",
                    code="upstream_busy",
                    headers=retry_after_header(self.retry_after_s),
                )
            )
        if not self.breaker.allow():
            wait = self.breaker.retry_after_s()
            if local_error is not None and reason in LOCAL_ANSWER_REASONS:
                raise self._served_locally(local_error)
            raise self._upstream_error(
                unavailable(
                    "The upstream API is failing and this server stopped sending it requests for a while (circuit breaker open); "
                    "retry after the time in the Retry-After header.",
                    "upstream_unavailable",
                    wait or self.retry_after_s,
                )
            )
        self.metrics.increment(OVERFLOW_METRIC, OVERFLOW_HELP, reason=reason)
        outgoing = map_model(raw, body, self.models)
        stream = body.get("stream") is True
        request_id = _request_id(request)
        self.in_flight += 1
        handed_over = False
        started = time.perf_counter()
        try:
            answer = await self._send(outgoing, stream, request_id, disconnected)
            seconds = time.perf_counter() - started
            log.debug("request %s overflowed (%s): upstream answered %d in %.3f s", request_id, reason, answer.status, seconds)
            response = self._relay(answer, reason)
            if answer.chunks is not None:
                handed_over = True  # the stream's generator releases in_flight when it ends
            return response
        except ClientGone:
            self.breaker.release()
            return Response(status_code=499)
        except UpstreamFailure as failure:
            self.breaker.failure()
            log.warning("the upstream failed for request %s (%s): %s", request_id, reason, failure)
            raise self._upstream_error(
                unavailable(
                    f"The upstream API did not answer ({failure.kind}); retry after the time in the Retry-After header.",
                    "upstream_unavailable",
                    self.breaker.retry_after_s() or self.retry_after_s,
                )
            ) from None
        except Exception:
            self.breaker.release()  # whatever it was, a half-open trial must not stay out forever
            raise
        finally:
            if not handed_over:
                self.in_flight -= 1

    async def _send(self, body: bytes, stream: bool, request_id: str, disconnected: Disconnected | None) -> UpstreamAnswer:
        """The upstream exchange, abandoned (ClientGone) if the client leaves first."""
        if disconnected is None or stream:  # a stream notices a gone client when it writes
            return await self.client.send(body, stream=stream, request_id=request_id)
        exchange = asyncio.ensure_future(self.client.send(body, stream=False, request_id=request_id))
        watch = asyncio.ensure_future(disconnected())
        try:
            await asyncio.wait({exchange, watch}, return_when=asyncio.FIRST_COMPLETED)
            if exchange.done():
                return exchange.result()
            raise ClientGone()
        finally:
            watch.cancel()
            if not exchange.done():
                exchange.cancel()

    def _relay(self, answer: UpstreamAnswer, reason: str) -> Response:
        """The upstream's answer as this server's: successes relayed as they are, errors in the
        OpenAI envelope with the status the table in docs/serving.md gives."""
        status = answer.status
        if 200 <= status < 300:
            self.breaker.success()
            headers = {k: v for k, v in answer.headers.items() if k != "retry-after"}
            headers.update({SERVED_BY: "upstream", REASON_HEADER: reason})
            if answer.request_id:
                headers["x-upstream-request-id"] = answer.request_id
            self.metrics.increment(SERVED_METRIC, SERVED_HELP, served_by="upstream", status=str(status))
            if answer.chunks is not None:
                headers.update(SSE_HEADERS)
                return StreamingResponse(self._relay_stream(answer.chunks), status_code=status, headers=headers)
            return Response(answer.body, status_code=status, headers=headers)
        if status in (401, 403):
            self.breaker.failure()
            log.warning(
                "the upstream refused this server's key (HTTP %d): check the variable --upstream-key-env names (its value is not shown)",
                status,
            )
            raise self._upstream_error(
                unavailable(
                    "The upstream API refused this server's credentials; the server's operator must fix its upstream key. "
                    "Retry later.",
                    "upstream_auth_failed",
                    self.breaker.retry_after_s() or self.retry_after_s,
                )
            )
        if status >= 500:
            self.breaker.failure()
            log.warning("the upstream answered HTTP %d (%s)", status, reason)
            seconds = _retry_after(answer.headers.get("retry-after")) or self.breaker.retry_after_s() or self.retry_after_s
            upstream_message = _envelope(answer.body).get("message")
            raise self._upstream_error(
                unavailable(
                    f"The upstream API is unavailable (HTTP {status}"
                    + (f": {upstream_message}" if upstream_message else "")
                    + "); retry after the time in the Retry-After header.",
                    "upstream_unavailable",
                    seconds,
                )
            )
        if status == 429:
            self.breaker.release()  # busy, not broken: neither a success nor a failure
            seconds = _retry_after(answer.headers.get("retry-after")) or self.retry_after_s
            raise self._upstream_error(
                _from_envelope(429, answer.body, "The upstream API is rate limiting this server.", "rate_limit_error",
                               retry_after_header(seconds))
            )
        # another 4xx: the upstream judged the request itself (it is up: a success for the breaker)
        self.breaker.success()
        raise self._upstream_error(_from_envelope(status, answer.body, f"The upstream API refused the request (HTTP {status}).",
                                                  "invalid_request_error", {}))

    async def _relay_stream(self, chunks: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                yield chunk
        except UpstreamFailure as failure:
            self.breaker.failure()
            log.warning("the upstream stream broke off: %s", failure)
            broke = unavailable(f"The upstream API stream broke off ({failure.kind}).", "upstream_unavailable", self.retry_after_s)
            yield error_event(broke)
        finally:
            self.in_flight -= 1
            # The client may have left mid-stream (this generator is then being cancelled): close
            # the upstream response anyway, shielded, or its pooled connection would stay taken.
            with anyio.CancelScope(shield=True):
                await chunks.aclose()

    def _upstream_error(self, error: APIError) -> APIError:
        error.headers[SERVED_BY] = "upstream"
        self.metrics.increment(SERVED_METRIC, SERVED_HELP, served_by="upstream", status=str(error.status))
        return error


def _request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def _well_formed_size(size: Any) -> bool:
    """A ``WxH`` the client could rightly ask of some image API (not ``auto``, not garbage)."""
    if not isinstance(size, str):
        return False
    try:
        parse_size(size)
    except InvalidRequestError:
        return False
    return True


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header given in seconds (an HTTP date counts as absent)."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and seconds >= 0 else None


def _envelope(body: bytes) -> dict[str, Any]:
    """The ``error`` object of an OpenAI error body, or {} when the body is not one."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, dict) else {}


def _from_envelope(status: int, body: bytes, fallback: str, error_type: str, headers: dict[str, str]) -> APIError:
    """The upstream's error as our envelope (all four keys, ASCII-safe), its fields kept."""
    error = _envelope(body)

    def text(key: str) -> str | None:
        value = error.get(key)
        return value if isinstance(value, str) else None

    return APIError(
        status,
        text("message") or fallback,
        type=text("type") or error_type,
        param=text("param"),
        code=text("code"),
        headers=headers,
    )


__all__ = ["LOCAL_ANSWER_REASONS", "Overflow", "REASON_HEADER", "SERVED_BY"]

"""The HTTP client of hybrid overflow: one request body to the upstream image API, its answer back.

The upstream is any OpenAI-compatible image API (a hosted one, or another nanoedge box),
named by its base URL the way an SDK's ``base_url`` is (``https://api.example.com/v1``);
requests go to ``{url}/images/generations``. The body goes out as the client sent it, byte
for byte, except the ``model`` name when ``--upstream-model LOCAL=REMOTE`` maps it (the body
is then re-encoded as JSON with that one value changed). The client's own headers are not
forwarded (its ``Authorization`` is a key of *this* server): the upstream gets our key from
the environment variable ``--upstream-key-env`` names, which is never logged and never put in
a message. Streamed answers (``text/event-stream``) are relayed chunk by chunk.

httpx is imported here and only here, and this module only when ``--upstream`` is used, so
``nanoedge serve`` without an upstream does not need httpx.

Failures of the transport (refused connection, timeout, a connection that dies) raise
:class:`UpstreamFailure`; any HTTP answer, error or not, comes back as an
:class:`UpstreamAnswer` for the overflow policy (overflow.py) to judge.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import AsyncGenerator, Mapping

import httpx

from nanoedge import __version__

from .settings import UpstreamSettings

log = logging.getLogger(__name__)

#: Upstream response headers relayed to the client (besides the status and the body).
RELAYED_HEADERS = ("content-type", "retry-after", "x-nanoedge-seed", "x-cache")


class UpstreamFailure(Exception):
    """No HTTP answer came back: ``kind`` is ``timeout`` or ``connection``."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass
class UpstreamAnswer:
    """The upstream's answer: the whole body, or (a streamed 200) the chunks still to come."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    request_id: str | None
    chunks: AsyncGenerator[bytes, None] | None = None


def map_model(raw: bytes, body: dict, models: Mapping[str, str]) -> bytes:
    """``raw`` unchanged unless its ``model`` is a mapped local name; then the same JSON object
    with that name replaced (every other field and its order kept)."""
    name = body.get("model")
    if not isinstance(name, str) or name not in models:
        return raw
    return json.dumps({**body, "model": models[name]}, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class UpstreamClient:
    """One pooled async HTTP client for the upstream; close it with :meth:`close`."""

    def __init__(self, settings: UpstreamSettings) -> None:
        self.endpoint = settings.url.rstrip("/") + "/images/generations"
        self.timeout_s = settings.timeout_s
        headers = {"user-agent": f"nanoedge/{__version__} (overflow)"}
        if settings.key:
            headers["authorization"] = f"Bearer {settings.key}"
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(settings.timeout_s),
            limits=httpx.Limits(max_connections=settings.max_concurrent, max_keepalive_connections=settings.max_concurrent),
            follow_redirects=False,
        )

    async def send(self, body: bytes, *, stream: bool, request_id: str | None = None) -> UpstreamAnswer:
        """POST ``body``; the whole answer within ``timeout_s`` (a 200 stream: its headers,
        then each chunk within ``timeout_s`` of the last)."""
        headers = {"content-type": "application/json", "accept": "text/event-stream" if stream else "application/json"}
        if request_id:
            headers["x-client-request-id"] = request_id
        request = self._client.build_request("POST", self.endpoint, content=body, headers=headers)

        async def exchange() -> tuple[httpx.Response, bytes | None]:
            response = await self._client.send(request, stream=True)
            if stream and response.status_code == 200:
                return response, None  # relayed by _streamed, which closes it
            try:
                return response, await response.aread()
            finally:
                await response.aclose()

        try:
            response, content = await asyncio.wait_for(exchange(), self.timeout_s)
        except (asyncio.TimeoutError, httpx.TimeoutException):
            raise UpstreamFailure("timeout", f"no answer within {self.timeout_s:g} s") from None
        except httpx.TransportError as exc:
            raise UpstreamFailure("connection", _describe(exc)) from None
        if content is None:
            return self._streamed(response)
        return UpstreamAnswer(response.status_code, _relayed(response.headers), content, response.headers.get("x-request-id"))

    def _streamed(self, response: httpx.Response) -> UpstreamAnswer:
        async def chunks() -> AsyncGenerator[bytes, None]:
            try:
                async for chunk in response.aiter_raw():
                    yield chunk
            except httpx.TimeoutException:
                raise UpstreamFailure("timeout", f"the stream sent nothing for {self.timeout_s:g} s") from None
            except httpx.TransportError as exc:
                raise UpstreamFailure("connection", _describe(exc)) from None
            finally:
                await response.aclose()

        return UpstreamAnswer(response.status_code, _relayed(response.headers), b"", response.headers.get("x-request-id"), chunks())

    async def close(self) -> None:
        await self._client.aclose()


def _relayed(headers: httpx.Headers) -> dict[str, str]:
    return {name: headers[name] for name in RELAYED_HEADERS if name in headers}


def _describe(exc: httpx.TransportError) -> str:
    """The exception's class and text (httpx messages name the host, never request headers)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


__all__ = ["RELAYED_HEADERS", "UpstreamAnswer", "UpstreamClient", "UpstreamFailure", "map_model"]

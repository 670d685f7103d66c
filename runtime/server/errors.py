"""Errors the HTTP API returns, always in the OpenAI envelope.

Clients written for hosted image APIs (the openai SDKs, hand-rolled ``requests`` code) key
their handling on the status code and on ``{"error": {"message", "type", "param", "code"}}``
with all four keys present, so every failure the server produces goes through
:class:`APIError`, including the ones a framework would otherwise answer in its own shape
(malformed JSON, unknown routes, wrong methods). Messages say what to change; internals
(tracebacks, paths, exception names) never reach a client.
"""

from __future__ import annotations

import json
from typing import Any

from nanoedge.core.errors import InvalidRequestError

# Retry-After is capped: the Python SDK ignores values over 60 s and some Node SDK versions
# wait without a cap, so a larger value would either be dropped or hang a client.
MAX_RETRY_AFTER_S = 60


class APIError(Exception):
    """An HTTP error answer: status, envelope fields and extra headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        message, param = printable(message), printable(param) if param is not None else None
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def render(self) -> bytes:
        """The envelope as UTF-8 JSON. ASCII escapes, so no text (a client's lone surrogate
        echoed in a message) can make rendering the error fail in turn."""
        return json.dumps(self.body(), ensure_ascii=True, separators=(",", ":")).encode("ascii")


def printable(text: str) -> str:
    """``text`` with anything UTF-8 cannot encode (lone surrogates) shown as ``\\udXXX``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


#: Pipeline parameter names -> request field names, where they differ.
_API_PARAMS = {"guidance": "guidance_scale"}


def to_api_error(exc: InvalidRequestError, param: str | None = None) -> APIError:
    """A 400 for a pipeline-level InvalidRequestError: ``param`` comes from the exception
    (mapped to the request field's name), the hint is appended to the message."""
    message = exc.message + (f" ({exc.hint})" if exc.hint and exc.hint not in exc.message else "")
    name = param or _API_PARAMS.get(exc.param or "", exc.param)
    return invalid(message[:1].upper() + message[1:], name)


def retry_after_header(seconds: float) -> dict[str, str]:
    """``Retry-After`` in whole seconds, between 1 and :data:`MAX_RETRY_AFTER_S`."""
    value = max(1, min(MAX_RETRY_AFTER_S, int(seconds + 0.999)))
    return {"Retry-After": str(value)}


def invalid(message: str, param: str | None, code: str = "invalid_value") -> APIError:
    """400 for a field the caller can fix."""
    return APIError(400, message, param=param, code=code)


def model_not_found(model: str, available: list[str]) -> APIError:
    return APIError(
        404,
        f"The model '{model}' does not exist on this server. Available: {', '.join(available)}.",
        param="model",
        code="model_not_found",
    )


def queue_full(retry_after_s: float) -> APIError:
    return APIError(
        429,
        "The server is busy: its generation queue is full. Retry after the time in the Retry-After header.",
        type="rate_limit_error",
        code="queue_full",
        headers=retry_after_header(retry_after_s),
    )


def unavailable(message: str, code: str, retry_after_s: float) -> APIError:
    return APIError(503, message, type="service_unavailable", code=code, headers=retry_after_header(retry_after_s))


def internal_error(request_id: str) -> APIError:
    return APIError(
        500,
        f"The server had an error while processing your request (request id {request_id}); the server log has the details.",
        type="server_error",
        code="internal_error",
    )

"""The HTTP front: a Starlette app with the OpenAI image routes and the operations routes.

Routes: ``POST /v1/images/generations``, ``GET /v1/models``, ``GET /v1/models/{id}``,
``GET /v1/images/files/{name}`` (the images behind ``response_format=url``), ``GET /healthz``,
``GET /readyz``, ``GET /metrics``, ``GET /openapi.json`` (built from the validation rules) and
the browser playground on ``GET /`` and ``GET /playground`` (unless ``playground="off"``).
Starlette rather than FastAPI: request parsing is our own (errors must be 400s in the OpenAI
envelope, never a framework's 422), so FastAPI's pydantic layer would only be in the way.

The app starts answering at once: ``/healthz`` is 200 while the model loads in a background
thread and ``/readyz`` (and every API route) answers 503 with ``Retry-After`` until the model
is loaded and warmed; after SIGTERM (:meth:`ServerState.begin_drain`) new work gets 503 while
in-flight requests finish.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import logging
import re
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nanoedge.runtime.pipeline import Pipeline

from .errors import APIError, internal_error, unavailable
from .hosting import Executor
from .metrics import Metrics
from .openapi import build_openapi
from .playground import PAGE_PATHS, PLAYGROUND_MODES, playground
from .service import ClientGone, ImageService, PreparedRequest
from .settings import ServerSettings
from .streaming import SSE_HEADERS, ImageStream
from .validation import parse_image_request, parse_json_body

if TYPE_CHECKING:  # imported at run time only with --upstream: it needs httpx
    from .overflow import Overflow

log = logging.getLogger(__name__)

PipelineSource = Pipeline | Callable[[], Pipeline]
#: Builds the executor batches run on (``hosting.py``) once the pipeline is loaded; ``None``: this process.
HostFactory = Callable[[Pipeline, ServerSettings], Executor]


class ServerState:
    """Readiness and the loaded service; shared by every route."""

    def __init__(
        self, settings: ServerSettings, on_fatal: Callable[[BaseException], None] | None = None, host: HostFactory | None = None
    ) -> None:
        self.settings = settings
        self._host = host
        self.metrics = Metrics()
        self.status = "loading"  # loading -> ready -> draining; or failed
        self.service: ImageService | None = None
        self.error: str | None = None
        self._on_fatal = on_fatal
        #: Hybrid overflow (overflow.py), when settings.upstream is set; built by create_app.
        self.overflow: Overflow | None = None
        self.metrics.gauge("nanoedge_ready", lambda: float(self.status == "ready"))

    def load(self, source: PipelineSource) -> None:
        """Load (if given a loader), build the service, warm up, then turn ready."""
        try:
            started = time.perf_counter()
            pipeline = source() if callable(source) else source
            executor = self._host(pipeline, self.settings) if self._host is not None else None
            service = ImageService(pipeline, self.settings, self.metrics, executor)
            if self.settings.warmup:
                log.info("warming up %s", service.model_id)
                service.warm_up()
            service.start()
            self.service = service
            if self.status == "loading":
                self.status = "ready"
            log.info(
                "model %s ready in %.1f s (names: %s)", service.model_id, time.perf_counter() - started, ", ".join(service.model_names)
            )
        except BaseException as exc:  # reported on /readyz and to the CLI, which exits
            self.status = "failed"
            self.error = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            log.error("the model could not be loaded: %s", self.error)
            if self._on_fatal is not None:
                self._on_fatal(exc)

    def begin_drain(self) -> None:
        if self.status in ("loading", "ready"):
            log.info("draining: finishing in-flight requests, refusing new ones")
            self.status = "draining"

    def ready_service(self) -> ImageService:
        if self.status == "ready" and self.service is not None:
            self.service.executor.check_live()
            return self.service
        if self.status == "loading":
            raise unavailable("The model is still loading; retry in a moment.", "model_loading", self.settings.unavailable_retry_after_s)
        if self.status == "draining":
            raise unavailable(
                "The server is shutting down; retry in a moment (or on another instance).",
                "shutting_down",
                self.settings.unavailable_retry_after_s,
            )
        raise unavailable("The model failed to load; the server log says why.", "model_failed", 60)


def _state(request: Request) -> ServerState:
    return request.app.state.server


def _error_response(error: APIError, request_id: str | None = None) -> Response:
    headers = dict(error.headers)
    if request_id:
        headers["x-request-id"] = request_id
    return Response(error.render(), status_code=error.status, headers=headers, media_type="application/json")


# -- routes ------------------------------------------------------------------------------------
async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"The request body is larger than {limit} bytes.", code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"The request body is larger than {limit} bytes.", code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


async def _disconnected(receive: Receive) -> None:
    """Return when the client closes the connection (after the body has been read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def create_image(request: Request) -> Response:
    state = _state(request)
    service = state.ready_service()
    raw = await _read_body(request, state.settings.max_body_bytes)
    if state.overflow is not None:  # --upstream: the policy decides who answers (overflow.py)
        return await state.overflow.answer(request, raw, service, _generate_locally, lambda: _disconnected(request.receive))
    return await _generate_locally(request, service, raw)


async def _generate_locally(request: Request, service: ImageService, raw: bytes) -> Response:
    state = _state(request)
    parsed = parse_image_request(parse_json_body(raw), service.styles)
    prepared = service.prepare(parsed)
    if parsed.stream:
        return await _stream_images(request, service, prepared)
    try:
        batch = await service.generate(prepared, lambda: _disconnected(request.receive))
    except ClientGone:
        return Response(status_code=499)
    created = int(time.time())
    data = []
    for image in batch.images:
        if parsed.response_format == "b64_json":
            item = {"b64_json": base64.b64encode(image).decode("ascii")}
        else:
            name = await asyncio.to_thread(service.files.put, image, batch.fmt)
            item = {"url": _public_url(request, state.settings, f"/v1/images/files/{name}")}
        item["revised_prompt"] = prepared.revised_prompt
        data.append(item)
    headers = {"x-nanoedge-seed": str(batch.seed)}
    if batch.cache is not None:
        headers["X-Cache"] = batch.cache
    return JSONResponse({"created": created, "data": data, **service.encode_echo(prepared)}, headers=headers)


async def _stream_images(request: Request, service: ImageService, prepared: PreparedRequest) -> Response:
    """``stream: true``: errors up to here are JSON answers, later ones error events."""
    stream = ImageStream(service, prepared, request.scope.get("state", {}).get("request_id", ""))
    await stream.start()
    headers = {**SSE_HEADERS, "x-nanoedge-seed": str(stream.seed)}
    if stream.cache_state is not None:
        headers["X-Cache"] = stream.cache_state
    return StreamingResponse(stream.events(), media_type="text/event-stream", headers=headers)


def _public_url(request: Request, settings: ServerSettings, path: str) -> str:
    """``--public-url`` + path, else the address this connection was accepted on.

    Never the Host header: a client could make the server hand out links to a host of its
    choosing (to other clients too, through cached answers and logs)."""
    if settings.public_url:
        return settings.public_url.rstrip("/") + path
    host, port = request.scope.get("server") or (settings.host, settings.port)
    scheme = request.scope.get("scheme") or "http"
    host = f"[{host}]" if ":" in str(host) else str(host)
    default_port = {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{host}" + (f":{port}" if port and port != default_port else "") + path


def _model_object(service: ImageService, name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": service.model_created, "owned_by": "nanoedge"}


async def list_models(request: Request) -> Response:
    service = _state(request).ready_service()
    return JSONResponse({"object": "list", "data": [_model_object(service, name) for name in service.model_names]})


async def retrieve_model(request: Request) -> Response:
    service = _state(request).ready_service()
    name = request.path_params["model"]
    service.resolve_model(name)
    return JSONResponse(_model_object(service, name))


async def image_file(request: Request) -> Response:
    state = _state(request)
    service = state.service
    name = request.path_params["name"]
    path = service.files.path_of(name) if service is not None else None
    if service is None or path is None:
        raise APIError(
            404, "No such image file: it never existed or has expired (URLs stay valid for a limited time).", code="file_not_found"
        )
    max_age = int(service.files.expires_in(name))
    return FileResponse(path, media_type=service.files.media_type(name), headers={"Cache-Control": f"private, max-age={max_age}"})


async def healthz(request: Request) -> Response:
    service = _state(request).service
    return JSONResponse({"status": "ok", **(service.executor.health() if service is not None else {})})


async def readyz(request: Request) -> Response:
    state = _state(request)
    service = state.ready_service()
    return JSONResponse({"status": "ready", "model": service.model_id, "queue_depth": service.worker.depth()})


async def openapi_document(request: Request) -> Response:
    state = _state(request)
    service = state.service
    if service is None:
        raise unavailable(
            "The model is still loading; the document lists its names and styles once it is loaded.",
            "model_loading",
            state.settings.unavailable_retry_after_s,
        )
    rules = service.sizes.rules
    if rules.static is not None:
        note = f"This package makes {rules.static} images; sizes of the same aspect ratio are resized from it."
    else:
        note = f"This package: each side {rules.minimum}..{rules.maximum} px, a multiple of 8, aspect ratio up to 4:1."
    styles = sorted(set(service.styles.styles) | set(service.styles.aliases))
    return JSONResponse(build_openapi(service.model_names, styles, bool(state.settings.api_keys), note))


async def metrics(request: Request) -> Response:
    return PlainTextResponse(_state(request).metrics.render(), media_type="text/plain; version=0.0.4")


# -- cross-cutting -----------------------------------------------------------------------------
async def _api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return _error_response(exc)


async def _http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error = APIError(404, f"Invalid URL ({request.method} {request.url.path}): no such route on this server.", code="unknown_url")
    elif exc.status_code == 405:
        error = APIError(
            405,
            f"Method {request.method} is not allowed for {request.url.path}.",
            code="method_not_allowed",
            headers=dict(exc.headers or {}),
        )
    else:
        error = APIError(exc.status_code, str(exc.detail), code=None)
    return _error_response(error)


# Image URLs work without the key, like a hosted API's time-limited URLs: exactly one name.
_AUTH_FREE_PATH = re.compile(r"^/v1/images/files/[^/]+$")


class RequestContext:
    """Pure ASGI middleware: request id, API-key check, metrics and the last-resort 500.

    Pure ASGI (not BaseHTTPMiddleware) so the route can still read ``http.disconnect`` from
    ``receive`` while it waits for the worker.
    """

    def __init__(self, app: ASGIApp, state: ServerState, routes: list[BaseRoute]) -> None:
        self.app = app
        self.state = state
        self.routes = routes
        self.keys = [k.encode() for k in state.settings.api_keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = f"req_{secrets.token_hex(12)}"
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = {"code": 500, "sent": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["sent"] = message["status"], True
                message.setdefault("headers", [])
                extra = [(b"x-request-id", request_id.encode())]
                if self.state.status == "draining":  # keep-alive clients: reconnect, not reuse
                    extra.append((b"connection", b"close"))
                message["headers"] = [*message["headers"], *extra]
            await send(message)

        path = scope.get("path", "")
        try:
            error = self._check_auth(scope)
            if error is not None:
                await _error_response(error)(scope, receive, send_with_id)
                status["code"] = error.status
            else:
                await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error in %s %s (request id %s)", scope.get("method"), path, request_id)
            if not status["sent"]:
                await _error_response(internal_error(request_id))(scope, receive, send_with_id)
            status["code"] = 500
        finally:
            self.state.metrics.observe_request(
                scope.get("method", ""), _route_label(scope, self.routes), status["code"], time.perf_counter() - started
            )

    def _check_auth(self, scope: Scope) -> APIError | None:
        path = scope.get("path", "")
        if self.keys and path in PAGE_PATHS and self.state.settings.playground == "protected":
            return self._check_page_auth(scope)
        if not self.keys or not path.startswith("/v1/") or _AUTH_FREE_PATH.match(path):
            return None
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            return APIError(
                401,
                "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY' (the openai SDKs do this from api_key).",
                code="missing_api_key",
            )
        token = token.strip()
        if not any(hmac.compare_digest(token, key) for key in self.keys):
            return APIError(401, "Incorrect API key provided. Use one of the keys this server was started with.", code="invalid_api_key")
        return None


    def _check_page_auth(self, scope: Scope) -> APIError | None:
        """``--playground=protected``: the key as a bearer token, or as the password of HTTP
        Basic auth (what a browser can send for a page load: it asks with its own dialog)."""
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        token = token.strip()
        if scheme.lower() == b"basic":
            with contextlib.suppress(ValueError):
                token = base64.b64decode(token, validate=True).partition(b":")[2]
        if scheme.lower() in (b"bearer", b"basic") and token and any(hmac.compare_digest(token, key) for key in self.keys):
            return None
        return APIError(
            401,
            "This playground is protected: sign in with one of the server's API keys as the password (any user name).",
            code="missing_api_key" if not header else "invalid_api_key",
            headers={"WWW-Authenticate": 'Basic realm="nanoedge playground", charset="UTF-8"'},
        )


def _route_label(scope: Scope, routes: list[BaseRoute]) -> str:
    """The route template (``/v1/images/files/{name}``), so labels stay few."""
    for route in routes:
        match, _ = route.matches(scope)
        if match != Match.NONE:
            return getattr(route, "path", "unmatched")
    return "unmatched"


def create_app(
    source: PipelineSource,
    settings: ServerSettings | None = None,
    *,
    on_fatal: Callable[[BaseException], None] | None = None,
    host: HostFactory | None = None,
) -> Starlette:
    """Build the ASGI app. ``source`` is a loaded Pipeline or a function that loads one (it is
    then called in a background thread at startup, so the server answers 503 meanwhile).
    ``host`` builds the executor the batches run on (e.g. Ray replicas); default: this process."""
    settings = settings or ServerSettings()
    if settings.playground not in PLAYGROUND_MODES:
        raise ValueError(f"playground must be one of {', '.join(PLAYGROUND_MODES)}, got {settings.playground!r}")
    state = ServerState(settings, on_fatal, host)
    if settings.upstream is not None:
        from .overflow import Overflow

        state.overflow = Overflow(settings.upstream, state.metrics, settings.unavailable_retry_after_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        loader = threading.Thread(target=state.load, args=(source,), name="nanoedge-loader", daemon=True)
        loader.start()
        try:
            yield
        finally:
            state.begin_drain()
            if state.service is not None:
                await asyncio.to_thread(state.service.stop, settings.drain_timeout_s)
            if state.overflow is not None:
                await state.overflow.close()
            log.info("stopped")

    routes = [
        Route("/v1/images/generations", create_image, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
        Route("/v1/images/files/{name}", image_file, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi_document, methods=["GET"]),
    ]
    if settings.playground != "off":
        routes += [Route(path, playground, methods=["GET"]) for path in PAGE_PATHS]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={APIError: _api_error_handler, HTTPException: _http_error_handler},
    )
    app.state.server = state
    app.add_middleware(RequestContext, state=state, routes=routes)
    return app


__all__ = ["ServerState", "create_app"]

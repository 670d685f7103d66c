"""Helpers for the server tests: a real uvicorn server on 127.0.0.1 in a background thread.

In-process (not a subprocess) so tests can hand the app a gated or slow pipeline and read its
state; the CLI's own process is tested separately in test_server_cli.py.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx

from nanoedge.runtime.pipeline import Pipeline


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunningServer:
    def __init__(self, app, thread: threading.Thread, server, port: int) -> None:
        self.app = app
        self.thread = thread
        self.server = server
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.api_url = f"{self.base_url}/v1"

    @property
    def state(self):
        return self.app.state.server

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"server did not become ready: {self.state.status} {self.state.error}")

    def metric(self, name: str) -> float:
        """Sum of every sample of ``name`` (any labels) on /metrics."""
        text = httpx.get(f"{self.base_url}/metrics").text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total


@contextlib.contextmanager
def _uvicorn_on(app, port: int, graceful_s: float) -> Iterator[Any]:
    """Run ``app`` under uvicorn on 127.0.0.1:``port`` in a daemon thread until the block ends."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=graceful_s))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield server, thread
    finally:
        server.should_exit = True
        thread.join(15)


@contextlib.contextmanager
def serve(
    source: "Pipeline | Callable[[], Pipeline]", settings=None, *, wait: bool = True, host=None, **overrides: Any
) -> Iterator[RunningServer]:
    """Run create_app(source, settings, host=host) under uvicorn on a free 127.0.0.1 port."""
    from nanoedge.runtime.server import ServerSettings, create_app

    port = free_port()
    settings = settings or ServerSettings(port=port, **overrides)
    app = create_app(source, settings, host=host)
    with _uvicorn_on(app, port, graceful_s=5) as (server, thread):
        running = RunningServer(app, thread, server, port)
        if wait:
            running.wait_ready()
        yield running


@contextlib.contextmanager
def serve_asgi(app) -> Iterator[str]:
    """Run any ASGI app (a test's fake upstream) under uvicorn on a free port; yields its base URL."""
    port = free_port()
    with _uvicorn_on(app, port, graceful_s=1):
        yield f"http://127.0.0.1:{port}"


class GatedPipeline:
    """A real pipeline whose generate_batch waits for ``gate`` (to hold the worker busy) and
    records every batch it runs, so tests can see batching and dropped work."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.batches: list[list[str]] = []
        self.waiting = 0  # requests in the batch now held at the gate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipeline, name)

    def generate_batch(self, requests, **kwargs):
        self.started.set()
        self.waiting = len(requests)
        try:
            if not self.gate.wait(30):
                raise TimeoutError("test gate never opened")
        finally:
            self.waiting = 0
        self.batches.append([r.prompt for r in requests])
        return self._pipeline.generate_batch(requests, **kwargs)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {message}")
        time.sleep(0.01)


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SPEC_PATH = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "openai" / "spec_images.yaml"

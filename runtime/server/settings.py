"""Everything `nanoedge serve` can be told, in one frozen record.

The app factory, the worker, the cache and the file store all read their knobs from here, so
tests build a server with exactly the settings they need and the CLI is a thin mapping from
flags to fields.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

#: The reasons a request may be sent to the upstream (``--overflow-on``); see overflow.py.
OVERFLOW_REASONS = ("queue-full", "unserved-size", "unserved-model", "local-error")
DEFAULT_OVERFLOW_ON = ("queue-full", "unserved-size", "unserved-model")


@dataclass(frozen=True)
class UpstreamSettings:
    """Hybrid overflow to an OpenAI-compatible image API (``--upstream``; overflow.py)."""

    #: Base URL as an SDK's ``base_url`` takes it, e.g. ``https://api.example.com/v1``.
    url: str
    #: The bearer key sent upstream (read from the environment by the CLI). Never in a repr.
    key: str | None = field(default=None, repr=False)
    #: Local model name -> the name sent upstream (the only change made to a forwarded body).
    models: tuple[tuple[str, str], ...] = ()
    overflow_on: tuple[str, ...] = DEFAULT_OVERFLOW_ON
    #: Seconds one upstream request may take in all (a stream: between two chunks).
    timeout_s: float = 120.0
    #: Requests in flight upstream at once; past it a request is answered locally.
    max_concurrent: int = 16
    #: Consecutive upstream failures that open the circuit breaker, and its cooldown.
    breaker_failures: int = 5
    breaker_cooldown_s: float = 30.0


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    #: Extra names clients may use in ``model`` (e.g. a hosted model name such as nano-banana-2).
    aliases: tuple[str, ...] = ()
    #: Accepted bearer keys; empty means no authentication.
    api_keys: tuple[str, ...] = ()
    #: Requests waiting for the worker (not counting the batch being generated) before 429.
    max_queue: int = 32
    #: Images generated together in one UNet call (requests are batched up to this).
    max_batch: int = 4
    #: Seconds from arrival until a request is answered 504 (and its queued work dropped).
    request_timeout_s: float = 600.0
    #: Seeded-request result cache; ``None`` or ``cache_max_mb == 0`` disables it.
    cache_dir: Path | None = None
    cache_max_mb: float = 512.0
    #: Where response_format=url images live and for how long they can be fetched.
    files_dir: Path | None = None
    files_ttl_s: float = 3600.0
    files_max_mb: float = 1024.0
    #: Largest image area generated directly; bigger requested sizes are generated at the
    #: package's native area (same aspect ratio) and resized. ``None``: the native area.
    max_pixels: int | None = None
    #: Absolute URL prefix for image URLs (behind a proxy); ``None``: from the request.
    public_url: str | None = None
    #: Largest accepted request body.
    max_body_bytes: int = 1 << 20
    #: After SIGTERM/SIGINT: seconds the server keeps listening, answering /readyz and new
    #: generation requests 503 + Retry-After, so a load balancer sees the drain (lifecycle.py).
    drain_grace_s: float = 5.0
    #: Longest wait for accepted work after the signal, before connections are closed anyway.
    drain_timeout_s: float = 600.0
    #: Run one tiny generation before turning ready, so the first client is not the warm-up.
    warmup: bool = True
    #: Retry-After (seconds) of the 503s answered while the model loads or the server drains.
    unavailable_retry_after_s: float = 2.0
    #: The browser page on ``/`` and ``/playground``: ``open`` (served without a key; its API
    #: calls still need one), ``protected`` (served only with a key) or ``off``.
    playground: str = "open"
    #: Where requests overflow to (``None``: no upstream, every request is answered here).
    upstream: UpstreamSettings | None = None

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False

"""The ``--upstream`` options of ``nanoedge serve``: hybrid overflow to an OpenAI-compatible API.

Kept apart from serve_cmd.py so the serve command gains one decorator and one keyword
(``upstream``: the checked :class:`UpstreamSettings`, or None) instead of eight flags. The key
is read from the environment variable ``--upstream-key-env`` names, never from the command
line (where ``ps`` and shell history would show it), and is never echoed or logged.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from typing import Any, Callable

import click

log = logging.getLogger("nanoedge.serve")

_URL = re.compile(r"^https?://[^/\s?#]+(/[^\s?#]*)?$")
# Spelled out rather than imported: importing nanoedge.runtime.server would load Starlette for
# every nanoedge command. upstream_settings checks them against settings.OVERFLOW_REASONS, and
# a test that DEFAULT_OVERFLOW_ON equals the runtime's.
DEFAULT_OVERFLOW_ON = "queue-full,unserved-size,unserved-model"
ALL_REASONS = "queue-full, unserved-size, unserved-model, local-error"


def upstream_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the overflow flags to ``command``; it receives them as ``upstream=UpstreamSettings | None``."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        names = ("upstream_url", "upstream_key_env", "upstream_models", "overflow_on", "upstream_timeout",
                 "upstream_max_concurrent", "breaker_failures", "breaker_cooldown")
        kwargs["upstream"] = upstream_settings(**{name: kwargs.pop(name) for name in names})
        return command(*args, **kwargs)

    options = [
        click.option("--upstream", "upstream_url", default=None, metavar="URL",
                     help="OpenAI-compatible image API to overflow to, as an SDK's base_url (https://api.example.com/v1); "
                          "see docs/serving.md, Hybrid overflow."),
        click.option("--upstream-key-env", default=None, metavar="NAME",
                     help="Environment variable holding the upstream's API key (never given on the command line)."),
        click.option("--upstream-model", "upstream_models", multiple=True, metavar="LOCAL=REMOTE",
                     help="Send model LOCAL upstream as REMOTE (repeatable); the only change made to a forwarded body."),
        click.option("--overflow-on", default=DEFAULT_OVERFLOW_ON, show_default=True,
                     help=f"When to overflow, comma-separated: {ALL_REASONS} (local-error is opt-in)."),
        click.option("--upstream-timeout", type=click.FloatRange(min=0.1), default=120.0, show_default=True,
                     help="Seconds an upstream request may take (a stream: between two chunks)."),
        click.option("--upstream-max-concurrent", type=click.IntRange(1), default=16, show_default=True,
                     help="Requests in flight upstream at once; past it requests are answered locally."),
        click.option("--breaker-failures", type=click.IntRange(1), default=5, show_default=True,
                     help="Consecutive upstream failures that open the circuit breaker."),
        click.option("--breaker-cooldown", type=click.FloatRange(min=0), default=30.0, show_default=True,
                     help="Seconds the open breaker sends nothing upstream before one trial request."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def upstream_settings(
    upstream_url: str | None,
    upstream_key_env: str | None,
    upstream_models: tuple[str, ...],
    overflow_on: str,
    upstream_timeout: float,
    upstream_max_concurrent: int,
    breaker_failures: int,
    breaker_cooldown: float,
):
    """Check the flags and build the settings (None without ``--upstream``)."""
    from nanoedge.core.errors import InvalidRequestError, require
    from nanoedge.runtime.server.settings import OVERFLOW_REASONS, UpstreamSettings, is_loopback

    if upstream_url is None:
        if upstream_key_env or upstream_models:
            raise InvalidRequestError("--upstream-key-env and --upstream-model need --upstream", hint="add --upstream URL")
        return None
    require("httpx", "serve")
    if not _URL.match(upstream_url):
        raise InvalidRequestError(f"--upstream {upstream_url!r} is not an absolute http(s) URL",
                                  hint="give the API's base URL, e.g. https://api.example.com/v1")
    key = None
    if upstream_key_env:
        key = os.environ.get(upstream_key_env, "").strip()
        if not key:
            raise InvalidRequestError(f"--upstream-key-env names {upstream_key_env}, which is not set or empty",
                                      hint=f"export {upstream_key_env}=... before starting the server")
        if any(c.isspace() for c in key):
            raise InvalidRequestError(f"the upstream key in {upstream_key_env} contains whitespace", hint="remove spaces from the key")
        host = re.sub(r"^https?://(\[[^\]]*\]|[^/:]*).*$", r"\1", upstream_url)
        if upstream_url.startswith("http://") and not is_loopback(host):
            log.warning("the upstream key is sent over plain http to %s: anyone on the path can read it; prefer https", host)
    models = []
    for item in upstream_models:
        local, sep, remote = item.partition("=")
        if not sep or not local.strip() or not remote.strip():
            raise InvalidRequestError(
                f"--upstream-model {item!r} is not LOCAL=REMOTE", hint="e.g. --upstream-model nano-banana-2=gpt-image-1"
            )
        models.append((local.strip(), remote.strip()))
    reasons = tuple(dict.fromkeys(r.strip() for r in overflow_on.split(",") if r.strip()))
    unknown = [r for r in reasons if r not in OVERFLOW_REASONS]
    if unknown or not reasons:
        raise InvalidRequestError(f"--overflow-on {overflow_on!r}: unknown reason(s) {', '.join(unknown) or '(none given)'}",
                                  hint=f"use a comma-separated list of {', '.join(OVERFLOW_REASONS)}")
    return UpstreamSettings(
        url=upstream_url,
        key=key,
        models=tuple(models),
        overflow_on=reasons,
        timeout_s=upstream_timeout,
        max_concurrent=upstream_max_concurrent,
        breaker_failures=breaker_failures,
        breaker_cooldown_s=breaker_cooldown,
    )


__all__ = ["upstream_options", "upstream_settings"]

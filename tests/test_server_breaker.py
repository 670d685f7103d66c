"""Overflow parts one by one: the circuit breaker (a stepped clock, no sleeping), the body's model
mapping, the ``--upstream`` flags, and the listening socket's TCP_NODELAY."""

from __future__ import annotations

import asyncio
import json
import socket

import click
import pytest
from click.testing import CliRunner

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from nanoedge.runtime.server.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker  # noqa: E402


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_n_consecutive_failures_only():
    breaker = CircuitBreaker(3, 10.0, Clock())
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
    breaker.success()  # a success in between starts the count again
    for _ in range(2):
        breaker.failure()
    assert breaker.state == CLOSED and breaker.allow()
    breaker.failure()
    assert breaker.state == OPEN and not breaker.allow()
    assert breaker.opened_total == 1


def test_breaker_half_opens_after_the_cooldown_with_one_trial():
    clock = Clock()
    breaker = CircuitBreaker(1, 10.0, clock)
    breaker.failure()
    assert breaker.retry_after_s() == 10.0
    clock.now += 4
    assert not breaker.allow() and breaker.retry_after_s() == 6.0
    clock.now += 6
    assert breaker.state == HALF_OPEN and breaker.retry_after_s() == 0.0
    assert breaker.allow()  # the trial
    assert not breaker.allow()  # only one at a time
    breaker.success()
    assert breaker.state == CLOSED and breaker.allow() and breaker.allow()


def test_a_failed_trial_opens_it_again_and_a_released_one_lets_another_go():
    clock = Clock()
    breaker = CircuitBreaker(5, 2.0, clock)
    for _ in range(5):
        breaker.failure()
    clock.now += 2
    assert breaker.allow()
    breaker.failure()  # one failure is enough in half-open state
    assert breaker.state == OPEN and breaker.opened_total == 2 and breaker.retry_after_s() == 2.0
    clock.now += 2
    assert breaker.allow() and not breaker.allow()
    breaker.release()  # the trial ended without a verdict (client left, a 429)
    assert breaker.state == HALF_OPEN and breaker.allow()


def test_breaker_rejects_nonsense():
    with pytest.raises(ValueError):
        CircuitBreaker(0, 1.0)
    with pytest.raises(ValueError):
        CircuitBreaker(1, -1.0)


def test_map_model_changes_only_a_mapped_name():
    from nanoedge.runtime.server.upstream import map_model

    raw = b'{"prompt": "caf\\u00e9", "model": "local", "n": 2}'
    body = json.loads(raw)
    assert map_model(raw, body, {}) is raw
    assert map_model(raw, body, {"other": "x"}) is raw
    mapped = map_model(raw, body, {"local": "remote"})
    assert json.loads(mapped) == {**body, "model": "remote"} and list(json.loads(mapped)) == ["prompt", "model", "n"]
    without = b'{"prompt": "x"}'
    assert map_model(without, json.loads(without), {"local": "remote"}) is without


def _settings(**flags):
    from nanoedge.cli.serve_upstream import upstream_settings

    defaults = dict(upstream_url="https://api.example.com/v1", upstream_key_env=None, upstream_models=(),
                    overflow_on="queue-full,unserved-size,unserved-model", upstream_timeout=120.0, upstream_max_concurrent=16,
                    breaker_failures=5, breaker_cooldown=30.0)
    return upstream_settings(**{**defaults, **flags})


def test_upstream_flags(monkeypatch):
    from nanoedge.cli.serve_upstream import DEFAULT_OVERFLOW_ON
    from nanoedge.core.errors import InvalidRequestError
    from nanoedge.runtime.server import settings

    assert tuple(DEFAULT_OVERFLOW_ON.split(",")) == settings.DEFAULT_OVERFLOW_ON
    assert _settings(upstream_url=None) is None
    monkeypatch.setenv("UP_KEY", "sk-secret-value")
    made = _settings(upstream_key_env="UP_KEY", upstream_models=("a=b", " c = d "), overflow_on="queue-full, local-error")
    assert made.key == "sk-secret-value" and "sk-secret-value" not in repr(made)
    assert made.models == (("a", "b"), ("c", "d")) and made.overflow_on == ("queue-full", "local-error")
    for flags, words in [
        ({"upstream_key_env": "UNSET_VARIABLE_X"}, "UNSET_VARIABLE_X"),
        ({"upstream_url": "api.example.com"}, "absolute"),
        ({"upstream_models": ("no-equals",)}, "LOCAL=REMOTE"),
        ({"overflow_on": "queue-full,always"}, "always"),
        ({"upstream_url": None, "upstream_key_env": "UP_KEY"}, "need --upstream"),
    ]:
        with pytest.raises(InvalidRequestError, match=words):
            _settings(**flags)


def test_serve_refuses_an_unset_key_variable_without_showing_keys(tiny_package, monkeypatch):
    from nanoedge.cli.main import cli

    monkeypatch.delenv("NOT_SET_UPSTREAM_KEY", raising=False)
    result = CliRunner().invoke(cli, ["serve", "-m", str(tiny_package), "--upstream", "http://127.0.0.1:9/v1",
                                      "--upstream-key-env", "NOT_SET_UPSTREAM_KEY"])
    assert result.exit_code != 0 and "NOT_SET_UPSTREAM_KEY" in result.output and "export" in result.output
    assert isinstance(cli, click.Group)


def test_the_listening_socket_gets_tcp_nodelay_on_accepted_connections():
    """asyncio sets TCP_NODELAY on an accepted connection only when the listening socket says it
    is TCP (proto IPPROTO_TCP); without it every answer's tail waits ~40 ms for a delayed ACK."""
    from nanoedge.cli.serve_cmd import bind_socket

    sock = bind_socket("127.0.0.1", 0)
    assert sock.proto == socket.IPPROTO_TCP
    seen: list[int] = []

    async def main() -> None:
        def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(accepted, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.01)
            writer.close()

    asyncio.run(main())
    assert seen and seen[0] != 0

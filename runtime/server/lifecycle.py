"""Shutting down so that load balancers and clients can see it (SIGTERM / SIGINT).

uvicorn's own handling closes the listening socket at the first signal: new connections and a
client's next request on a keep-alive connection get "connection refused", ``/readyz`` is
unreachable instead of saying not-ready, and the process then re-raises the signal (exit 143).
A balancer cannot tell that from a crash. So the first signal only starts a drain:

1. the app turns ``draining``: ``/readyz`` answers 503 and new generation requests get 503 with
   ``Retry-After`` (clients retry elsewhere or later), every response carries
   ``Connection: close`` so keep-alive clients reconnect instead of reusing a closing server;
2. this lasts ``drain_grace_s`` seconds (time for a balancer's health check to notice) and then
   until the accepted work is done (queue empty, worker idle; at most ``drain_timeout_s``);
3. only then uvicorn closes the listener, lets open responses finish, closes idle connections
   and the process exits 0.

A second signal skips the rest of the wait (a second Ctrl-C also stops waiting for open
connections), as uvicorn users expect.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

import uvicorn

from .app import ServerState

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose first SIGTERM/SIGINT starts a visible drain and whose exit is 0."""

    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self.state = state
        self._signalled = threading.Event()
        self._cut_short = threading.Event()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not recorded in uvicorn's _captured_signals: re-raising it after shutdown would turn a
        # clean drain into exit 143.
        if self._signalled.is_set():
            log.info("second %s: stopping the drain now", signal.Signals(sig).name)
            self._cut_short.set()
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True
            return
        self._signalled.set()
        self.state.begin_drain()
        threading.Thread(target=self._drain, name="nanoedge-drain", daemon=True).start()

    def _drain(self) -> None:
        settings = self.state.settings
        log.info(
            "draining: /readyz and new requests answer 503 for %g s and until accepted work is done (at most %g s); "
            "send the signal again to stop now",
            settings.drain_grace_s,
            settings.drain_timeout_s,
        )
        started = time.monotonic()
        self._cut_short.wait(settings.drain_grace_s)
        while not self._cut_short.is_set() and not self._idle() and time.monotonic() - started < settings.drain_timeout_s:
            self._cut_short.wait(0.1)
        log.info("drained in %.1f s; closing connections", time.monotonic() - started)
        self.should_exit = True

    def _idle(self) -> bool:
        service = self.state.service
        return service is None or (service.worker.depth() == 0 and not service.worker.busy())


__all__ = ["DrainingServer"]

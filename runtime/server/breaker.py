"""A circuit breaker for the upstream of hybrid overflow.

When the upstream fails (5xx, timeouts, refused connections, a rejected key), sending it
every overflowing request only adds load to a service that is already down and makes each
client wait for a timeout. So after ``failures`` consecutive failures the breaker *opens*:
for ``cooldown_s`` seconds no request is sent and callers answer at once (with the remaining
cooldown as ``Retry-After``). Then it is *half-open*: exactly one trial request goes through;
its success closes the breaker, its failure opens it for another cooldown.

Thread-safe (one lock), with an injectable clock so tests step time instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"
#: Gauge values of ``nanoedge_upstream_breaker_state``.
STATE_VALUES = {CLOSED: 0.0, HALF_OPEN: 1.0, OPEN: 2.0}


class CircuitBreaker:
    def __init__(self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if failures < 1 or cooldown_s < 0:
            raise ValueError("the breaker needs failures >= 1 and cooldown_s >= 0")
        self.failures = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._trial_out = False
        #: Times the breaker went from closed or half-open to open.
        self.opened_total = 0

    @property
    def state(self) -> str:
        with self._lock:
            return self._current()

    def _current(self) -> str:
        if self._state == OPEN and self._clock() - self._opened_at >= self.cooldown_s:
            self._state, self._trial_out = HALF_OPEN, False
        return self._state

    def allow(self) -> bool:
        """May a request go upstream now? In half-open state only one (the trial) may; the
        caller must then report its outcome with :meth:`success` or :meth:`failure` (or
        :meth:`release` when it ended without telling anything about the upstream)."""
        with self._lock:
            state = self._current()
            if state == CLOSED:
                return True
            if state == HALF_OPEN and not self._trial_out:
                self._trial_out = True
                return True
            return False

    def success(self) -> None:
        with self._lock:
            self._state, self._consecutive, self._trial_out = CLOSED, 0, False

    def failure(self) -> None:
        with self._lock:
            state = self._current()
            self._consecutive += 1
            if state == HALF_OPEN or (state == CLOSED and self._consecutive >= self.failures):
                self._state, self._opened_at, self._trial_out = OPEN, self._clock(), False
                self.opened_total += 1

    def release(self) -> None:
        """The request ended without a verdict (the client left, a 429): let another trial go."""
        with self._lock:
            self._trial_out = False

    def retry_after_s(self) -> float:
        """Seconds until the breaker lets a trial through (0 when it would now)."""
        with self._lock:
            if self._current() != OPEN:
                return 0.0
            return max(0.0, self.cooldown_s - (self._clock() - self._opened_at))


__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "STATE_VALUES", "CircuitBreaker"]

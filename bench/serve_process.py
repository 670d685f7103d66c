"""One `nanoedge serve --port 0` process for the serving benchmarks, started and stopped whole.

The load, overflow and hosting benchmarks all measure real server processes over loopback (what
a client sees), so they share how one is started: the free port is read from the server's first
line, readiness is ``GET /readyz`` answering 200, and stopping is SIGTERM (the server drains;
a Ray setup stops its local cluster too), then a kill if it does not exit in time.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

READY_LINE = re.compile(r"http://127\.0\.0\.1:(\d+)/v1")


class ServeProcess:
    """A running ``python -m nanoedge serve --port 0 ARGS``; its output goes to a temporary log."""

    def __init__(self, name: str, args: list[str], ready_timeout: float = 180, stop_timeout: float = 90) -> None:
        self.stop_timeout = stop_timeout
        self.log = tempfile.NamedTemporaryFile("w+", prefix=f"serve-{name}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([sys.executable, "-m", "nanoedge", "serve", "--port", "0", *args],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        try:
            self.base_url = f"http://127.0.0.1:{self._port()}"
            self.api_url = self.base_url + "/v1"
            self._wait_ready(ready_timeout)
        except BaseException:
            self.stop()
            raise

    def log_text(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def _port(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = READY_LINE.search(self.log_text())
            if match:
                return int(match.group(1))
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"nanoedge serve did not start:\n{self.log_text()}")

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"nanoedge serve did not become ready within {timeout:.0f} s:\n{self.log_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        if os.path.exists(self.log.name):
            os.unlink(self.log.name)

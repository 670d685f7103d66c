"""`nanoedge serve` as users run it: its own process, curl as the client, SIGTERM to stop."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from server_support import PNG_MAGIC, free_port, wait_until

pytest.importorskip("uvicorn")


class ServeProcess:
    def __init__(self, args: list[str], tmp: Path, env: dict | None = None) -> None:
        self.log_path = tmp / f"serve-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "nanoedge", "serve", "--port", "0", *args],
                                     stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        wait_until(lambda: self.port is not None or self.proc.poll() is not None, 60, "the listening line")
        if self.port is None:
            raise RuntimeError(f"serve exited early:\n{self.log}")
        self.base_url = f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    @property
    def port(self) -> int | None:
        match = re.search(r"http://127\.0\.0\.1:(\d+)/v1", self.log)
        return int(match.group(1)) if match else None

    def wait_ready(self) -> None:
        def ready() -> bool:
            try:
                return httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, 60, "readyz")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def keyed_server(tiny_package, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    key_file = tmp / "keys.txt"
    key_file.write_text("# one key per line\nfile-key\n")
    server = ServeProcess(
        [
            "-m",
            str(tiny_package),
            "--alias",
            "nano-banana-2",
            "--api-key",
            "flag-key",
            "--api-key-file",
            str(key_file),
            "--cache-dir",
            str(tmp / "cache"),
            "--max-pixels",
            "65536",
        ],
        tmp,
        env={"NANOEDGE_API_KEYS": "env-key-1,env-key-2"},
    )
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "60", *args], capture_output=True, timeout=90)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_seed_client_curl_call(keyed_server, tmp_path):
    body = {
        "model": "nano-banana-2",
        "prompt": "A cute cartoon cat wearing sunglasses",
        "size": "1024x1024",
        "n": 1,
        "response_format": "url",
    }
    result = _curl("-X", "POST", f"{keyed_server.base_url}/v1/images/generations", "-H", "Content-Type: application/json",
                   "-H", "Authorization: Bearer file-key", "-d", json.dumps(body))
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert isinstance(answer["created"], int)
    url = answer["data"][0]["url"]
    assert url.endswith(".png") and answer["data"][0]["revised_prompt"] == body["prompt"]
    image = tmp_path / "cat.png"
    fetched = _curl("-o", str(image), "-w", "%{http_code}", url)
    assert fetched.stdout == b"200" and image.read_bytes().startswith(PNG_MAGIC)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_errors(keyed_server):
    url = f"{keyed_server.base_url}/v1/images/generations"
    for key in ("flag-key", "env-key-2"):
        ok = _curl("-X", "POST", url, "-H", f"Authorization: Bearer {key}", "-H", "Content-Type: application/json",
                   "-d", '{"prompt": "k", "response_format": "b64_json"}', "-w", "\n%{http_code}")
        assert ok.stdout.endswith(b"\n200"), ok.stdout[-300:]
    wrong = _curl("-X", "POST", url, "-H", "Authorization: Bearer nope", "-d", '{"prompt": "x"}', "-w", "\n%{http_code}")
    body, status = wrong.stdout.rsplit(b"\n", 1)
    assert status == b"401" and json.loads(body)["error"]["code"] == "invalid_api_key"
    bad = _curl(
        "-X", "POST", url, "-H", "Authorization: Bearer flag-key", "-d", '{"prompt": "x", "n": 99}', "-w", "\n%{http_code}", "-D", "-"
    )
    assert b"x-request-id: req_" in bad.stdout.lower().replace(b"X-Request-Id", b"x-request-id")
    assert bad.stdout.endswith(b"\n400")


def test_sigterm_drain_is_visible_then_exits_0(tiny_package, tmp_path):
    grace = 3.0
    server = ServeProcess(["-m", str(tiny_package), "--max-pixels", "65536", "--cache-max-mb", "0", "--drain-grace", str(grace)], tmp_path)
    try:
        server.wait_ready()
        keep_alive = httpx.Client(base_url=server.base_url, timeout=60)  # one pooled connection
        assert keep_alive.get("/readyz").status_code == 200
        outcome: dict = {}

        def slow_request() -> None:
            # 128x128 generated directly with 60 steps: a second or more on the tiny model
            body = {"prompt": "slow", "size": "128x128", "steps": 60, "response_format": "b64_json"}
            outcome["response"] = httpx.post(f"{server.base_url}/v1/images/generations", json=body, timeout=60)

        thread = threading.Thread(target=slow_request)
        thread.start()
        wait_until(lambda: "nanoedge_worker_busy 1" in httpx.get(f"{server.base_url}/metrics").text, 30, "worker busy")
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)

        # the keep-alive connection still gets answers: not ready, and asked to close
        wait_until(lambda: keep_alive.get("/readyz").status_code == 503, 10, "readyz 503")
        ready = keep_alive.get("/readyz")
        assert ready.json()["error"]["code"] == "shutting_down" and 1 <= int(ready.headers["retry-after"]) <= 60
        assert ready.headers["connection"] == "close"
        late = httpx.post(f"{server.base_url}/v1/images/generations", json={"prompt": "late"}, timeout=10)  # a new connection
        assert late.status_code == 503 and late.json()["error"]["code"] == "shutting_down" and late.headers["retry-after"]

        thread.join(60)
        assert outcome["response"].status_code == 200  # accepted work finished
        assert outcome["response"].json()["data"][0]["b64_json"]
        if time.monotonic() - signalled < grace - 0.5:  # still within the grace period: still answering
            assert httpx.get(f"{server.base_url}/readyz", timeout=5).status_code == 503
        server.proc.wait(30)
        assert server.proc.returncode == 0
        assert time.monotonic() - signalled >= grace
        assert "draining" in server.log
        keep_alive.close()
    finally:
        server.stop()


def test_sigint_drains_and_exits_0(tiny_package, tmp_path):
    server = ServeProcess(["-m", str(tiny_package), "--cache-max-mb", "0", "--drain-grace", "1"], tmp_path)
    try:
        server.wait_ready()
        server.proc.send_signal(signal.SIGINT)
        wait_until(lambda: httpx.get(f"{server.base_url}/readyz", timeout=5).status_code == 503, 10, "readyz 503")
        server.proc.wait(30)
        assert server.proc.returncode == 0
    finally:
        server.stop()


def test_public_url_must_be_absolute(tiny_package):
    result = subprocess.run([sys.executable, "-m", "nanoedge", "serve", "-m", str(tiny_package), "--public-url", "box.local/x"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--public-url" in result.stderr


def test_refuses_remote_bind_without_a_key(tiny_package):
    result = subprocess.run([sys.executable, "-m", "nanoedge", "serve", "-m", str(tiny_package), "--host", "0.0.0.0"],
                            capture_output=True, text=True, timeout=60, env={**os.environ, "NANOEDGE_API_KEYS": ""})
    assert result.returncode == 2
    assert "without an API key" in result.stderr and "--allow-unauthenticated-remote" in result.stderr


def test_port_in_use_and_bad_package(tiny_package, tmp_path):
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen(1)
        busy = subprocess.run([sys.executable, "-m", "nanoedge", "serve", "-m", str(tiny_package), "--port", str(port)],
                              capture_output=True, text=True, timeout=60)
    assert busy.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in busy.stderr and "--port" in busy.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "nanoedge", "serve", "-m", str(tmp_path / "nope")], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 3 and "does not exist" in missing.stderr


def test_playground_flags(tiny_package, tmp_path):
    args = ["-m", str(tiny_package), "--api-key", "page-key", "--playground", "protected", "--cache-max-mb", "0"]
    protected = ServeProcess(args, tmp_path)
    try:
        protected.wait_ready()
        assert f"playground: {protected.base_url}/ (needs a key)" in protected.log
        refused = httpx.get(protected.base_url + "/")
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic ")
        assert httpx.get(protected.base_url + "/", auth=("anyone", "page-key")).status_code == 200
    finally:
        protected.stop()
    off = ServeProcess(["-m", str(tiny_package), "--no-playground", "--cache-max-mb", "0"], tmp_path)
    try:
        off.wait_ready()
        assert "playground:" not in off.log
        assert httpx.get(off.base_url + "/").status_code == 404
        assert httpx.get(off.base_url + "/playground").status_code == 404
    finally:
        off.stop()

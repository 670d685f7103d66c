"""``--engine ray``: the same server with its batches run by Ray Serve replicas (issue 20).

One local Ray cluster (loopback only, no dashboard) is started for the whole module: starting
one takes ~10 s and stopping it up to 30 s on this machine. The replicas are 2 copies of the
tiny package; the ingress is the server's own app, so clients see the same API.
"""

from __future__ import annotations

import base64
import concurrent.futures
import os
import re
import signal
import subprocess
import sys

import httpx
import openai
import pytest
from server_support import PNG_MAGIC, serve, wait_until

from nanoedge.runtime.pipeline import Pipeline
from nanoedge.runtime.server.ray_host import RayExecutor, RayOptions, connect, disconnect


@pytest.fixture(scope="module")
def ray_cluster():
    started = connect(None, 2)
    assert started == "local"
    try:
        yield
    finally:
        disconnect(stop_serve=True)


def _ray_host(package, replicas=2):
    # Half a CPU each, so the module's 2-replica server and a 1-replica one fit the 2 cores together.
    options = RayOptions(package=str(package), replicas=replicas, replica_cpus=0.5, threads=1)
    return lambda pipeline, settings: RayExecutor(options, settings)


def _serve_ray(package, replicas=2, **settings):
    # The ingress needs the package's names, sizes and tokenizer, not its models: reduce_memory loads no session.
    return serve(lambda: Pipeline.load(package, reduce_memory=True), wait=False, host=_ray_host(package, replicas), **settings)


@pytest.fixture(scope="module")
def ray_server(ray_cluster, tiny_package):
    with _serve_ray(tiny_package, max_batch=2, max_queue=64, request_timeout_s=120) as server:
        server.wait_ready(240)
        yield server


def _replica_series(server, name="nanoedge_replica_batches_total") -> dict[tuple[str, str, str], float]:
    text = httpx.get(f"{server.base_url}/metrics").text
    found = {}
    for match in re.finditer(name + r'\{replica="([^"]*)",pid="(\d+)",node="([^"]*)"\} (\S+)', text):
        found[match.group(1, 2, 3)] = float(match.group(4))
    return found


def _client(server, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(api_key="any", base_url=server.api_url, _strict_response_validation=True, **kwargs)


def test_the_openai_sdk_generates_through_two_replicas(ray_server):
    health = httpx.get(f"{ray_server.base_url}/healthz").json()
    assert health["engine"] == "ray" and health["replicas"]["target"] == 2 and health["replicas"]["running"] == 2
    assert httpx.get(f"{ray_server.base_url}/readyz").status_code == 200
    response = _client(ray_server).images.generate(prompt="a red circle", size="64x64", response_format="b64_json",
                                                   extra_body={"seed": 3, "style": "anime", "quality": "low"})
    image = base64.b64decode(response.data[0].b64_json)
    assert image.startswith(PNG_MAGIC)
    assert "anime" in response.data[0].revised_prompt.lower()
    assert ray_server.metric("nanoedge_replicas") >= 2


def test_concurrent_requests_are_spread_over_both_replicas(ray_server):
    before = _replica_series(ray_server)
    client = _client(ray_server, max_retries=0)

    def one(i: int) -> int:
        return len(client.images.generate(prompt=f"spread {i}", size="64x64", response_format="b64_json").data)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(one, range(8))) == 8
    after = _replica_series(ray_server)
    grew = {key for key, value in after.items() if value > before.get(key, 0)}
    assert len({key[1] for key in grew}) == 2, f"batches ran on {grew}, not on both replicas"
    assert ray_server.metric("nanoedge_replica_images_total") >= 8


def test_a_png_through_ray_is_byte_identical_to_the_single_process_servers(ray_server, tiny_package):
    body = {"prompt": "a blue square at the top", "size": "64x64", "seed": 1234, "response_format": "b64_json", "steps": 4}
    through_ray = httpx.post(f"{ray_server.api_url}/images/generations", json=body, timeout=120)
    with serve(Pipeline.load(tiny_package, threads=1)) as local:
        alone = httpx.post(f"{local.api_url}/images/generations", json=body, timeout=120)
    assert through_ray.status_code == alone.status_code == 200
    assert through_ray.headers["x-nanoedge-seed"] == alone.headers["x-nanoedge-seed"] == "1234"
    ray_png = base64.b64decode(through_ray.json()["data"][0]["b64_json"])
    assert ray_png.startswith(PNG_MAGIC)
    assert ray_png == base64.b64decode(alone.json()["data"][0]["b64_json"])


def test_streamed_previews_are_rendered_in_the_replica(ray_server):
    stream = _client(ray_server).images.generate(prompt="a lighthouse", size="64x64", stream=True, partial_images=2,
                                                 extra_body={"seed": 5, "steps": 6})
    events = list(stream)
    assert [e.type for e in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert [e.partial_image_index for e in events[:2]] == [0, 1]
    plain = _client(ray_server).images.generate(prompt="a lighthouse", size="64x64", response_format="b64_json",
                                                extra_body={"seed": 5, "steps": 6})
    assert events[-1].b64_json == plain.data[0].b64_json


def test_errors_keep_the_openai_envelope(ray_server):
    bad = httpx.post(f"{ray_server.api_url}/images/generations", json={"prompt": "x", "size": "63x64"})
    assert bad.status_code == 400 and set(bad.json()["error"]) == {"message", "type", "param", "code"}
    missing = httpx.post(f"{ray_server.api_url}/images/generations", json={"prompt": "x", "model": "nope"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_a_client_leaving_stops_its_batch_in_the_replica(ray_server):
    wait_until(lambda: ray_server.metric("nanoedge_replica_busy") == 0, 60, "idle replicas")
    cancelled = ray_server.metric("nanoedge_cancelled_requests_total")
    batches = ray_server.metric("nanoedge_replica_batches_total")
    with pytest.raises(httpx.ReadTimeout):  # the client gives up while its 500-step batch runs (~2.3 s unloaded)
        httpx.post(f"{ray_server.api_url}/images/generations", timeout=httpx.Timeout(10, read=0.5),
                   json={"prompt": "leave early", "size": "64x64", "steps": 500, "n": 2})
    wait_until(lambda: ray_server.metric("nanoedge_cancelled_requests_total") == cancelled + 1, 30, "the cancellation")
    wait_until(lambda: ray_server.metric("nanoedge_replica_busy") == 0, 30, "the replica to be free again")
    assert ray_server.metric("nanoedge_replica_batches_total") == batches  # stopped, not finished


def test_killing_a_replica_mid_run_loses_no_accepted_request(ray_server):
    wait_until(lambda: ray_server.metric('nanoedge_replicas{state="running"}') == 2, 60, "2 running replicas")
    results: list[tuple[int, str | None]] = []

    def one(i: int) -> None:
        response = httpx.post(f"{ray_server.api_url}/images/generations", timeout=180,
                              json={"prompt": f"survive {i}", "size": "64x64", "steps": 40, "response_format": "b64_json"})
        results.append((response.status_code, response.headers.get("retry-after")))

    def busy_pids() -> list[int]:
        return [int(key[1]) for key, value in _replica_series(ray_server, "nanoedge_replica_busy").items() if value > 0]

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(one, i) for i in range(12)]
        wait_until(lambda: len(busy_pids()) == 2, 60, "both replicas generating")
        os.kill(busy_pids()[0], signal.SIGKILL)  # its process dies in the middle of a batch
        for future in futures:
            future.result(timeout=240)
    assert len(results) == 12
    assert all(status == 200 or (status == 503 and retry) for status, retry in results), results
    assert ray_server.metric("nanoedge_replica_lost_batches_total") >= 1, "the kill did not hit a running batch"
    # Serve replaces the replica; the server is whole again.
    wait_until(lambda: ray_server.metric('nanoedge_replicas{state="running"}') == 2, 120, "the replica to be replaced")
    assert httpx.post(f"{ray_server.api_url}/images/generations", json={"prompt": "after", "size": "64x64"}, timeout=120).status_code == 200


def test_no_running_replica_answers_503_no_replicas(ray_cluster, tiny_package):
    from ray import serve as ray_serve

    with _serve_ray(tiny_package, replicas=1) as server:
        server.wait_ready(240)
        executor = server.state.service.executor
        ray_serve.delete(executor.app)
        executor.book.refresh()
        ready = httpx.get(f"{server.base_url}/readyz")
        assert ready.status_code == 503 and ready.json()["error"]["code"] == "no_replicas" and ready.headers["retry-after"]
        generation = httpx.post(f"{server.api_url}/images/generations", json={"prompt": "x"})
        assert generation.status_code == 503 and generation.json()["error"]["code"] == "no_replicas"
        assert httpx.get(f"{server.base_url}/healthz").json()["replicas"].get("running", 0) == 0


def test_the_cli_joins_a_running_cluster_and_stops_cleanly(ray_cluster, tiny_package, tmp_path):
    """`nanoedge serve --engine ray --ray-address ADDR` in its own process, as docs/scale-out.md runs it
    against `ray start --head`: joins, serves, and on SIGTERM drains, removes its replicas and exits 0."""
    import ray
    from ray import serve as ray_serve

    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nanoedge", "serve", "-m", str(tiny_package), "--port", "0", "--engine", "ray",
             "--replicas", "1", "--replica-cpus", "0.25", "--ray-address", ray.get_runtime_context().gcs_address,
             "--drain-grace", "0"],
            stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: re.search(r"http://127\.0\.0\.1:(\d+)/v1", log_path.read_text()) or proc.poll() is not None, 60, "its port")
        match = re.search(r"http://127\.0\.0\.1:(\d+)/v1", log_path.read_text())
        assert match, log_path.read_text()
        assert "1 Ray replica(s) on " in log_path.read_text()
        base = f"http://127.0.0.1:{match.group(1)}"

        def ready() -> bool:
            try:
                return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, 180, "readyz")
        ours = [name for name in ray_serve.status().applications if name.startswith(f"nanoedge-{proc.pid}-")]
        assert len(ours) == 1
        image = openai.OpenAI(api_key="any", base_url=f"{base}/v1").images.generate(prompt="joined", size="64x64",
                                                                                     response_format="b64_json")
        assert base64.b64decode(image.data[0].b64_json).startswith(PNG_MAGIC)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(120)
    assert code == 0, log_path.read_text()
    assert ours[0] not in ray_serve.status().applications  # its replicas are gone, the cluster stays up
    assert ray.is_initialized()

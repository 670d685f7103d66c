"""429 when the queue is full, 503 while loading, 504 past the request timeout, 401 without a
key: each observed the way clients see it, through the official SDK and its retries."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import openai
import pytest
from server_support import GatedPipeline, serve, wait_until

from nanoedge.runtime.pipeline import Pipeline

pytest.importorskip("uvicorn")


class StatusLog:
    """httpx event hook recording every status the SDK receives (retries included)."""

    def __init__(self, on_status=None) -> None:
        self.statuses: list[int] = []
        self.retry_after: list[str | None] = []
        self._on_status = on_status

    def __call__(self, response: httpx.Response) -> None:
        self.statuses.append(response.status_code)
        self.retry_after.append(response.headers.get("retry-after"))
        if self._on_status is not None:
            self._on_status(response.status_code)


def _client(server, log: StatusLog, max_retries: int, key: str = "k") -> openai.OpenAI:
    return openai.OpenAI(
        api_key=key, base_url=server.api_url, max_retries=max_retries, _strict_response_validation=True,
        http_client=httpx.Client(event_hooks={"response": [log]}),
    )


@pytest.fixture(scope="module")
def pipeline(tiny_package):
    return Pipeline.load(tiny_package)


def test_503_while_loading_then_the_sdk_retry_succeeds(pipeline):
    release = threading.Event()

    def slow_loader() -> Pipeline:
        release.wait(20)
        return pipeline

    log = StatusLog(on_status=lambda status: status == 503 and release.set())
    with serve(slow_loader, wait=False, unavailable_retry_after_s=1) as server:
        ready = httpx.get(f"{server.base_url}/readyz")
        assert ready.status_code == 503 and ready.headers["retry-after"] == "1"
        assert ready.json()["error"]["code"] == "model_loading"
        assert httpx.get(f"{server.base_url}/healthz").status_code == 200
        response = _client(server, log, max_retries=3).images.generate(prompt="after loading", response_format="b64_json")
        assert response.data[0].b64_json
    assert log.statuses[0] == 503 and log.statuses[-1] == 200
    assert log.retry_after[0] == "1"


def test_429_when_the_queue_is_full(pipeline):
    gated = GatedPipeline(pipeline)
    with serve(gated, max_queue=1, max_batch=1) as server:
        gated.gate.clear()
        try:
            holders = [threading.Thread(target=httpx.post, args=(f"{server.api_url}/images/generations",),
                                        kwargs={"json": {"prompt": f"hold {i}"}, "timeout": 30}) for i in range(2)]
            holders[0].start()
            wait_until(lambda: gated.waiting == 1, message="worker busy")
            holders[1].start()
            wait_until(lambda: server.state.service.worker.depth() == 1, message="queue full")

            # without retries the SDK raises RateLimitError carrying the server's Retry-After
            no_retry = StatusLog()
            with pytest.raises(openai.RateLimitError) as err:
                _client(server, no_retry, max_retries=0).images.generate(prompt="too many")
            retry_after = int(err.value.response.headers["retry-after"])
            assert 1 <= retry_after <= 60
            assert err.value.code == "queue_full" and set(err.value.body) == {"message", "type", "param", "code"}

            # with retries it waits Retry-After and gets through once the queue moves
            log = StatusLog(on_status=lambda status: status == 429 and gated.gate.set())
            started = time.monotonic()
            response = _client(server, log, max_retries=2).images.generate(prompt="patient", response_format="b64_json")
            assert response.data[0].b64_json
            assert log.statuses[0] == 429 and log.statuses[-1] == 200
            assert time.monotonic() - started >= int(log.retry_after[0]) * 0.9  # honoured Retry-After
        finally:
            gated.gate.set()
            for holder in holders:
                holder.join(30)
        assert server.metric('nanoedge_requests_total{method="POST",path="/v1/images/generations",status="429"}') >= 2


def test_504_after_the_request_timeout(pipeline):
    gated = GatedPipeline(pipeline)
    with serve(gated, request_timeout_s=1.0) as server:
        gated.gate.clear()
        try:
            response = httpx.post(f"{server.api_url}/images/generations", json={"prompt": "too slow"}, timeout=10)
        finally:
            gated.gate.set()
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "timeout"
        assert response.headers["x-should-retry"] == "false"  # it was running: retrying will not help
        assert httpx.post(f"{server.api_url}/images/generations", json={"prompt": "fast"}).status_code == 200


def test_503_while_draining(pipeline):
    with serve(pipeline, unavailable_retry_after_s=1) as server:
        server.state.begin_drain()
        log = StatusLog()
        with pytest.raises(openai.InternalServerError) as err:
            _client(server, log, max_retries=1).images.generate(prompt="late")
        assert err.value.status_code == 503 and err.value.code == "shutting_down"
        assert log.statuses == [503, 503]  # the SDK retried once, honouring Retry-After
        assert 1 <= int(log.retry_after[0]) <= 60


def test_api_keys(pipeline):
    with serve(pipeline, api_keys=("key-one", "key-two")) as server:
        log = StatusLog()
        for key in ("key-one", "key-two"):  # key rotation: every configured key works
            assert _client(server, log, max_retries=2, key=key).models.list().data
        with pytest.raises(openai.AuthenticationError) as err:
            _client(server, log, max_retries=2, key="wrong").images.generate(prompt="x")
        assert err.value.status_code == 401 and err.value.code == "invalid_api_key"
        assert log.statuses[-1] == 401 and log.statuses.count(401) == 1  # 401 is not retried
        missing = httpx.post(f"{server.api_url}/images/generations", json={"prompt": "x"})
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
        assert set(missing.json()["error"]) == {"message", "type", "param", "code"}
        assert missing.headers["x-request-id"].startswith("req_")
        wrong_scheme = httpx.get(f"{server.api_url}/models", headers={"Authorization": "Basic key-one"})
        assert wrong_scheme.status_code == 401
        # image URLs work without the key (like hosted, time-limited URLs); ops routes stay open
        url = _client(server, log, max_retries=0, key="key-two").images.generate(prompt="x").data[0].url
        assert httpx.get(url).status_code == 200
        sneaky = httpx.get(f"{server.api_url}/images/files/x/../../models")  # not a file name: the key is required
        assert sneaky.status_code == 401
        assert httpx.get(f"{server.base_url}/readyz").status_code == 200


def test_flood_of_ten_times_the_queue_gets_only_200_or_429(pipeline):
    queue = 4
    with serve(pipeline, max_queue=queue, max_batch=4, cache_dir=None) as server:
        generated_before = server.metric("nanoedge_images_generated_total")

        async def flood():
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
            async with httpx.AsyncClient(base_url=server.api_url, timeout=120, limits=limits) as http:
                body = {"response_format": "b64_json", "size": "128x128", "steps": 20}
                bodies = [{"prompt": f"flood {i}", **body} for i in range(10 * queue)]
                return await asyncio.gather(*(http.post("/images/generations", json=body) for body in bodies))

        responses = asyncio.run(flood())
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {200, 429}, statuses
        assert statuses.count(200) >= queue and statuses.count(429) >= 1
        for response in responses:
            if response.status_code == 429:
                assert 1 <= int(response.headers["retry-after"]) <= 60 and response.json()["error"]["code"] == "queue_full"
            else:
                assert len(response.json()["data"]) == 1 and response.json()["data"][0]["b64_json"]
        # every accepted request was generated exactly once, and none was dropped or cancelled
        assert server.metric("nanoedge_images_generated_total") - generated_before == statuses.count(200)
        assert server.metric("nanoedge_dropped_requests_total") == 0 and server.metric("nanoedge_cancelled_requests_total") == 0


def test_timed_out_work_stops_at_the_next_step(pipeline):
    """The reported case: a 500-step, 4-image request past --request-timeout got 504 but kept the
    worker busy, so the next request timed out too. Now the worker stops it within a step."""
    with serve(pipeline, request_timeout_s=2.0, cache_dir=None) as server:
        started = time.monotonic()
        huge = {"prompt": "huge", "n": 4, "steps": 500, "size": "128x128"}
        big = httpx.post(f"{server.api_url}/images/generations", json=huge, timeout=30)
        assert big.status_code == 504 and big.headers["x-should-retry"] == "false"
        assert time.monotonic() - started < 5
        wait_until(lambda: server.metric("nanoedge_cancelled_requests_total") == 1, 5, "the cancelled series")
        after = httpx.post(f"{server.api_url}/images/generations", json={"prompt": "next", "response_format": "b64_json"}, timeout=30)
        assert after.status_code == 200  # the worker was free again
        assert server.metric("nanoedge_dropped_requests_total") == 0


def test_client_leaving_running_work_frees_the_worker(pipeline):
    with serve(pipeline, cache_dir=None) as server:
        with pytest.raises(httpx.ReadTimeout):
            huge = {"prompt": "gone", "n": 4, "steps": 500, "size": "128x128"}
            httpx.post(f"{server.api_url}/images/generations", json=huge, timeout=1.0)
        wait_until(lambda: server.metric("nanoedge_cancelled_requests_total") == 1, 5, "the cancelled series")
        wait_until(lambda: not server.state.service.worker.busy(), 5, "the worker to stop")
        assert server.metric("nanoedge_dropped_requests_total") == 0

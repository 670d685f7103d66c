"""Hybrid overflow (``--upstream``): who answers, what the upstream gets, what clients see.

Two kinds of upstream, both real HTTP servers on 127.0.0.1:
* a second nanoedge server with the tiny package (and an API key of its own): a burst against
  a local server with a tiny queue is split between the two and every request gets a 200;
* a fault-injecting fake (below) that records what it receives and answers 200, 503, 429,
  401, 500 without an envelope, or hangs past the timeout, to check the error mapping, the
  forwarded body and headers, and the circuit breaker opening and closing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time

import httpx
import openai
import pytest
from server_support import PNG_MAGIC, GatedPipeline, serve, serve_asgi, wait_until

from nanoedge.runtime.pipeline import Pipeline

pytest.importorskip("uvicorn")

from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse, Response, StreamingResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from nanoedge.runtime.server.settings import UpstreamSettings  # noqa: E402

UPSTREAM_KEY = "sk-upstream-SECRET-7f3a9c"
FAKE_PNG = PNG_MAGIC + b"fake image"


@pytest.fixture(scope="module")
def pipeline(tiny_package):
    return Pipeline.load(tiny_package)


@pytest.fixture(scope="module")
def upstream_pipeline(tiny_package):
    return Pipeline.load(tiny_package)  # its own: the two servers' workers run at the same time


def served_by(text: str) -> dict[tuple[str, str], float]:
    """``nanoedge_served_requests_total`` samples by (served_by, status)."""
    counts = {}
    for line in text.splitlines():
        if line.startswith("nanoedge_served_requests_total{"):
            labels = dict(part.split("=") for part in line[line.index("{") + 1:line.index("}")].split(","))
            counts[(labels["served_by"].strip('"'), labels["status"].strip('"'))] = float(line.rsplit(" ", 1)[1])
    return counts


def metric_value(text: str, sample: str) -> float:
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{sample} not on /metrics")


def fill_the_queue(local, gated: GatedPipeline) -> list[threading.Thread]:
    """Hold one request in the worker (gate shut) and queue one more (``max_queue=1``)."""
    gated.started.clear()  # the warm-up set it
    gated.gate.clear()
    body = {"prompt": "held", "size": "64x64", "response_format": "b64_json"}
    held = []
    for ready in (gated.started.is_set, lambda: local.state.service.worker.depth() == 1):
        thread = threading.Thread(target=post, args=(local, body))
        thread.start()
        held.append(thread)
        wait_until(ready, 20, "a full local queue")
    return held


# -- a second nanoedge server as the upstream -----------------------------------------------------
def test_a_burst_is_split_between_local_and_upstream_and_every_request_succeeds(pipeline, upstream_pipeline, caplog):
    caplog.set_level(logging.DEBUG)
    gated = GatedPipeline(pipeline)
    with serve(upstream_pipeline, api_keys=(UPSTREAM_KEY,)) as upstream:
        settings = UpstreamSettings(url=upstream.api_url, key=UPSTREAM_KEY, models=(("nano-banana-2", upstream_pipeline.manifest.id),))
        with serve(gated, max_queue=1, max_batch=1, aliases=("nano-banana-2",), upstream=settings) as local:
            assert UPSTREAM_KEY not in repr(local.state.settings)
            gated.started.clear()  # set by the warm-up
            gated.gate.clear()
            client = openai.AsyncOpenAI(api_key="local-client-key", base_url=local.api_url, max_retries=0)

            async def one(i: int):
                raw = await client.images.with_raw_response.generate(
                    model="nano-banana-2", prompt=f"burst {i}", size="64x64", response_format="b64_json", extra_body={"seed": i}
                )
                return raw.headers, raw.parse()

            async def burst():
                first = asyncio.ensure_future(one(0))  # held in the worker at the gate
                await asyncio.to_thread(gated.started.wait, 10)
                rest = [asyncio.ensure_future(one(i)) for i in range(1, 6)]
                # the queue holds one more: the other four go upstream and come back while the gate is shut
                await asyncio.to_thread(wait_until, lambda: sum(f.done() for f in rest) >= 4, 60, "four upstream answers")
                gated.gate.set()
                return await asyncio.gather(first, *rest)

            results = asyncio.run(burst())
            by = [headers["x-nanoedge-served-by"] for headers, _ in results]
            assert by.count("local") == 2 and by.count("upstream") == 4, by
            for headers, image in results:
                assert base64.b64decode(image.data[0].b64_json).startswith(PNG_MAGIC)
                if headers["x-nanoedge-served-by"] == "upstream":
                    assert headers["x-nanoedge-overflow-reason"] == "queue-full"
                    assert headers["x-upstream-request-id"].startswith("req_")
            text = httpx.get(f"{local.base_url}/metrics").text
            assert served_by(text) == {("local", "200"): 2, ("upstream", "200"): 4}
            assert metric_value(text, 'nanoedge_overflow_requests_total{reason="queue-full"}') == 4
            assert upstream.metric("nanoedge_images_generated_total") >= 4  # the upstream really generated them
            # the same seed gives the same image wherever it is made (same package on both ends)
            seeded = {"model": "nano-banana-2", "prompt": "same", "size": "64x64", "seed": 7, "response_format": "b64_json"}
            here = httpx.post(f"{local.api_url}/images/generations", json=seeded, timeout=60)
            there = httpx.post(f"{upstream.api_url}/images/generations", json={**seeded, "model": upstream_pipeline.manifest.id},
                               timeout=60, headers={"authorization": f"Bearer {UPSTREAM_KEY}"})
            assert here.headers["x-nanoedge-served-by"] == "local"
            assert here.json()["data"][0]["b64_json"] == there.json()["data"][0]["b64_json"]
    assert UPSTREAM_KEY not in caplog.text


def test_a_streamed_request_is_relayed_from_the_upstream(pipeline, upstream_pipeline):
    gated = GatedPipeline(pipeline)
    with serve(upstream_pipeline) as upstream:
        with serve(gated, max_queue=1, max_batch=1, upstream=UpstreamSettings(url=upstream.api_url)) as local:
            held = fill_the_queue(local, gated)
            client = openai.OpenAI(api_key="x", base_url=local.api_url, max_retries=0)
            events = list(client.images.generate(prompt="streamed", size="64x64", stream=True, partial_images=1))
            gated.gate.set()
            for thread in held:
                thread.join(60)
    assert [e.type for e in events] == ["image_generation.partial_image", "image_generation.completed"]
    assert base64.b64decode(events[-1].b64_json).startswith(PNG_MAGIC)


# -- a fault-injecting upstream ----------------------------------------------------------------------
class FakeUpstream:
    """Answers ``mode`` and records every request's body and headers."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.app = Starlette(routes=[Route("/v1/images/generations", self.generate, methods=["POST"])])

    @property
    def hits(self) -> int:
        return len(self.bodies)

    async def generate(self, request: Request) -> Response:
        self.bodies.append(await request.body())
        self.headers.append(dict(request.headers))
        envelope = {"error": {"message": f"fake {self.mode}", "type": "fake", "param": None, "code": f"fake_{self.mode}"}}
        if self.mode == "ok":
            return JSONResponse({"created": 1, "data": [{"b64_json": base64.b64encode(FAKE_PNG).decode()}]},
                                headers={"x-request-id": "req_fake"})
        if self.mode == "stream":
            async def events():
                yield b'event: image_generation.completed\ndata: {"type":"image_generation.completed","b64_json":"AA=="}\n\n'
            return StreamingResponse(events(), media_type="text/event-stream")
        if self.mode == "broken-stream":
            async def broken():
                yield b'event: image_generation.partial_image\ndata: {"type":"image_generation.partial_image"}\n\n'
                raise RuntimeError("the fake upstream dies mid-stream")
            return StreamingResponse(broken(), media_type="text/event-stream")
        if self.mode == "slow-stream":
            async def slow():
                yield b'event: image_generation.partial_image\ndata: {"type":"image_generation.partial_image"}\n\n'
                await asyncio.sleep(5)
                yield b'event: image_generation.completed\ndata: {"type":"image_generation.completed","b64_json":"AA=="}\n\n'
            return StreamingResponse(slow(), media_type="text/event-stream")
        if self.mode == "hang":
            await asyncio.sleep(3)
            return JSONResponse({"created": 1, "data": []})
        if self.mode == "429":
            return JSONResponse(envelope, status_code=429, headers={"Retry-After": "7"})
        if self.mode == "500-text":
            return Response("upstream exploded", status_code=500, media_type="text/plain")
        return JSONResponse(envelope, status_code=int(self.mode))


@pytest.fixture(scope="module")
def fake():
    upstream = FakeUpstream()
    with serve_asgi(upstream.app) as url:
        upstream.url = url + "/v1"
        yield upstream


@pytest.fixture
def local_with_fake(pipeline, fake):
    """A local server overflowing to the fake; settings per test through the returned factory."""
    fake.mode, fake.bodies[:], fake.headers[:] = "ok", [], []

    def start(source=None, **overrides):
        upstream = {"url": fake.url, "key": UPSTREAM_KEY, "timeout_s": 0.5, "breaker_failures": 2, "breaker_cooldown_s": 1.0,
                    **overrides.pop("upstream", {})}
        return serve(source or pipeline, upstream=UpstreamSettings(**upstream), warmup=False, **overrides)

    return start


def post(server, body, **kwargs) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"content-type": "application/json", **kwargs.pop("headers", {})}
    return httpx.post(f"{server.api_url}/images/generations", content=content, headers=headers, timeout=30, **kwargs)


def assert_envelope(response: httpx.Response, status: int, code: str | None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    return error


def test_the_body_is_forwarded_unchanged_with_our_key_not_the_clients(local_with_fake, fake, caplog):
    caplog.set_level(logging.DEBUG)
    raw = '{ "model" : "remote-only",\n "prompt": "caf\\u00e9 \u732b", "size":"1536x1024", "background":"transparent" }'.encode()
    with local_with_fake(api_keys=("local-key",)) as local:
        response = post(local, raw, headers={"authorization": "Bearer local-key", "x-custom": "kept-here"})
        assert response.status_code == 200, response.text
        assert response.headers["x-nanoedge-served-by"] == "upstream"
        assert response.headers["x-nanoedge-overflow-reason"] == "unserved-model"
        assert base64.b64decode(response.json()["data"][0]["b64_json"]) == FAKE_PNG
        assert fake.bodies == [raw]  # byte for byte: not validated here, not re-encoded
        assert fake.headers[0]["authorization"] == f"Bearer {UPSTREAM_KEY}"
        assert "x-custom" not in fake.headers[0]
        assert UPSTREAM_KEY not in response.text and UPSTREAM_KEY not in str(response.headers)
    assert UPSTREAM_KEY not in caplog.text


def test_a_mapped_model_is_the_only_change(local_with_fake, fake):
    body = {"model": "nano-banana-2", "prompt": "mapped", "n": 1, "size": "64x512", "guidance_scale": 2.5, "negative_prompt": None}
    with local_with_fake(aliases=("nano-banana-2",), upstream={"models": (("nano-banana-2", "gpt-image-1"),)}) as local:
        response = post(local, body)  # 64x512 (8:1) is not served here: unserved-size
        assert response.status_code == 200, response.text
        assert response.headers["x-nanoedge-overflow-reason"] == "unserved-size"
    sent = json.loads(fake.bodies[0])
    assert sent == {**body, "model": "gpt-image-1"} and list(sent) == list(body)


@pytest.mark.parametrize("size", ["64x512", "60x64"])
def test_sizes_not_served_here_overflow_and_malformed_ones_do_not(local_with_fake, fake, size):
    with local_with_fake() as local:
        assert post(local, {"prompt": "big", "size": size}).headers["x-nanoedge-served-by"] == "upstream"
        for bad in ("huge", "auto-ish"):
            assert_envelope(post(local, {"prompt": "bad", "size": bad}), 400, "invalid_value")
        assert fake.hits == 1
    with local_with_fake(upstream={"overflow_on": ("queue-full",)}) as local:
        response = post(local, {"prompt": "big", "size": size})
        assert_envelope(response, 400, "invalid_value")
        assert response.headers["x-nanoedge-served-by"] == "local"
        assert fake.hits == 1


def test_client_errors_never_overflow(local_with_fake, fake):
    with local_with_fake(api_keys=("local-key",)) as local:
        key = {"authorization": "Bearer local-key"}
        assert_envelope(post(local, {"prompt": "no key", "model": "remote-only"}), 401, "missing_api_key")
        assert_envelope(post(local, {"prompt": "x", "model": "remote-only"}, headers={"authorization": "Bearer wrong"}), 401,
                        "invalid_api_key")
        assert_envelope(post(local, b'{"prompt": "x", "model": "remote-only"', headers=key), 400, "invalid_json")
        assert_envelope(post(local, {"prompt": "x", "n": 0}, headers=key), 400, "invalid_value")
        assert_envelope(post(local, {"prompt": "x", "negative_promt": "typo"}, headers=key), 400, "unknown_parameter")
        assert_envelope(post(local, b"[1, 2]", headers=key), 400, "invalid_json")
        assert fake.hits == 0
        text = httpx.get(f"{local.base_url}/metrics").text
        assert served_by(text) == {("local", "400"): 4}  # the 401s are answered before the route


def test_upstream_errors_reach_the_client_as_envelopes(local_with_fake, fake):
    with local_with_fake(upstream={"breaker_failures": 100}) as local:
        body = {"prompt": "x", "model": "remote-only"}
        fake.mode = "429"
        response = post(local, body)
        error = assert_envelope(response, 429, "fake_429")  # passed through, with its Retry-After
        assert response.headers["retry-after"] == "7" and error["message"] == "fake 429"
        assert response.headers["x-nanoedge-served-by"] == "upstream"
        for mode in ("401", "403"):
            fake.mode = mode
            error = assert_envelope(post(local, body), 503, "upstream_auth_failed")  # our key, not the client's
            assert "operator" in error["message"]
        for mode in ("503", "500-text", "hang"):
            fake.mode = mode
            response = post(local, body)
            assert_envelope(response, 503, "upstream_unavailable")
            assert 1 <= int(response.headers["retry-after"]) <= 60
        fake.mode = "404"
        assert_envelope(post(local, body), 404, "fake_404")  # the upstream's judgement of the request
        fake.mode = "stream"
        streamed = post(local, {**body, "stream": True})
        assert streamed.headers["content-type"].startswith("text/event-stream")
        assert b"image_generation.completed" in streamed.content
        fake.mode = "broken-stream"
        broken = post(local, {**body, "stream": True})
        assert b"image_generation.partial_image" in broken.content and b"event: error" in broken.content
        assert b"upstream_unavailable" in broken.content
        text = httpx.get(f"{local.base_url}/metrics").text
        assert metric_value(text, "nanoedge_upstream_in_flight") == 0


def test_the_breaker_opens_after_failures_and_closes_after_the_cooldown(local_with_fake, fake):
    with local_with_fake() as local:  # 2 failures open it for 1 s
        body = {"prompt": "x", "model": "remote-only"}
        fake.mode = "503"
        for _ in range(2):
            assert_envelope(post(local, body), 503, "upstream_unavailable")
        assert fake.hits == 2
        assert local.metric("nanoedge_upstream_breaker_state") == 2  # open
        response = post(local, body)
        error = assert_envelope(response, 503, "upstream_unavailable")
        assert "circuit breaker" in error["message"] and response.headers["retry-after"] == "1"
        assert fake.hits == 2  # not sent
        time.sleep(1.1)
        fake.mode = "ok"
        assert post(local, body).status_code == 200  # the half-open trial succeeds
        assert local.metric("nanoedge_upstream_breaker_state") == 0
        assert local.metric("nanoedge_upstream_breaker_opened_total") == 1
        fake.mode = "503"
        assert_envelope(post(local, body), 503, "upstream_unavailable")
        assert local.metric("nanoedge_upstream_breaker_state") == 0  # one failure after a success: still closed


def test_a_busy_box_answers_its_own_429_when_the_upstream_is_down(local_with_fake, fake, pipeline):
    gated = GatedPipeline(pipeline)
    with local_with_fake(gated, max_queue=1, max_batch=1, upstream={"breaker_failures": 1}) as local:
        held = fill_the_queue(local, gated)
        fake.mode = "503"
        response = post(local, {"prompt": "overflows", "size": "64x64"})
        assert_envelope(response, 503, "upstream_unavailable")  # tried upstream: its failure is the answer
        response = post(local, {"prompt": "breaker open", "size": "64x64"})
        assert_envelope(response, 429, "queue_full")  # not tried: the local answer, with the local wait
        assert response.headers["x-nanoedge-served-by"] == "local" and "retry-after" in response.headers
        assert fake.hits == 1
        gated.gate.set()
        for thread in held:
            thread.join(30)


def test_a_client_leaving_a_relayed_stream_frees_the_upstream_connection(local_with_fake, fake):
    with local_with_fake(upstream={"max_concurrent": 1, "timeout_s": 2.0}) as local:  # a pool of one connection
        fake.mode = "slow-stream"
        body = json.dumps({"prompt": "x", "model": "remote-only", "stream": True})
        with httpx.stream("POST", f"{local.api_url}/images/generations", content=body, timeout=10) as response:
            assert response.headers["x-nanoedge-served-by"] == "upstream"
            first = next(response.iter_raw())
            assert b"partial_image" in first
        wait_until(lambda: local.metric("nanoedge_upstream_in_flight") == 0, 10, "the relay to end")
        fake.mode = "ok"
        response = post(local, {"prompt": "next", "model": "remote-only"})  # needs the one pooled connection
        assert response.status_code == 200, response.text


class FailingPipeline:
    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    def __getattr__(self, name):
        return getattr(self._pipeline, name)

    def generate_batch(self, requests, **kwargs):
        raise RuntimeError("the local model broke")


def test_local_errors_overflow_only_when_asked(local_with_fake, fake, pipeline):
    body = {"prompt": "x", "size": "64x64"}
    with local_with_fake(FailingPipeline(pipeline)) as local:
        assert_envelope(post(local, body), 500, "internal_error")
        assert fake.hits == 0
    reasons = ("queue-full", "local-error")
    with local_with_fake(FailingPipeline(pipeline), upstream={"overflow_on": reasons}) as local:
        response = post(local, body)
        assert response.status_code == 200 and response.headers["x-nanoedge-overflow-reason"] == "local-error"
        assert fake.hits == 1
        assert served_by(httpx.get(f"{local.base_url}/metrics").text) == {("upstream", "200"): 1}

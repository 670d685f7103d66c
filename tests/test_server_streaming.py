"""``stream: true`` against the official openai Python SDK's streaming call, plus what the SDK
cannot show directly (headers, micro-batching, the cache, a failure mid-stream) with httpx."""

from __future__ import annotations

import base64
import io
import threading

import httpx
import numpy as np
import openai
import pytest
from PIL import Image
from server_support import PNG_MAGIC, GatedPipeline, serve, wait_until
from test_server_conformance import stream_events

from nanoedge.runtime.pipeline import Pipeline

pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def gated(tiny_package):
    return GatedPipeline(Pipeline.load(tiny_package))


@pytest.fixture(scope="module")
def server(gated, tmp_path_factory):
    cache = tmp_path_factory.mktemp("stream-cache")
    with serve(gated, aliases=("nano-banana-2",), cache_dir=cache, max_batch=4) as running:
        yield running


@pytest.fixture
def client(server):
    return openai.OpenAI(api_key="any-key", base_url=server.api_url, max_retries=0, _strict_response_validation=True)


def _png(b64: str) -> Image.Image:
    data = base64.b64decode(b64)
    assert data.startswith(PNG_MAGIC)
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_python_sdk_streams_partials_then_the_final_image(client):
    stream = client.images.generate(model="nano-banana-2", prompt="a red circle on the left", size="512x512",
                                    stream=True, partial_images=2, extra_body={"seed": 11, "steps": 10})
    events = list(stream)
    assert [e.type for e in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert isinstance(events[0], openai.types.ImageGenPartialImageEvent)
    assert isinstance(events[-1], openai.types.ImageGenCompletedEvent)
    assert [e.partial_image_index for e in events[:2]] == [0, 1]
    # previews come at the size the model runs at (64x64 here: 512x512 is made by resizing)
    assert [_png(e.b64_json).size for e in events] == [(64, 64), (64, 64), (512, 512)]
    for event in events:
        assert event.size == "auto" and event.output_format == "png" and event.background == "auto" and isinstance(event.created_at, int)
    assert events[-1].usage.input_tokens == events[-1].usage.total_tokens > 0
    # streaming changes nothing in the final image: same bytes as the plain call
    plain = client.images.generate(model="nano-banana-2", prompt="a red circle on the left", size="512x512",
                                   response_format="b64_json", extra_body={"seed": 11, "steps": 10})
    assert base64.b64decode(plain.data[0].b64_json) == base64.b64decode(events[-1].b64_json)
    # the previews differ from each other and from the final image (they show the progress)
    pixels = [np.asarray(_png(e.b64_json).resize((64, 64)), dtype=np.int16) for e in events]
    assert np.abs(pixels[0] - pixels[1]).mean() > 0 and np.abs(pixels[1] - pixels[2]).mean() > 0


def test_partial_images_zero_sends_one_event_per_image(client):
    events = list(client.images.generate(model="nano-banana-2", prompt="two blue squares", n=2, stream=True, partial_images=0))
    assert [e.type for e in events] == ["image_generation.completed"] * 2
    assert [e.model_extra["image_index"] for e in events] == [0, 1]


def test_errors_before_the_stream_are_plain_error_answers(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(model="nano-banana-2", prompt="x", size="banana", stream=True, partial_images=1)
    assert raised.value.param == "size"
    with pytest.raises(openai.NotFoundError):
        client.images.generate(model="dall-e-9", prompt="x", stream=True)
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(model="nano-banana-2", prompt="x", stream=True, partial_images=4)
    assert raised.value.param == "partial_images"


def test_a_cache_hit_streams_just_the_final_image(server):
    body = {"prompt": "a cached lighthouse", "seed": 5, "stream": True, "partial_images": 3, "steps": 10}
    first = httpx.post(f"{server.api_url}/images/generations", json=body, timeout=60)
    second = httpx.post(f"{server.api_url}/images/generations", json=body, timeout=60)
    assert first.headers["content-type"].startswith("text/event-stream")
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
    assert first.headers["x-nanoedge-seed"] == second.headers["x-nanoedge-seed"] == "5"
    kinds_first = [name for name, _ in stream_events(first.text)]
    kinds_second = [name for name, _ in stream_events(second.text)]
    assert kinds_first == ["image_generation.partial_image"] * 3 + ["image_generation.completed"]
    assert kinds_second == ["image_generation.completed"]
    assert stream_events(first.text)[-1][1]["b64_json"] == stream_events(second.text)[-1][1]["b64_json"]


def test_a_streamed_request_shares_a_batch_with_plain_ones(server, gated):
    """Hold the worker, queue a streamed and a plain request of the same shape: one UNet batch
    serves both, the streamed one still gets its previews, and both images equal their solo runs."""
    results: dict[str, httpx.Response] = {}

    def post(name: str, body: dict) -> None:
        results[name] = httpx.post(f"{server.api_url}/images/generations", json=body, timeout=60)

    gated.gate.clear()
    gated.started.clear()
    gated.batches.clear()
    blocker = threading.Thread(target=post, args=("blocker", {"prompt": "hold the worker", "steps": 10, "response_format": "b64_json"}))
    blocker.start()
    try:
        assert gated.started.wait(10)
        streamed_body = {"prompt": "streamed one", "seed": 21, "steps": 10, "stream": True, "partial_images": 2}
        streamed = threading.Thread(target=post, args=("streamed", streamed_body))
        plain_body = {"prompt": "plain one", "seed": 22, "steps": 10, "response_format": "b64_json"}
        plain = threading.Thread(target=post, args=("plain", plain_body))
        plain.start()  # first, so the streamed request's images are not the batch's first rows
        wait_until(lambda: server.state.service.worker.depth() == 1, message="one queued request")
        streamed.start()
        wait_until(lambda: server.state.service.worker.depth() == 2, message="two queued requests")
    finally:
        gated.gate.set()
    for thread in (blocker, streamed, plain):
        thread.join(60)
    assert ["plain one", "streamed one"] in gated.batches
    events = stream_events(results["streamed"].text)
    assert [name for name, _ in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    solo = gated._pipeline.generate("streamed one", seed=21, steps=10)[0]  # the worker is idle now
    assert np.array_equal(np.asarray(solo), np.asarray(_png(events[-1][1]["b64_json"])))
    assert results["plain"].status_code == 200


class FailingAfterPreview:
    """A real pipeline that raises after the third denoising step (a failure mid-stream)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    def __getattr__(self, name):
        return getattr(self._pipeline, name)

    def generate_batch(self, requests, **hooks):
        outer = hooks.get("on_step")

        def on_step(step):
            if outer is not None:
                outer(step)
            if step.index == 3 and requests[0].prompt == "explode":
                raise RuntimeError("simulated device failure")

        return self._pipeline.generate_batch(requests, on_step=on_step)


def test_a_failure_mid_stream_ends_with_an_error_event_the_sdk_raises(tiny_package):
    with serve(FailingAfterPreview(Pipeline.load(tiny_package)), cache_dir=None) as server:
        client = openai.OpenAI(api_key="k", base_url=server.api_url, max_retries=0)
        seen = []
        with pytest.raises(openai.APIError) as raised:
            stream = client.images.generate(model="tiny-random", prompt="explode", stream=True, partial_images=3, extra_body={"steps": 12})
            for event in stream:
                seen.append(event.type)
        assert seen and set(seen) == {"image_generation.partial_image"}  # previews came before the failure
        assert "request id req_" in raised.value.message and "server log" in raised.value.message
        # the server is still fine afterwards
        assert len(list(client.images.generate(model="tiny-random", prompt="fine", stream=True, partial_images=1))) == 2


def test_a_client_leaving_a_queued_stream_drops_its_work(server, gated):
    gated.gate.clear()
    gated.started.clear()
    url = f"{server.api_url}/images/generations"
    blocker = threading.Thread(target=lambda: httpx.post(url, json={"prompt": "hold", "response_format": "b64_json"}, timeout=60))
    blocker.start()
    try:
        assert gated.started.wait(10)
        dropped = server.metric("nanoedge_dropped_requests_total")
        with httpx.stream("POST", url, json={"prompt": "leaving", "stream": True, "partial_images": 2}, timeout=60) as response:
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
            wait_until(lambda: server.state.service.worker.depth() == 1, message="the streamed request queued")
        wait_until(lambda: server.metric("nanoedge_dropped_requests_total") == dropped + 1, message="the queued stream dropped")
        assert server.state.service.worker.depth() == 0
    finally:
        gated.gate.set()
        blocker.join(60)
    assert "leaving" not in [p for batch in gated.batches for p in batch]

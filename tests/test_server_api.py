"""The server against real clients on 127.0.0.1: the official openai Python SDK (sync and the
AsyncOpenAI + semaphore pattern, strict response validation on) and raw httpx for what an SDK
would refuse to send."""

from __future__ import annotations

import asyncio
import base64
import io
import time

import httpx
import openai
import pytest
from PIL import Image
from server_support import PNG_MAGIC, GatedPipeline, serve, wait_until

from nanoedge.runtime.pipeline import Pipeline

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")


@pytest.fixture(scope="module")
def gated(tiny_package):
    return GatedPipeline(Pipeline.load(tiny_package))


@pytest.fixture(scope="module")
def server(gated, tmp_path_factory):
    cache = tmp_path_factory.mktemp("result-cache")
    with serve(gated, aliases=("nano-banana-2",), cache_dir=cache, max_batch=4, max_queue=16) as running:
        yield running


@pytest.fixture
def client(server):
    c = openai.OpenAI(api_key="any-key", base_url=server.api_url, max_retries=0, _strict_response_validation=True)
    assert c._strict_response_validation is True
    return c


def _image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# -- the seed-clients calls --------------------------------------------------------------------
@pytest.mark.parametrize("size", ["512x512", "768x768", "1024x1024"])
def test_seed_client_python_url(client, size):
    response = client.images.generate(
        model="nano-banana-2", prompt="A cute cartoon cat wearing sunglasses", n=1, size=size,
        response_format="url", extra_body={"style": "natural", "quality": "standard"},
    )
    assert isinstance(response, openai.types.ImagesResponse)
    assert isinstance(response.created, int)
    item = response.data[0]
    assert item.url.startswith("http://127.0.0.1:") and item.url.endswith(".png")
    assert "A cute cartoon cat wearing sunglasses" in item.revised_prompt and item.revised_prompt != "A cute cartoon cat wearing sunglasses"
    fetched = httpx.get(item.url)
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    assert fetched.content.startswith(PNG_MAGIC)
    assert _image(fetched.content).size == tuple(int(s) for s in size.split("x"))
    assert response.size == (size if size == "1024x1024" else None)  # only spec-allowed sizes are echoed


def test_seed_client_python_b64_and_chinese_labels(client):
    response = client.images.generate(
        model="nano-banana-2", prompt="一只猫", n=2, size="512x512", response_format="b64_json",
        extra_body={"style": "动漫", "quality": "高清", "seed": 11},
    )
    assert len(response.data) == 2
    images = [base64.b64decode(d.b64_json) for d in response.data]
    assert all(_image(b).size == (512, 512) for b in images)
    assert images[0] != images[1]  # per-image noise
    assert response.data[0].revised_prompt.startswith("anime style illustration of 一只猫")


def test_quality_maps_to_steps_and_is_echoed_only_when_spec_allows(client, server, gated):
    gated.batches.clear()
    raw = client.images.with_raw_response.generate(model="tiny-random", prompt="quality probe", extra_body={"quality": "high"})
    assert raw.parse().quality == "high"
    service = server.state.service
    assert service.quality.plan("high").steps == 15 and service.quality.plan("hd").steps == 15  # tiny default: 10 steps
    assert client.images.generate(prompt="q2", quality="hd").quality is None


def test_async_semaphore_batch_pattern(server, gated):
    """Many prompts through AsyncOpenAI + Semaphore + gather, counting successes and failures."""
    gated.batches.clear()
    gated.gate.clear()

    async def main():
        client = openai.AsyncOpenAI(api_key="k", base_url=server.api_url, max_retries=0, _strict_response_validation=True)
        semaphore = asyncio.Semaphore(8)

        async def one(prompt):
            async with semaphore:
                try:
                    r = await client.images.generate(
                        model="nano-banana-2", prompt=prompt, response_format="b64_json", extra_body={"seed": 3}
                    )
                    return r.data[0].b64_json
                except openai.APIError:
                    return None

        tasks = [asyncio.ensure_future(one(f"prompt {i}")) for i in range(8)]
        # let every request queue behind the closed gate, then open it: they batch
        worker = server.state.service.worker
        await asyncio.to_thread(wait_until, lambda: gated.waiting + worker.depth() == 8, 10, "all requests held or queued")
        gated.gate.set()
        results = await asyncio.gather(*tasks)
        await client.close()
        return results

    try:
        results = asyncio.run(main())
    finally:
        gated.gate.set()
    assert sum(r is not None for r in results) == 8
    assert max(len(b) for b in gated.batches) == 4  # --max-batch 4
    # batched images are exactly the images made alone
    alone = openai.OpenAI(api_key="k", base_url=server.api_url, max_retries=0).images.generate(
        prompt="prompt 5", response_format="b64_json", extra_body={"seed": 3, "output_format": "png"}
    )
    assert base64.b64decode(alone.data[0].b64_json) == base64.b64decode(results[5])


def test_seeded_requests_are_cached(server):
    body = {"prompt": "cache me", "seed": 1234, "response_format": "b64_json"}
    first = httpx.post(f"{server.api_url}/images/generations", json=body)
    second = httpx.post(f"{server.api_url}/images/generations", json=body)
    other = httpx.post(f"{server.api_url}/images/generations", json={**body, "steps": 3})
    unseeded = httpx.post(f"{server.api_url}/images/generations", json={"prompt": "cache me"})
    assert first.headers["x-cache"] == "miss" and second.headers["x-cache"] == "hit" and other.headers["x-cache"] == "miss"
    assert "x-cache" not in unseeded.headers
    assert first.json()["data"] == second.json()["data"]
    assert first.json()["data"] != other.json()["data"]
    assert server.metric("nanoedge_cache_hits_total") >= 1


@pytest.mark.parametrize("fmt,magic", [("jpeg", b"\xff\xd8\xff"), ("webp", b"RIFF")])
def test_output_formats(client, fmt, magic):
    response = client.images.generate(prompt="fmt", response_format="b64_json", output_format=fmt, extra_body={"output_compression": 50})
    assert base64.b64decode(response.data[0].b64_json).startswith(magic)
    assert response.output_format == fmt


def test_models_endpoints(client):
    ids = [m.id for m in client.models.list().data]
    assert ids == ["tiny-random", "nano-banana-2"]
    assert client.models.retrieve("nano-banana-2").id == "nano-banana-2"
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("dall-e-3")
    assert err.value.code == "model_not_found"


# -- errors ------------------------------------------------------------------------------------
BAD_FIELDS = [
    ({"prompt": None}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": 42}, "prompt"),
    ({"prompt": "x" * 32001}, "prompt"),
    ({"n": 0}, "n"),
    ({"n": 11}, "n"),
    ({"n": "2"}, "n"),
    ({"n": 1.5}, "n"),
    ({"n": True}, "n"),
    ({"size": "banana"}, "size"),
    ({"size": "4096x4096"}, "size"),
    ({"size": "100x100"}, "size"),
    ({"size": "512x64"}, "size"),
    ({"size": 512}, "size"),
    ({"quality": "ultra"}, "quality"),
    ({"quality": 1}, "quality"),
    ({"style": "cubism"}, "style"),
    ({"style": ["anime"]}, "style"),
    ({"response_format": "jpeg"}, "response_format"),
    ({"output_format": "gif"}, "output_format"),
    ({"output_compression": 101}, "output_compression"),
    ({"output_compression": -1}, "output_compression"),
    ({"user": 5}, "user"),
    ({"model": 3}, "model"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**64}, "seed"),
    ({"seed": "7"}, "seed"),
    ({"steps": 0}, "steps"),
    ({"steps": 100000}, "steps"),
    ({"guidance_scale": -1}, "guidance_scale"),
    ({"guidance_scale": "high"}, "guidance_scale"),
    ({"guidance_scale": 1e9}, "guidance_scale"),
    ({"negative_prompt": 5}, "negative_prompt"),
    ({"scheduler": "warp-drive"}, "scheduler"),
    ({"scheduler": 1}, "scheduler"),
    ({"stream": "yes"}, "stream"),
    ({"stream": True, "partial_images": 4}, "partial_images"),
    ({"stream": True, "response_format": "url"}, "response_format"),
    ({"background": "transparent"}, "background"),
    ({"moderation": "none"}, "moderation"),
    ({"partial_images": 2}, "partial_images"),
    ({"negative_promt": "typo"}, "negative_promt"),
]


@pytest.mark.parametrize("fields,param", BAD_FIELDS, ids=[f"{p}={str(f[p])[:12]}" for f, p in BAD_FIELDS])
def test_every_invalid_field_is_a_400_envelope(server, fields, param):
    body = {"prompt": "a red bicycle", **fields}
    response = httpx.post(f"{server.api_url}/images/generations", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]
    assert response.headers["x-request-id"].startswith("req_")


@pytest.mark.parametrize(
    "content,content_type",
    [
        (b"{not json", "application/json"),
        (b"", "application/json"),
        (b"[1, 2]", "application/json"),
        (b"\xff\xfe", "text/plain"),
        (b'"prompt"', "application/json"),
    ],
)
def test_malformed_bodies_are_400_not_422(server, content, content_type):
    response = httpx.post(f"{server.api_url}/images/generations", content=content, headers={"content-type": content_type})
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_sdk_surfaces_400_as_bad_request(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.images.generate(prompt="x", size="banana")
    assert err.value.status_code == 400 and err.value.param == "size"
    assert err.value.request_id and err.value.request_id.startswith("req_")


def test_null_means_not_given(client):
    # the Python SDK sends null for arguments passed as None
    response = client.images.generate(prompt="nulls", n=None, size=None, quality=None, style=None, response_format=None, user=None)
    assert len(response.data) == 1 and response.data[0].url


def test_not_found_paths(server):
    bad_model = httpx.post(f"{server.api_url}/images/generations", json={"prompt": "x", "model": "gpt-image-1"})
    assert bad_model.status_code == 404 and bad_model.json()["error"]["code"] == "model_not_found"
    for name in ["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.png", "..%2F..%2Fetc%2Fpasswd", "%2e%2e", "x.png"]:
        response = httpx.get(f"{server.api_url}/images/files/{name}")
        assert response.status_code == 404
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    route = httpx.get(f"{server.api_url}/nothing-here")
    assert route.status_code == 404 and route.json()["error"]["code"] == "unknown_url"
    method = httpx.get(f"{server.api_url}/images/generations")
    assert method.status_code == 405 and "error" in method.json()


def test_oversized_body_is_refused(server):
    response = httpx.post(
        f"{server.api_url}/images/generations", content=b"{" + b" " * (2 << 20) + b"}", headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"


def test_flood_of_bad_requests_then_a_good_one(server):
    async def flood():
        async with httpx.AsyncClient(base_url=server.api_url, timeout=30) as http:
            bad = [http.post("/images/generations", json={"prompt": 1, "n": i}) for i in range(150)]
            bad += [
                http.post("/images/generations", content=b"\x00" * 100, headers={"content-type": "application/json"}) for _ in range(50)
            ]
            responses = await asyncio.gather(*bad)
            good = await http.post("/images/generations", json={"prompt": "still alive", "response_format": "b64_json"})
            return responses, good

    responses, good = asyncio.run(flood())
    assert {r.status_code for r in responses} == {400}
    assert good.status_code == 200 and base64.b64decode(good.json()["data"][0]["b64_json"]).startswith(PNG_MAGIC)


def test_client_disconnect_drops_queued_work(server, gated):
    gated.gate.clear()
    gated.batches.clear()
    dropped_before = server.metric("nanoedge_dropped_requests_total")
    try:
        with httpx.Client(base_url=server.api_url) as http:
            import threading

            holder = threading.Thread(target=http.post, args=("/images/generations",), kwargs={"json": {"prompt": "holder"}, "timeout": 30})
            holder.start()
            wait_until(lambda: gated.started.is_set() and server.state.service.worker.busy(), message="worker busy")
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{server.api_url}/images/generations", json={"prompt": "leaver"}, timeout=0.5)
            wait_until(lambda: server.metric("nanoedge_dropped_requests_total") > dropped_before, message="dropped counter")
            time.sleep(0.1)
            assert server.metric("nanoedge_dropped_requests_total") == dropped_before + 1  # counted once
            gated.gate.set()
            holder.join(30)
    finally:
        gated.gate.set()
    assert all("leaver" not in batch for batch in gated.batches)
    assert httpx.post(f"{server.api_url}/images/generations", json={"prompt": "after"}).status_code == 200


def test_metrics_exposition(server):
    text = httpx.get(f"{server.base_url}/metrics").text
    for name in [
        "nanoedge_requests_total",
        "nanoedge_request_duration_seconds_bucket",
        "nanoedge_queue_depth",
        "nanoedge_images_generated_total",
        "nanoedge_cache_hits_total",
        "nanoedge_batch_images_bucket",
        "nanoedge_ready 1",
    ]:
        assert name in text
    assert 'path="/v1/images/generations",status="200"' in text
    assert "/v1/images/files/{name}" in text or "files" not in text


def test_health_endpoints_and_request_ids(server):
    health = httpx.get(f"{server.base_url}/healthz")
    ready = httpx.get(f"{server.base_url}/readyz")
    assert health.status_code == 200 and ready.status_code == 200 and ready.json()["model"] == "tiny-random"
    assert health.headers["x-request-id"] != ready.headers["x-request-id"]


def test_image_urls_ignore_the_host_header(server):
    response = httpx.post(f"{server.api_url}/images/generations", json={"prompt": "a lighthouse"}, headers={"Host": "evil.example"})
    assert response.status_code == 200
    url = response.json()["data"][0]["url"]
    assert url.startswith(f"http://127.0.0.1:{server.port}/v1/images/files/") and "evil" not in url
    assert httpx.get(url).status_code == 200


def test_public_url_wins_over_the_bound_address():
    from starlette.requests import Request

    from nanoedge.runtime.server.app import _public_url
    from nanoedge.runtime.server.settings import ServerSettings

    scope = {"type": "http", "scheme": "http", "server": ("::1", 8000), "headers": [(b"host", b"evil.example")]}
    assert _public_url(Request(scope), ServerSettings(), "/f.png") == "http://[::1]:8000/f.png"
    assert _public_url(Request(scope), ServerSettings(public_url="https://box.local/img/"), "/f.png") == "https://box.local/img/f.png"
    scope["server"] = ("10.0.0.5", 80)
    assert _public_url(Request(scope), ServerSettings(), "/f.png") == "http://10.0.0.5/f.png"

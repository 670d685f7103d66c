"""Conformance against the official OpenAI spec (shared/reference/openai/spec_images.yaml).

The spec is the oracle, read with openapi-core: every request below is first checked to be a
valid ``createImage`` request, and every answer is checked against the spec's response schema
(``ImagesResponse``, ``ListModelsResponse``, ``Model``; ``ErrorResponse`` for errors). The
request matrix is generated from the spec itself: every enum value of every
``CreateImageRequest`` field we can honour.
"""

from __future__ import annotations

import json

import httpx
import pytest
from server_support import SPEC_PATH, serve

from nanoedge.runtime.pipeline import Pipeline

openapi_core = pytest.importorskip("openapi_core")
pytest.importorskip("uvicorn")

from openapi_core.testing import MockRequest, MockResponse  # noqa: E402

SPEC_HOST = "https://api.openai.com"
# Values the spec allows that a local diffusion server refuses on purpose (with a 400).
UNSUPPORTED = {("background", "transparent")}


@pytest.fixture(scope="module")
def spec():
    if not SPEC_PATH.is_file():
        pytest.skip(f"official spec not found at {SPEC_PATH}")
    return openapi_core.OpenAPI.from_file_path(str(SPEC_PATH))


@pytest.fixture(scope="module")
def server(tiny_package, tmp_path_factory):
    with serve(Pipeline.load(tiny_package), aliases=("nano-banana-2",), cache_dir=None) as running:
        yield running


def _enum_values(schema: dict) -> list:
    if "enum" in schema:
        return list(schema["enum"])
    values: list = []
    for option in schema.get("anyOf", []):
        values += _enum_values(option)
    return values


def _spec_request(method: str, path: str, body: dict | None = None) -> MockRequest:
    data = json.dumps(body) if body is not None else None
    return MockRequest(SPEC_HOST, method, f"/v1{path}", data=data, content_type="application/json" if body is not None else None,
                       headers={"Authorization": "Bearer test"})


def _check_error(spec, response: httpx.Response) -> None:
    """Errors are not listed under the spec's paths; check them against its ErrorResponse."""
    from openapi_schema_validator import OAS31Validator

    schema = {"$ref": "#/components/schemas/ErrorResponse", "components": SPEC["components"]}
    OAS31Validator(schema).validate(response.json())


def stream_events(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def _check_events(response: httpx.Response) -> list[tuple[str, dict]]:
    """Every server-sent event against the spec's ImageGenStreamEvent (the text/event-stream answer)."""
    from openapi_schema_validator import OAS31Validator

    # ImageGenStreamEvent's discriminator has no mapping (its values are not schema names), so
    # each event is checked against the member schema its type names.
    members = {"image_generation.partial_image": "ImageGenPartialImageEvent", "image_generation.completed": "ImageGenCompletedEvent"}
    assert set(members) == {SPEC["components"]["schemas"][m]["properties"]["type"]["enum"][0] for m in members.values()}
    events = stream_events(response.text)
    for name, data in events:
        assert name == data["type"] and name in members
        OAS31Validator({"$ref": f"#/components/schemas/{members[name]}", "components": SPEC["components"]}).validate(data)
    return events


def _check(spec, server, method: str, path: str, body: dict | None = None) -> httpx.Response:
    request = _spec_request(method, path, body)
    if body is not None:
        spec.validate_request(request)  # the oracle agrees this is a valid request
    response = httpx.request(method.upper(), f"{server.api_url}{path}", json=body, timeout=60)
    if response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream"):
        _check_events(response)
    elif response.status_code == 200:
        spec.validate_response(request, MockResponse(response.content, status_code=200, content_type="application/json"))
    else:
        _check_error(spec, response)
    return response


def _field_cases(spec_dict: dict) -> list[tuple[str, object]]:
    properties = spec_dict["components"]["schemas"]["CreateImageRequest"]["properties"]
    cases = []
    for name, schema in properties.items():
        for value in _enum_values(schema):
            cases.append((name, value))
    return cases


def _load_spec_dict() -> dict:
    import yaml

    return (
        yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
        if SPEC_PATH.is_file()
        else {"components": {"schemas": {"CreateImageRequest": {"properties": {}}}}}
    )


SPEC = _load_spec_dict()
FIELD_CASES = [(n, v) for n, v in _field_cases(SPEC) if n != "model"]


def test_matrix_comes_from_the_spec():
    names = {n for n, _ in FIELD_CASES}
    assert {"quality", "size", "response_format", "output_format", "style", "background", "moderation"} <= names


@pytest.mark.parametrize("name,value", FIELD_CASES, ids=[f"{n}={v}" for n, v in FIELD_CASES])
def test_every_spec_enum_value(spec, server, name, value):
    body = {"prompt": "a lighthouse at dusk", "model": "nano-banana-2", name: value}
    if name != "response_format":
        body["response_format"] = "b64_json"
    response = _check(spec, server, "post", "/images/generations", body)
    if (name, value) in UNSUPPORTED:
        assert response.status_code == 400 and response.json()["error"]["param"] == name
    else:
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("n", [1, 10])
def test_n_bounds_and_defaults(spec, server, n):
    response = _check(
        spec, server, "post", "/images/generations", {"prompt": "n images", "n": n, "response_format": "b64_json", "size": "256x256"}
    )
    assert len(response.json()["data"]) == n


def test_minimal_request_and_url_default(spec, server):
    response = _check(spec, server, "post", "/images/generations", {"prompt": "minimal"})
    assert set(response.json()["data"][0]) == {"url", "revised_prompt"}  # spec default response_format is url


def test_models(spec, server):
    listing = _check(spec, server, "get", "/models")
    assert {m["id"] for m in listing.json()["data"]} == {"tiny-random", "nano-banana-2"}
    _check(spec, server, "get", "/models/nano-banana-2")
    assert _check(spec, server, "get", "/models/not-a-model").status_code == 404


def test_errors_match_the_spec_error_schema(spec, server):
    assert _check(spec, server, "post", "/images/generations", {"prompt": "x", "model": "dall-e-2"}).status_code == 404
    bad = httpx.post(f"{server.api_url}/images/generations", json={"prompt": "x", "n": 0})
    assert bad.status_code == 400
    _check_error(spec, bad)


def test_streamed_events_match_the_spec(spec, server):
    body = {"prompt": "a lighthouse at dusk", "stream": True, "partial_images": 3, "size": "1024x1024", "quality": "high", "steps": 9}
    response = _check(spec, server, "post", "/images/generations", body)
    events = _check_events(response)
    kinds = [name for name, _ in events]
    assert kinds == ["image_generation.partial_image"] * 3 + ["image_generation.completed"]
    assert [data["partial_image_index"] for _, data in events[:3]] == [0, 1, 2]
    final = events[-1][1]
    assert final["size"] == "1024x1024" and final["quality"] == "high" and final["background"] == "auto" and final["output_format"] == "png"
    assert final["usage"]["input_tokens"] > 0 and final["usage"]["output_tokens"] == 0

"""No request body can make the server answer 5xx or fail somebody else's request.

Two generated attacks on a live server on 127.0.0.1 (tiny model):

* a hypothesis property: arbitrary JSON values (any code point, lone surrogates included;
  deep nesting; huge numbers; NaN; any field names) in every field, each sent while three
  valid requests queue behind a held worker and then share one batch (with the fuzzed one
  too, when it is valid and compatible). The fuzzed request must get 200 or a 4xx OpenAI
  envelope, never 5xx; the valid ones must all get 200.
* schemathesis against the server's own ``/openapi.json``: 0 server errors and 0 answers
  that break the document's response schemas or list an undocumented status.

Example counts are bounded so the file runs in about a minute on 2 shared cores.
"""

from __future__ import annotations

import concurrent.futures
import json

import httpx
import pytest
from server_support import GatedPipeline, serve, wait_until

from nanoedge.runtime.pipeline import Pipeline
from nanoedge.runtime.server.validation import FIELDS

pytest.importorskip("uvicorn")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ENVELOPE_KEYS = {"message", "type", "param", "code"}


# -- strategies --------------------------------------------------------------------------------
class Raw(str):
    """A JSON fragment inserted as is (what json.dumps cannot or will not write)."""


_chars = st.one_of(
    st.characters(),
    st.integers(0xD800, 0xDFFF).map(chr),  # lone surrogates: hypothesis' characters() leaves them out
    st.sampled_from(["\u200b", "\u200d", "\ufeff", "\u2060", "\x00", "\u2028", "\U0010ffff", " ", "x"]),
)
_text = st.lists(_chars, max_size=12).map("".join)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(),  # NaN and infinities included: json.dumps writes them as non-standard literals
    _text,
)
_json_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3), max_leaves=6)
_raw_fragments = st.one_of(
    st.integers(min_value=1, max_value=100_000).map(lambda d: Raw("[" * d + "]" * d)),
    st.integers(min_value=1, max_value=20_000).map(lambda k: Raw("9" * k)),
    st.sampled_from(
        [Raw("NaN"), Raw("-Infinity"), Raw("1e999"), Raw('"\\ud800"'), Raw('"\\udfff red"'), Raw("2.0"), Raw("0.0"), Raw("-0")]
    ),
)
_plausible = {
    "prompt": st.sampled_from(["a red circle", "\u200b\u200b", "  ", "猫", "\ud800 red", "x" * 40000]),
    "n": st.sampled_from([1, 2, 2.0, 0, 11, -1]),
    "size": st.sampled_from(["64x64", "auto", "128x64", "64X64", "²", "65x64", "8x8", "99999x99999", "64x64\ud800"]),
    "steps": st.sampled_from([1, 2, 3.0, 0, 501]),
    "seed": st.sampled_from([0, 7, 2**63, -1, 1.5]),
    "partial_images": st.sampled_from([0, 0.0, 1, False]),
    "stream": st.sampled_from([False, 0, True]),
    "scheduler": st.sampled_from(["euler", "ddim", "warp", "lcm"]),
    "guidance_scale": st.sampled_from([0, 1.0, 7.5, 50.0001]),
    "negative_prompt": st.one_of(_text, st.sampled_from(["", "blurry", "\udfff"])),
    "response_format": st.sampled_from(["b64_json", "url", "URL"]),
    "output_format": st.sampled_from(["png", "jpeg", "webp", "gif"]),
    "style": st.sampled_from(["anime", "动漫", "\u200b"]),
    "quality": st.sampled_from(["hd", "HD", "标准", "ultra"]),
}
_field_names = st.one_of(st.sampled_from([f.name for f in FIELDS]), _text)


@st.composite
def bodies(draw) -> bytes:
    """One body in three: chaos (random names, values and raw fragments, random bytes); two in
    three: near-valid (a hostile or plausible prompt plus known fields with edge values), so
    that many bodies pass validation and reach the worker next to the valid requests."""
    mode = draw(st.integers(0, 2))
    if mode == 0 and draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=40))
    fields: dict = {}
    if mode == 0:
        fields = draw(st.dictionaries(_field_names, st.one_of(_json_values, _raw_fragments), max_size=4))
    else:
        for name in draw(st.lists(st.sampled_from(sorted(_plausible)), max_size=3, unique=True)):
            fields[name] = draw(_plausible[name])
        if draw(st.integers(0, 4)) == 0:  # one known field with an arbitrary value
            fields[draw(st.sampled_from([f.name for f in FIELDS]))] = draw(st.one_of(_json_values, _raw_fragments))
    if mode or draw(st.booleans()):  # mostly a prompt, often hostile: the field the tokenizer reads
        fields["prompt"] = draw(st.one_of(_text, _plausible["prompt"], st.just("a blue square")))
    parts = [json.dumps(k) + ":" + (v if isinstance(v, Raw) else json.dumps(v)) for k, v in fields.items()]
    return ("{" + ",".join(parts) + "}").encode("utf-8", "surrogatepass")


# -- the property ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gated(tiny_package):
    return GatedPipeline(Pipeline.load(tiny_package))


@pytest.fixture(scope="module")
def server(gated):
    with serve(gated, cache_dir=None, max_batch=8, max_queue=16, request_timeout_s=60) as running:
        yield running


def _check_envelope(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text[:300]
    if response.status_code != 200:
        error = response.json()["error"]
        assert set(error) == ENVELOPE_KEYS and isinstance(error["message"], str) and error["message"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(body=bodies())
def test_no_body_gives_5xx_or_fails_batch_mates(server, gated, body):
    url = f"{server.api_url}/images/generations"
    worker = server.state.service.worker
    valid = {"prompt": "a valid neighbour", "response_format": "b64_json"}
    with httpx.Client(timeout=60) as http, concurrent.futures.ThreadPoolExecutor(5) as pool:
        gated.gate.clear()
        try:
            holder = pool.submit(http.post, url, json={"prompt": "holder", "size": "128x128", "steps": 1, "response_format": "b64_json"})
            wait_until(lambda: gated.waiting == 1, message="worker held")
            fuzzed = pool.submit(http.post, url, content=body, headers={"content-type": "application/json"})
            mates = [pool.submit(http.post, url, json=valid) for _ in range(3)]
            wait_until(lambda: worker.depth() >= 3 and (fuzzed.done() or worker.depth() == 4), message="batch queued")
        finally:
            gated.gate.set()
        _check_envelope(fuzzed.result())
        assert holder.result().status_code == 200
        for mate in mates:
            assert mate.result().status_code == 200, mate.result().text[:300]


def test_lone_surrogate_prompt_cannot_fail_its_batch(server, gated):
    """The reported case: '\\ud800 red' queued with three valid requests. It is refused at the
    edge (400, param prompt); the three others share a batch and get 200."""
    body = b'{"prompt": "\\ud800 red", "response_format": "b64_json"}'
    with httpx.Client(timeout=60) as http:
        bad = http.post(f"{server.api_url}/images/generations", content=body, headers={"content-type": "application/json"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "prompt"
        for name in ("model", "size", "negative_prompt", "user"):
            body = b'{"prompt": "ok", "%s": "\\udc00"}' % name.encode()
            answer = http.post(f"{server.api_url}/images/generations", content=body, headers={"content-type": "application/json"})
            assert answer.status_code == 400 and answer.json()["error"]["param"] == name, answer.text
        field_name = http.post(
            f"{server.api_url}/images/generations", content=b'{"prompt": "ok", "\\ud800x": 1}', headers={"content-type": "application/json"}
        )
        assert field_name.status_code == 400 and field_name.json()["error"]["code"] == "unknown_parameter"
        assert field_name.json()["error"]["param"] == "\\ud800x"
        for path in ("/v1/models/%ED%A0%80", "/v1/models/%FF%FE", "/v1/images/files/%ED%A0%80.png", "/v1/%00"):
            answer = http.get(server.base_url + path)
            assert 400 <= answer.status_code < 500 and set(answer.json()["error"]) == ENVELOPE_KEYS, (path, answer.text)


# -- schemathesis against /openapi.json --------------------------------------------------------
schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)


@pytest.fixture(scope="module")
def contract_server(tiny_package):
    with serve(Pipeline.load(tiny_package), aliases=("nano-banana-2",), cache_dir=None, request_timeout_s=30) as running:
        yield running


@pytest.fixture(scope="module")
def api_schema(contract_server):
    return schemathesis.openapi.from_url(f"{contract_server.base_url}/openapi.json")


contract = schemathesis.pytest.from_fixture("api_schema")


@contract.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_openapi_contract(case):
    case.call_and_validate(checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance])


def test_openapi_document_follows_the_validation_table(contract_server):
    from openapi_spec_validator import validate

    document = httpx.get(f"{contract_server.base_url}/openapi.json").json()
    validate(document)  # a valid OpenAPI 3.1 document
    request = document["components"]["schemas"]["CreateImageRequest"]
    assert set(request["properties"]) == {f.name for f in FIELDS} and request["required"] == ["prompt"]
    steps = next(f for f in FIELDS if f.name == "steps")
    assert request["properties"]["steps"]["maximum"] == steps.maximum
    assert "nano-banana-2" in request["properties"]["model"]["examples"]
    assert "anime" in request["properties"]["style"]["enum"]

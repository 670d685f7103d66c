"""The playground routes without a browser: who may load the page, what it offers, and that
nothing in it comes from outside the box."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from server_support import serve

from nanoedge.runtime.pipeline import Pipeline

pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def pipeline(tiny_package):
    return Pipeline.load(tiny_package)


def _config(page: str) -> dict:
    match = re.search(r'<script type="application/json" id="config">(.*?)</script>', page, re.S)
    assert match
    return json.loads(match.group(1))


def test_page_is_self_contained_and_describes_the_api(pipeline):
    with serve(pipeline, aliases=("nano-banana-2",)) as server:
        root = httpx.get(server.base_url + "/")
        other = httpx.get(server.base_url + "/playground")
        models = httpx.get(server.api_url + "/models")
    assert root.status_code == other.status_code == 200
    assert root.headers["content-type"].startswith("text/html") and root.text == other.text
    assert "default-src 'self'" in root.headers["content-security-policy"]
    page = root.text
    # nothing is loaded from another origin: no absolute URLs in src/href/url()/import
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.I)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//|@import|<link\b", page, re.I)
    config = _config(page)
    assert config["model"] == pipeline.id and pipeline.id in {m["id"] for m in models.json()["data"]}
    assert config["default_size"] == "64x64" and "64x64" in config["sizes"] and "512x512" in config["sizes"]
    labels = {s["value"]: s["labels"] for s in config["styles"]}
    assert "动漫" in labels["anime"] and "写实风格" in labels["realistic"]
    assert [q["value"] for q in config["qualities"]] == ["standard", "hd", "low"]
    assert config["auth_required"] is False
    assert "/v1/images/generations" in page and "stream: true" in page


def test_open_page_with_keys_needs_no_key_but_the_api_does(pipeline):
    with serve(pipeline, api_keys=("k1",)) as server:
        page = httpx.get(server.base_url + "/")
        assert page.status_code == 200 and _config(page.text)["auth_required"] is True
        assert httpx.get(server.api_url + "/models").status_code == 401


def test_protected_page_takes_the_key_as_bearer_or_basic_password(pipeline):
    with serve(pipeline, api_keys=("k1", "k2"), playground="protected") as server:
        url = server.base_url + "/playground"
        missing = httpx.get(url)
        wrong = httpx.get(url, auth=("user", "nope"))
        basic = httpx.get(url, auth=("anyone", "k2"))
        bearer = httpx.get(url, headers={"Authorization": "Bearer k1"})
        garbage = httpx.get(url, headers={"Authorization": "Basic %%%"})
        metrics = httpx.get(server.base_url + "/metrics")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
    assert missing.headers["www-authenticate"].startswith('Basic realm="nanoedge playground"')
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert garbage.status_code == 401
    assert basic.status_code == 200 and bearer.status_code == 200
    assert metrics.status_code == 200  # only the page is protected by the flag


def test_playground_off_removes_the_routes(pipeline):
    with serve(pipeline, playground="off") as server:
        for path in ("/", "/playground"):
            response = httpx.get(server.base_url + path)
            assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_url"


def test_unknown_playground_mode_is_refused(pipeline):
    from nanoedge.runtime.server import ServerSettings, create_app

    with pytest.raises(ValueError, match="playground"):
        create_app(pipeline, ServerSettings(playground="public"))


def test_page_while_loading_says_so(pipeline):
    import threading

    gate = threading.Event()

    def slow_loader():
        gate.wait(20)
        return pipeline

    with serve(slow_loader, wait=False) as server:
        try:
            response = httpx.get(server.base_url + "/")
        finally:
            gate.set()
    assert response.status_code == 503 and "loading" in response.text and "refresh" in response.text

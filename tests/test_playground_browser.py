"""The playground page in a real headless Chromium (Debian's chromium + chromium-driver, driven
by selenium): generation with streamed previews, the API's error text, the API-key prompt, and
a phone-width screenshot.

Nothing downloads a browser: the system's /usr/bin/chromium and /usr/bin/chromedriver are used
(``make install`` installs them with apt-get). Where they are missing the tests fail and say
how to install them, so CI never passes without having run them.

``NANOEDGE_UPDATE_SCREENSHOT=1`` also writes the phone-width screenshot to
docs/playground-phone.png (the picture in docs/serving.md).
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image
from server_support import PNG_MAGIC, serve

from nanoedge.runtime.pipeline import Pipeline

pytest.importorskip("uvicorn")

INSTALL_HINT = "install them with: apt-get install -y chromium chromium-driver && pip install selenium (or run `make install`)"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage")
DOCS = Path(__file__).resolve().parents[1] / "docs"


def _binary(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser_paths() -> tuple[str, str]:
    chromium = _binary("chromium", "chromium-browser")
    driver = _binary("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.fail(f"selenium is not installed: the playground browser tests need it; {INSTALL_HINT}")
    if chromium is None or driver is None:
        pytest.fail(f"Chromium or its driver is missing (chromium: {chromium}, chromedriver: {driver}); {INSTALL_HINT}")
    return chromium, driver


@pytest.fixture
def browser(browser_paths, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = browser_paths
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument("--window-size=1200,900")
    driver_ = webdriver.Chrome(service=Service(driver), options=options)
    driver_.set_page_load_timeout(30)
    try:
        yield driver_
    finally:
        driver_.quit()


@pytest.fixture(scope="module")
def pipeline(tiny_package):
    return Pipeline.load(tiny_package)


def _wait(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _final_png(driver) -> bytes:
    src = driver.execute_script("const i = document.querySelector('#results img.final'); return i ? i.src : null;")
    assert src and src.startswith("data:image/png;base64,"), src
    return base64.b64decode(src.split(",", 1)[1])


def _generate(driver, prompt: str, size: str, steps: int) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, "size")).select_by_value(size)
    steps_box = driver.find_element(By.ID, "steps")
    steps_box.clear()
    steps_box.send_keys(str(steps))
    box = driver.find_element(By.ID, "prompt")
    box.clear()
    box.send_keys(prompt)
    box.send_keys(Keys.ENTER)  # Enter submits


def _record_partials(driver) -> None:
    """Count every preview the page shows, even if the final image replaces it quickly."""
    driver.execute_script("""
        window.__partials = 0;
        new MutationObserver((records) => {
          for (const r of records) if (r.target.matches('img.preview') && r.attributeName === 'src') window.__partials++;
        })
          .observe(document.getElementById('results'), {subtree: true, attributes: true, attributeFilter: ['src']});
    """)


def test_page_streams_previews_then_the_final_png(browser, pipeline, tmp_path):
    with serve(pipeline, aliases=("nano-banana-2",)) as server:
        browser.get(server.base_url + "/")
        assert "nanoedge playground" in browser.title
        _wait(lambda: browser.execute_script("return document.getElementById('model').options.length >= 2"), what="models from /v1/models")
        models = browser.execute_script("return [...document.getElementById('model').options].map(o => o.value)")
        assert pipeline.id in models and "nano-banana-2" in models
        styles = browser.execute_script("return document.getElementById('style').textContent")
        assert "动漫" in styles and "写实风格" in styles
        # every control has a label
        unlabeled = browser.execute_script(
            "return [...document.querySelectorAll('input, select, textarea')]"
            ".filter(e => !document.querySelector(`label[for='${e.id}']`)).map(e => e.id)")
        assert unlabeled == []
        _record_partials(browser)
        _generate(browser, "a red circle on the left", "512x512", 12)
        _wait(lambda: browser.execute_script("return document.querySelector('#results img.final') !== null"), what="the final image")
        partials = browser.execute_script("return window.__partials")
        png = _final_png(browser)
        history = browser.execute_script("return document.querySelectorAll('#history img').length")
        caption = browser.execute_script("return document.querySelector('#results figcaption').textContent")
        download = browser.execute_script("return document.querySelector('#results figcaption a').getAttribute('download')")
        _wait(lambda: browser.execute_script("return document.getElementById('m-images').textContent !== '–'"), what="the metrics panel")
        served = browser.execute_script("return document.getElementById('m-images').textContent")
        origins = browser.execute_script("return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)")
    assert set(origins) <= {server.base_url}, f"the page loaded something from elsewhere: {origins}"
    assert partials >= 1, "no partial preview was shown before the final image"
    assert png.startswith(PNG_MAGIC)
    assert Image.open(io.BytesIO(png)).size == (512, 512)
    assert history == 1
    assert caption.startswith("seed ") and " s" in caption
    assert download.startswith("nanoedge-") and download.endswith(".png")
    assert int(float(served)) >= 1


def test_page_shows_the_api_error(browser, pipeline):
    from selenium.webdriver.common.by import By

    with serve(pipeline) as server:
        browser.get(server.base_url + "/playground")
        _wait(lambda: browser.execute_script("return document.getElementById('model').options.length >= 1"), what="the form")
        # keyboard: the prompt has focus, Tab walks the form in reading order
        from selenium.webdriver.common.keys import Keys

        order = [browser.execute_script("return document.activeElement.id")]
        for _ in range(11):
            browser.switch_to.active_element.send_keys(Keys.TAB)
            order.append(browser.execute_script("return document.activeElement.id"))
        assert order == ["prompt", "negative_prompt", "size", "n", "style", "quality", "steps", "guidance_scale", "seed", "partial_images",
                         "model", "generate"]
        expected = httpx.post(f"{server.api_url}/images/generations", json={"prompt": "x", "steps": 501}).json()["error"]["message"]
        box = browser.find_element(By.ID, "steps")
        box.clear()
        box.send_keys("501")
        browser.find_element(By.ID, "prompt").send_keys("a blue square")
        browser.find_element(By.ID, "generate").click()
        text = _wait(lambda: browser.find_element(By.ID, "error").text, what="the error message")
    assert text == expected and "steps" in text


def test_page_asks_for_the_key_and_then_generates(browser, pipeline):
    from selenium.webdriver.common.by import By

    with serve(pipeline, api_keys=("sekrit-key",)) as server:
        assert httpx.get(server.base_url + "/").status_code == 200  # the page itself needs no key
        browser.get(server.base_url + "/")
        _wait(lambda: browser.execute_script("return document.getElementById('key-dialog').open"), what="the key prompt")
        key_box = browser.find_element(By.ID, "api-key")
        key_box.send_keys("wrong-key")
        browser.find_element(By.ID, "key-save").click()
        _wait(lambda: browser.execute_script("return document.getElementById('key-dialog').open"), what="the key prompt after a wrong key")
        reason = browser.find_element(By.ID, "key-reason").text
        assert "Incorrect API key" in reason
        key_box.send_keys("sekrit-key")
        browser.find_element(By.ID, "key-save").click()
        _wait(lambda: browser.execute_script(
            "return document.getElementById('model').options.length >= 1 && !document.getElementById('key-dialog').open"),
              what="the models after the key")
        stored = browser.execute_script("return [sessionStorage.getItem('nanoedge-api-key'), localStorage.length]")
        _generate(browser, "a green triangle", "64x64", 4)
        _wait(lambda: browser.execute_script("return document.querySelector('#results img.final') !== null"), what="the final image")
        png = _final_png(browser)
    assert stored == ["sekrit-key", 0]
    assert Image.open(io.BytesIO(png)).size == (64, 64)


def test_phone_width_screenshot(browser, tmp_path):
    """On the built-in demo model (it draws shapes), so the screenshot shows a real picture."""
    from selenium.webdriver.common.by import By

    with serve(Pipeline.load(None), aliases=("nano-banana-2",)) as server:
        browser.set_window_size(360, 1400)
        browser.get(server.base_url + "/")
        _wait(lambda: browser.execute_script("return document.getElementById('model').options.length >= 2"), what="the form")
        _generate(browser, "a red circle on the left", "512x512", 20)
        _wait(lambda: browser.execute_script("return document.querySelector('#results img.final') !== null"), what="the final image")
        browser.find_element(By.ID, "prompt").click()
        width = browser.execute_script("return document.documentElement.clientWidth")
        overflow = browser.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(360, min(max(height + 140, 800), 4000))
        shot = tmp_path / "playground-phone.png"
        assert browser.save_screenshot(str(shot))
    assert width <= 360 and overflow <= 0, "the page scrolls sideways at phone width"
    image = Image.open(shot)
    assert image.width <= 400 and image.height >= 600
    if os.environ.get("NANOEDGE_UPDATE_SCREENSHOT"):
        shutil.copyfile(shot, DOCS / "playground-phone.png")

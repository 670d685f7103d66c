"""The seed-clients calls and the streaming call from the official Node SDK (`npm install openai`).

The SDK is installed once into a cache folder (NANOEDGE_TEST_NODE_DIR, default
~/.cache/nanoedge/test-node); the test is skipped, with the reason, where node or npm is
missing or the install fails (no registry access).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from server_support import serve

from nanoedge.runtime.pipeline import Pipeline

pytest.importorskip("uvicorn")

NODE_SCRIPT = r"""
const mod = require(process.env.OPENAI_MODULE);
const OpenAI = mod.OpenAI || mod.default || mod;
const client = new OpenAI({ apiKey: "node-key", baseURL: process.env.BASE_URL, maxRetries: 0 });
(async () => {
  const out = {};
  const viaUrl = await client.images.generate({ model: "nano-banana-2", prompt: "A cute cartoon cat wearing sunglasses",
                                                size: "1024x1024", n: 1, response_format: "url" });
  out.created = viaUrl.created;
  out.url = viaUrl.data[0].url;
  const fetched = await fetch(out.url);
  const bytes = Buffer.from(await fetched.arrayBuffer());
  out.urlStatus = fetched.status;
  out.urlType = fetched.headers.get("content-type");
  out.urlMagic = bytes.subarray(0, 4).toString("hex");
  const viaB64 = await client.images.generate({ model: "nano-banana-2", prompt: "a fox", size: "512x512", n: 1,
                                                response_format: "b64_json", style: "anime" });
  out.b64Magic = Buffer.from(viaB64.data[0].b64_json, "base64").subarray(0, 4).toString("hex");
  out.revised = viaB64.data[0].revised_prompt;
  try {
    await client.images.generate({ model: "nano-banana-2", prompt: "x", size: "banana" });
    out.badStatus = "no error";
  } catch (error) {
    out.badStatus = error.status;
    out.badParam = error.param;
    out.badMessage = error.message;
  }
  try {
    await client.images.generate({ model: "no-such-model", prompt: "x" });
  } catch (error) {
    out.missingStatus = error.status;
    out.missingCode = error.code;
  }
  console.log(JSON.stringify(out));
})().catch((error) => { console.error(error); process.exit(1); });
"""


@pytest.fixture(scope="module")
def openai_node_module() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm not installed: the Node SDK test needs them")
    folder = Path(os.environ.get("NANOEDGE_TEST_NODE_DIR") or Path.home() / ".cache" / "nanoedge" / "test-node")
    module = folder / "node_modules" / "openai"
    if not (module / "package.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        try:
            result = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(folder), "openai@6"],
                                    capture_output=True, text=True, timeout=180)
        except subprocess.TimeoutExpired:
            pytest.skip("npm install openai timed out (no registry access?)")
        if result.returncode != 0 or not (module / "package.json").is_file():
            pytest.skip(f"npm install openai failed: {(result.stderr or result.stdout).strip()[-300:]}")
    return module


def test_node_sdk_seed_calls(openai_node_module, tiny_package, tmp_path):
    script = tmp_path / "client.js"
    script.write_text(NODE_SCRIPT)
    with serve(Pipeline.load(tiny_package), aliases=("nano-banana-2",)) as server:
        result = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=120,
                                env={**os.environ, "OPENAI_MODULE": str(openai_node_module), "BASE_URL": server.api_url})
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert isinstance(out["created"], int) and out["url"].endswith(".png")
    assert out["urlStatus"] == 200 and out["urlType"] == "image/png"
    assert out["urlMagic"] == "89504e47" and out["b64Magic"] == "89504e47"
    assert out["revised"].startswith("anime style illustration of a fox")
    assert out["badStatus"] == 400 and out["badParam"] == "size"
    assert out["missingStatus"] == 404 and out["missingCode"] == "model_not_found"


NODE_STREAM_SCRIPT = r"""
const mod = require(process.env.OPENAI_MODULE);
const OpenAI = mod.OpenAI || mod.default || mod;
const client = new OpenAI({ apiKey: "node-key", baseURL: process.env.BASE_URL, maxRetries: 0 });
(async () => {
  const out = { events: [] };
  const stream = await client.images.generate({ model: "nano-banana-2", prompt: "a lighthouse at dusk", size: "512x512",
                                                stream: true, partial_images: 2, steps: 10 });
  for await (const event of stream) {
    const png = Buffer.from(event.b64_json, "base64");
    out.events.push({ type: event.type, index: event.partial_image_index, magic: png.subarray(0, 4).toString("hex"),
                      width: png.readUInt32BE(16), height: png.readUInt32BE(20), tokens: event.usage ? event.usage.input_tokens : null });
  }
  try {
    await client.images.generate({ model: "nano-banana-2", prompt: "x", stream: true, partial_images: 7 });
    out.badStatus = "no error";
  } catch (error) {
    out.badStatus = error.status;
    out.badParam = error.param;
  }
  console.log(JSON.stringify(out));
})().catch((error) => { console.error(error); process.exit(1); });
"""


def test_node_sdk_streams_partial_images(openai_node_module, tiny_package, tmp_path):
    script = tmp_path / "stream.js"
    script.write_text(NODE_STREAM_SCRIPT)
    with serve(Pipeline.load(tiny_package), aliases=("nano-banana-2",)) as server:
        result = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=120,
                                env={**os.environ, "OPENAI_MODULE": str(openai_node_module), "BASE_URL": server.api_url})
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert [e["type"] for e in out["events"]] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert [e["index"] for e in out["events"][:2]] == [0, 1]
    assert all(e["magic"] == "89504e47" for e in out["events"])
    assert [(e["width"], e["height"]) for e in out["events"]] == [(64, 64), (64, 64), (512, 512)]  # previews at the run size
    assert out["events"][-1]["tokens"] > 0
    assert out["badStatus"] == 400 and out["badParam"] == "partial_images"

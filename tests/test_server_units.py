"""The server's parts one by one: sizes, quality, styles, cache, file store, worker, metrics,
validation and key loading. Fast; only the worker slicing test runs the tiny model."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time

import pytest

from nanoedge.core.manifest import Manifest
from nanoedge.core.sizes import Size, SizeRules
from nanoedge.runtime.pipeline import GenerationCancelled, GenerationResult, ResolvedRequest

pytest.importorskip("starlette")

from nanoedge.runtime.server.cache import ResultCache, package_fingerprint  # noqa: E402
from nanoedge.runtime.server.errors import APIError  # noqa: E402
from nanoedge.runtime.server.files import ImageStore  # noqa: E402
from nanoedge.runtime.server.metrics import Metrics  # noqa: E402
from nanoedge.runtime.server.quality import QualityTable  # noqa: E402
from nanoedge.runtime.server.sizing import SizePlanner  # noqa: E402
from nanoedge.runtime.server.styles import StyleBook  # noqa: E402
from nanoedge.runtime.server.validation import parse_image_request, parse_json_body  # noqa: E402
from nanoedge.runtime.server.worker import InferenceWorker, QueueFull, WorkerStopped  # noqa: E402


def test_runtime_import_stays_lean():
    code = (
        "import sys, nanoedge.runtime, nanoedge.runtime.pipeline\n"
        "assert not {'starlette', 'uvicorn', 'fastapi'} & set(sys.modules), 'runtime imported the server stack'\n"
        "import nanoedge.runtime.server, nanoedge.cli.serve_cmd\n"
        "bad = {'torch', 'diffusers', 'transformers'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# -- sizes -------------------------------------------------------------------------------------
DYNAMIC = SizeRules(native=Size(64, 64), multiple_of=16, minimum=16, maximum=2048)


def test_size_plan_dynamic():
    planner = SizePlanner(DYNAMIC, default="64x64")
    assert planner.plan(None).run == Size(64, 64) and planner.plan("auto").output == Size(64, 64)
    big = planner.plan("1024x1024")
    assert big.run == Size(64, 64) and big.output == Size(1024, 1024)
    wide = planner.plan("1536x1024")
    assert wide.output == Size(1536, 1024) and wide.run.width > wide.run.height and wide.run.width * wide.run.height <= 64 * 64
    assert planner.plan("48x48").run == Size(48, 48)  # small sizes run directly
    odd = planner.plan("40x40")  # not a multiple of 16: run at 32, resize to 40
    assert odd.run == Size(32, 32) and odd.output == Size(40, 40)
    assert SizePlanner(DYNAMIC, max_pixels=256 * 256).plan("256x256").run == Size(256, 256)


@pytest.mark.parametrize("size", ["banana", "4096x4096", "100x100", "512x64", "8x8"])
def test_size_plan_rejects(size):
    with pytest.raises(APIError) as err:
        SizePlanner(DYNAMIC).plan(size)
    assert err.value.status == 400 and err.value.param == "size"


def test_size_plan_static_and_declared_outputs():
    static = SizeRules(native=Size(64, 64), multiple_of=16, minimum=16, maximum=2048, static=Size(64, 64))
    planner = SizePlanner(static)
    assert planner.plan("1024x1024").run == Size(64, 64)
    with pytest.raises(APIError):
        planner.plan("1536x1024")
    declared = dataclasses.replace(DYNAMIC, output=(Size(96, 96),))
    assert SizePlanner(declared, max_pixels=10**6).plan("96x96").run == Size(64, 64)  # the manifest's resize list wins


# -- quality and styles ------------------------------------------------------------------------
def test_quality_table():
    table = QualityTable.from_manifest(Manifest({"defaults": {"steps": 10}}))
    assert {q: table.plan(q).steps for q in ("low", "standard", "medium", "auto", "high", "hd")} == {
        "low": 5, "standard": 10, "medium": 10, "auto": 10, "high": 15, "hd": 15}
    assert table.plan(None).steps == 10
    assert QualityTable.canonical("高清") == "hd" and QualityTable.canonical("HD") == "hd" and QualityTable.canonical("ultra") is None
    declared = QualityTable.from_manifest(Manifest({"defaults": {"steps": 4}, "quality": {"hd": {"steps": 8}, "low": 1, "bogus": 3}}))
    assert declared.plan("hd").steps == 8 and declared.plan("low").steps == 1 and declared.plan("high").steps == 6


def test_styles():
    book = StyleBook.from_manifest(
        Manifest(
            {
                "styles": {
                    "ink": {"prompt": "ink wash painting of {prompt}", "negative_prompt": "color", "aliases": ["水墨"]},
                    "anime": "{prompt}, studio anime",
                    "plain": {"prompt": "flat"},
                }
            }
        )
    )
    for label, name in [
        ("动漫", "anime"),
        ("写实风格", "realistic"),
        ("概念艺术", "concept_art"),
        ("极简", "minimalist"),
        ("Natural", "natural"),
        ("水墨", "ink"),
    ]:
        assert book.lookup(label).name == name
    assert book.lookup("cubism") is None
    prompt, negative = book.lookup("ink").apply("a crane", "blurry")
    assert prompt == "ink wash painting of a crane" and negative == "blurry, color"
    assert book.lookup("anime").apply("a cat", None)[0] == "a cat, studio anime"  # the package overrides a built-in
    assert book.lookup("plain").apply("x", None)[0] == "x, flat"


# -- validation --------------------------------------------------------------------------------
def test_parse_request_null_is_not_given_and_defaults():
    request = parse_image_request(
        parse_json_body(b'{"prompt": "p", "n": null, "size": null, "quality": "HD", "style": null, "stream": false}'), StyleBook()
    )
    assert (
        request.n == 1
        and request.size is None
        and request.quality == "hd"
        and request.response_format == "url"
        and request.output_format == "png"
    )
    with pytest.raises(APIError) as err:
        parse_image_request({"prompt": "p", "extra": 1}, StyleBook())
    assert err.value.param == "extra"


@pytest.mark.parametrize(
    "raw,param,code",
    [
        (b'{"prompt": "\\ud800 red"}', "prompt", "invalid_value"),
        (b'{"prompt": "ok", "negative_prompt": "\\udfff"}', "negative_prompt", "invalid_value"),
        (b'{"prompt": "ok", "model": "\\ud800"}', "model", "invalid_value"),
        (b'{"prompt": "ok", "\\ud800": 1}', "\\ud800", "unknown_parameter"),
        (b'{"prompt": "\\u200b\\u200d\\ufeff "}', "prompt", "invalid_value"),
        (b'{"prompt": "ok", "size": "\xc2\xb2"}', "size", "invalid_value"),  # a Unicode digit, not ASCII
        (b'{"prompt": "ok", "n": 2.5}', "n", "invalid_type"),
        (b'{"prompt": "ok", "partial_images": 1.0}', "partial_images", "invalid_value"),
        (b'{"prompt": "ok", "stream": 0}', "stream", "unsupported_value"),
        (b'{"prompt": "ok", "n": ' + b"1" * 5000 + b"}", None, "invalid_value"),
        (b'{"prompt": "ok", "n": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None, "invalid_json"),
        (b'{"prompt": "ok", "guidance_scale": NaN}', None, "invalid_json"),
    ],
)
def test_edge_validation_rejects_what_later_stages_cannot_take(raw, param, code):
    with pytest.raises(APIError) as err:
        parse_image_request(parse_json_body(raw), StyleBook())
    assert (err.value.status, err.value.param, err.value.code) == (400, param, code)
    assert err.value.render().decode("ascii")  # always renderable, whatever the client sent


def test_integers_given_as_floats_are_accepted_everywhere():
    raw = b'{"prompt": "p", "n": 2.0, "steps": 3.0, "seed": 7.0, "output_compression": 50.0, "partial_images": 0.0}'
    request = parse_image_request(parse_json_body(raw), StyleBook())
    assert (request.n, request.steps, request.seed, request.output_compression) == (2, 3, 7, 50)
    assert all(type(v) is int for v in (request.n, request.steps, request.seed, request.output_compression))
    # brackets and digits inside strings are text, not structure
    assert parse_json_body(b'{"prompt": "[[[[' + b"9" * 500 + b'"}')["prompt"].startswith("[[[[")


def test_to_api_error_uses_the_exception_param():
    from nanoedge.core.errors import InvalidRequestError
    from nanoedge.runtime.server.errors import to_api_error

    error = to_api_error(InvalidRequestError("guidance must be a number", hint="0..50", param="guidance"))
    assert (error.status, error.param, error.message) == (400, "guidance_scale", "Guidance must be a number (0..50)")
    assert to_api_error(InvalidRequestError("lcm cannot run 99 steps", param="steps")).param == "steps"


# -- cache -------------------------------------------------------------------------------------
def test_result_cache_roundtrip_lru_and_damage(tmp_path):
    cache = ResultCache(tmp_path, max_bytes=2500, namespace="pkg")
    keys = [cache.key({"prompt": f"p{i}", "seed": 1}) for i in range(4)]
    assert len(set(keys)) == 4 and cache.key({"prompt": "p0", "seed": 2}) != keys[0]
    assert ResultCache(tmp_path / "other", 10, namespace="other-pkg").key({"prompt": "p0", "seed": 1}) != keys[0]
    cache.put(keys[0], [b"a" * 500, b"b" * 300], {"seed": 1})
    images, meta = cache.get(keys[0])
    assert images == [b"a" * 500, b"b" * 300] and meta == {"seed": 1}
    time.sleep(0.01)
    cache.put(keys[1], [b"c" * 800], {})
    time.sleep(0.01)
    cache.get(keys[0])  # touch: keys[1] is now the least recently used
    time.sleep(0.01)
    cache.put(keys[2], [b"d" * 800], {})
    assert cache.get(keys[1]) is None and cache.get(keys[0]) is not None and cache.total_bytes <= 2500
    reopened = ResultCache(tmp_path, max_bytes=2500, namespace="pkg")  # survives a restart
    assert reopened.get(keys[2])[0] == [b"d" * 800]
    path = next(tmp_path.glob(f"*/{keys[2]}.entry"))
    path.write_bytes(path.read_bytes()[:-10])  # truncated on disk
    assert reopened.get(keys[2]) is None and not path.exists()
    assert not list(tmp_path.glob("*/.*"))  # no temporary files left behind


def test_package_fingerprint_follows_file_hashes():
    files = {"unet/model.onnx": {"sha256": "aa"}, "vae/model.onnx": {"sha256": "bb"}}
    assert package_fingerprint(files) == package_fingerprint(dict(reversed(files.items())))
    assert package_fingerprint(files) != package_fingerprint({**files, "unet/model.onnx": {"sha256": "ab"}})


# -- file store --------------------------------------------------------------------------------
def test_image_store_names_expiry_and_escape(tmp_path, monkeypatch):
    store = ImageStore(tmp_path / "files", ttl_s=60, max_bytes=10_000)
    names = {store.put(b"png-bytes", "png") for _ in range(50)}
    assert len(names) == 50 and all(len(n) == 36 and n.endswith(".png") for n in names)
    name = sorted(names)[0]
    assert store.path_of(name).read_bytes() == b"png-bytes"
    (tmp_path / "secret.txt").write_text("secret")
    for evil in ["../secret.txt", "..", "/etc/passwd", name[:-4] + ".txt", name.replace(name[0], "/", 1), f"../files/{name}"]:
        assert store.path_of(evil) is None
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 61)
    assert store.path_of(name) is None
    assert store.sweep() == 50 and not list((tmp_path / "files").iterdir())


def test_image_store_size_bound_and_temp_cleanup():
    store = ImageStore(None, ttl_s=3600, max_bytes=1000)
    first = store.put(b"x" * 600, "webp")
    second = store.put(b"y" * 600, "jpeg")
    assert store.path_of(first) is None and store.path_of(second) is not None
    folder = store.directory
    store.close()
    assert not folder.exists()


# -- worker ------------------------------------------------------------------------------------
def _request(prompt: str, size: int = 64, n: int = 1, steps: int = 10, seed: int = 0) -> ResolvedRequest:
    return ResolvedRequest(prompt, "", n, seed, Size(size, size), Size(size, size), steps, 7.5, "default")


class RecordingPipeline:
    def __init__(self, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.fail_on = fail_on

    def generate_batch(self, requests, cancel=None):
        self.gate.wait(10)
        self.batches.append([r.prompt for r in requests])
        if any(r.prompt == self.fail_on for r in requests):
            raise RuntimeError("boom")
        return [GenerationResult(images=[f"{r.prompt}:{r.seed + i}" for i in range(r.n)], request=r) for r in requests]


class SteppingPipeline:
    """Fake denoising loop: ``steps`` polls of ``cancel`` 10 ms apart, counting the steps run."""

    def __init__(self) -> None:
        self.steps_run: list[int] = []
        self.started = threading.Event()

    def generate_batch(self, requests, cancel=None):
        self.started.set()
        for step in range(requests[0].steps):
            if cancel is not None and cancel():
                self.steps_run.append(step)
                raise GenerationCancelled(f"step {step}")
            time.sleep(0.01)
        self.steps_run.append(requests[0].steps)
        return [GenerationResult(images=[r.prompt] * r.n, request=r) for r in requests]


def test_worker_batches_compatible_requests_in_order():
    fake = RecordingPipeline()
    worker = InferenceWorker(fake, max_queue=10, max_batch=3)
    worker.start()
    jobs = [worker.submit(_request("first"))]
    time.sleep(0.05)  # the worker holds "first" at the gate
    jobs += [worker.submit(r) for r in [_request("a"), _request("other-size", size=128), _request("b"), _request("c", n=2), _request("d")]]
    assert worker.cancel(jobs[3]) == "dropped"  # "b": its client left while it was queued
    assert worker.cancel(jobs[3]) == "dropped"  # asking again changes nothing (counted once below)
    fake.gate.set()
    for job in jobs:
        if not job.future.cancelled():
            job.future.result(10)
    worker.stop(5)
    assert fake.batches == [["first"], ["a", "c"], ["other-size"], ["d"]]
    assert worker.stats.dropped == 1 and worker.stats.images == 6 and worker.stats.cancelled == 0


def test_worker_isolates_a_failing_request_from_its_batch():
    fake = RecordingPipeline(fail_on="poison")
    worker = InferenceWorker(fake, max_queue=10, max_batch=4)
    worker.start()
    holder = worker.submit(_request("holder", size=128))
    time.sleep(0.05)  # the worker holds "holder" at the gate; the next three queue up together
    jobs = [worker.submit(_request(p)) for p in ("a", "poison", "c")]
    fake.gate.set()
    holder.future.result(10)
    assert jobs[0].future.result(10).images == ["a:0"] and jobs[2].future.result(10).images == ["c:0"]
    with pytest.raises(RuntimeError, match="boom"):
        jobs[1].future.result(10)
    worker.stop(5)
    assert fake.batches == [["holder"], ["a", "poison", "c"], ["a"], ["poison"], ["c"]]
    assert worker.stats.isolated_batches == 1


def test_worker_stops_abandoned_running_work_at_the_next_step():
    fake = SteppingPipeline()
    worker = InferenceWorker(fake, max_queue=10, max_batch=4)
    worker.start()
    job = worker.submit(_request("long", steps=500))  # 5 s if it ran to the end
    fake.started.wait(5)
    time.sleep(0.05)
    started = time.monotonic()
    assert worker.cancel(job) == "cancelling"
    with pytest.raises(GenerationCancelled):
        job.future.result(5)
    assert time.monotonic() - started < 1.0 and fake.steps_run[0] < 100
    after = worker.submit(_request("next", steps=3))
    assert after.future.result(5).images == ["next"]
    assert worker.cancel(after) == "done"
    worker.stop(5)
    assert worker.stats.cancelled == 1 and worker.stats.dropped == 0


def test_worker_finishes_a_batch_when_only_some_requests_left():
    fake = SteppingPipeline()
    gate = RecordingPipeline()  # holds the worker so that the next two requests share a batch
    worker = InferenceWorker(fake, max_queue=10, max_batch=4)
    worker.pipeline = gate
    worker.start()
    holder = worker.submit(_request("holder", size=128))
    time.sleep(0.05)
    stays, leaves = worker.submit(_request("stays", steps=30)), worker.submit(_request("leaves", steps=30))
    worker.pipeline = fake
    gate.gate.set()
    holder.future.result(5)
    fake.started.wait(5)
    assert worker.cancel(leaves) == "cancelling"
    assert stays.future.result(5).images == ["stays"]  # the live request still gets its image
    worker.stop(5)
    assert fake.steps_run == [30] and worker.stats.cancelled == 1


def test_worker_queue_bound_errors_and_stop():
    fake = RecordingPipeline(fail_on="bad")
    worker = InferenceWorker(fake, max_queue=2, max_batch=1)
    worker.start()
    running = worker.submit(_request("bad"))
    time.sleep(0.05)
    worker.submit(_request("q1"))
    worker.submit(_request("q2"))
    with pytest.raises(QueueFull) as full:
        worker.submit(_request("q3"))
    assert 1 <= full.value.retry_after_s
    fake.gate.set()
    with pytest.raises(RuntimeError, match="boom"):
        running.future.result(10)
    worker.stop(5)  # drains q1 and q2 first
    assert fake.batches[1:] == [["q1"], ["q2"]]
    with pytest.raises(WorkerStopped):
        worker.submit(_request("late"))


def test_worker_slices_large_requests_without_changing_images(tiny_package):
    from nanoedge.runtime.pipeline import GenerationRequest, Pipeline

    pipe = Pipeline.load(tiny_package)
    request = pipe.resolve(GenerationRequest("slices", n=3, seed=5, steps=2))
    whole = [im.tobytes() for im in pipe.generate_batch([request])[0].images]
    worker = InferenceWorker(pipe, max_batch=2)
    worker.start()
    sliced = worker.submit(request).future.result(60)
    worker.stop(5)
    assert [im.tobytes() for im in sliced.images] == whole and worker.stats.batches == 1


# -- metrics and keys --------------------------------------------------------------------------
def test_metrics_render():
    metrics = Metrics()
    metrics.observe_request("POST", "/v1/images/generations", 200, 0.3)
    metrics.observe_request("POST", "/v1/images/generations", 429, 0.001)
    metrics.observe_batch(3, 1.5)
    metrics.count_cache(True)
    metrics.gauge("nanoedge_queue_depth", lambda: 2)
    text = metrics.render()
    assert 'nanoedge_requests_total{method="POST",path="/v1/images/generations",status="429"} 1' in text
    assert 'nanoedge_request_duration_seconds_bucket{path="/v1/images/generations",le="0.05"} 1' in text
    assert 'nanoedge_request_duration_seconds_bucket{path="/v1/images/generations",le="+Inf"} 2' in text
    assert "nanoedge_images_generated_total 3" in text and "nanoedge_cache_hits_total 1" in text and "nanoedge_queue_depth 2" in text


def test_read_api_keys(tmp_path, monkeypatch):
    from nanoedge.cli.serve_cmd import read_api_keys
    from nanoedge.core.errors import InvalidRequestError

    key_file = tmp_path / "keys"
    key_file.write_text("# comment\nfile-1\n\nfile-2  # trailing comment\nflag\n")
    monkeypatch.setenv("NANOEDGE_API_KEYS", "env-1, env-2,")
    assert read_api_keys(("flag",), str(key_file)) == ("flag", "env-1", "env-2", "file-1", "file-2")
    monkeypatch.setenv("NANOEDGE_API_KEYS", "has space")
    with pytest.raises(InvalidRequestError):
        read_api_keys((), None)
    with pytest.raises(InvalidRequestError):
        read_api_keys((), str(tmp_path / "missing"))


class LanePipeline:
    """Fake runner shared by several lanes: each batch waits at ``gate``; records which thread
    ran it and how many batches ran at once."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.lock = threading.Lock()
        self.running = 0
        self.most_at_once = 0
        self.threads: set[str] = set()
        self.batches: list[list[str]] = []

    def generate_batch(self, requests, cancel=None, on_step=None):
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.threads.add(threading.current_thread().name)
        try:
            self.gate.wait(10)
            with self.lock:
                self.batches.append([r.prompt for r in requests])
            return [GenerationResult(images=[r.prompt] * r.n, request=r) for r in requests]
        finally:
            with self.lock:
                self.running -= 1


def test_worker_lanes_run_batches_side_by_side_from_one_queue():
    fake = LanePipeline()
    worker = InferenceWorker(fake, max_queue=2, max_batch=2, lanes=2)
    worker.start()
    first, second = worker.submit(_request("a", size=64)), worker.submit(_request("b", size=128))
    # both lanes hold a batch at the gate; the queue (2) fills up behind them
    deadline = time.monotonic() + 5
    while worker.running() < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.running() == 2 and worker.busy()
    queued = [worker.submit(_request("c", size=64)), worker.submit(_request("d", size=64))]
    with pytest.raises(QueueFull) as full:  # admission control is the same with several lanes
        worker.submit(_request("e"))
    assert full.value.retry_after_s >= 1
    assert worker.depth() == 2
    fake.gate.set()
    for job in [first, second, *queued]:
        assert job.future.result(10).images == [job.request.prompt]
    worker.stop(5)
    assert fake.most_at_once == 2 and len(fake.threads) == 2
    assert sorted(map(sorted, fake.batches)) == [["a"], ["b"], ["c", "d"]]  # c and d still share one batch
    assert worker.stats.images == 4 and not worker.busy()


def test_worker_refuses_zero_lanes():
    with pytest.raises(ValueError, match="lanes"):
        InferenceWorker(LanePipeline(), lanes=0)


def test_the_single_process_server_never_imports_ray():
    """Ray is the [ray] extra's: building the app and the serve command's local path must not need it."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from nanoedge.runtime.server import ServerSettings, create_app\n"
            "from nanoedge.runtime.server import hosting\n"
            "from nanoedge.cli import serve_cmd, serve_scale\n"
            "create_app(lambda: None, ServerSettings())\n"
            "assert serve_scale.ray_host('local', None, None, None, package=None, target='cpu', threads=None, two_pass=False) is None\n"
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"

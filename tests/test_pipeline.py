"""Runtime: determinism, batching, sizes, schedulers, static packages and broken packages."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from nanoedge.runtime import GenerationRequest, InvalidRequestError, PackageError, Pipeline


def psnr(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def pipe(tiny_package: Path) -> Pipeline:
    return Pipeline.load(tiny_package)


def test_same_seed_same_bytes(pipe: Pipeline):
    first = pipe.generate("a red circle", seed=7)[0]
    second = pipe.generate("a red circle", seed=7)[0]
    assert png_bytes(first) == png_bytes(second)
    assert first.size == (64, 64) and first.mode == "RGB"


def test_other_seed_or_prompt_changes_the_image(pipe: Pipeline):
    base = np.asarray(pipe.generate("a red circle", seed=7)[0])
    assert not np.array_equal(base, np.asarray(pipe.generate("a red circle", seed=8)[0]))
    assert not np.array_equal(base, np.asarray(pipe.generate("a blue square", seed=7)[0]))


def test_image_i_of_n_uses_seed_plus_i(pipe: Pipeline):
    images = pipe.generate("a red circle", seed=10, n=2)
    alone = pipe.generate("a red circle", seed=11)[0]
    assert len(images) == 2
    assert np.abs(np.asarray(images[1], dtype=int) - np.asarray(alone, dtype=int)).max() <= 1


def test_batched_requests_match_single_requests(pipe: Pipeline):
    requests = [GenerationRequest("a red circle", seed=1), GenerationRequest("a green square", seed=2, negative_prompt="blurry")]
    batched = pipe.generate_batch(requests)
    for request, result in zip(requests, batched):
        alone = pipe.generate(request.prompt, negative_prompt=request.negative_prompt, seed=request.seed)[0]
        assert psnr(result.images[0], alone) >= 45


def test_incompatible_requests_are_not_batched(pipe: Pipeline):
    with pytest.raises(InvalidRequestError, match="share size, steps"):
        pipe.generate_batch([GenerationRequest("a", steps=2), GenerationRequest("b", steps=3)])


def test_two_pass_guidance_matches_one_batch(pipe: Pipeline):
    one = pipe.generate("a red circle", seed=3)[0]
    two = pipe.generate("a red circle", seed=3, two_pass=True)[0]
    assert psnr(one, two) >= 45


@pytest.mark.parametrize("scheduler", ["pndm", "ddim", "euler", "euler_a", "dpmpp_2m", "lcm"])
def test_every_scheduler_generates_deterministically(pipe: Pipeline, scheduler: str):
    steps = 4
    a = pipe.generate("a cat", seed=5, steps=steps, scheduler=scheduler)[0]
    b = pipe.generate("a cat", seed=5, steps=steps, scheduler=scheduler)[0]
    assert png_bytes(a) == png_bytes(b)
    assert np.asarray(a).std() > 0


def test_no_guidance_path(pipe: Pipeline):
    image = pipe.generate("a cat", seed=5, steps=2, guidance=1.0)[0]
    assert image.size == (64, 64)


def test_other_sizes(pipe: Pipeline):
    assert pipe.generate("a cat", seed=1, steps=2, size="96x64")[0].size == (96, 64)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"size": "65x64"}, "not a multiple of 8"),
        ({"size": "72x64"}, "not a multiple of 16"),
        ({"size": "banana"}, "not understood"),
        ({"size": "4096x4096"}, "outside"),
        ({"steps": 0}, "steps must be between"),
        ({"n": 0}, "n must be between"),
        ({"guidance": -1.0}, "guidance must be"),
        ({"scheduler": "warp"}, "unknown"),
        ({"seed": -1}, "seed must be between"),
    ],
)
def test_bad_requests_fail_before_any_work(pipe: Pipeline, kwargs, message):
    with pytest.raises(InvalidRequestError, match=message) as err:
        pipe.generate("a cat", **kwargs)
    assert err.value.param == next(iter(kwargs)), "the error names the field, for API layers"


def test_static_package_runs_and_matches_dynamic(tiny_package: Path, tiny_static_package: Path, pipe: Pipeline):
    static = Pipeline.load(tiny_static_package)
    # batch-1 static graphs run guidance as two calls and n=2 as chunks; results must agree
    images = static.generate("a red circle", seed=4, n=2)
    reference = pipe.generate("a red circle", seed=4, n=2)
    for got, want in zip(images, reference):
        assert psnr(got, want) >= 40
    with pytest.raises(InvalidRequestError, match="static shape 64x64"):
        static.generate("a red circle", size="128x128")


def test_latents_can_be_supplied(pipe: Pipeline):
    latents = np.random.default_rng(0).standard_normal((1, 4, 8, 8), dtype=np.float32)
    a = pipe.generate("a cat", latents=latents, steps=2)[0]
    b = pipe.generate("a cat", latents=latents, steps=2, seed=999)[0]
    assert png_bytes(a) == png_bytes(b)
    with pytest.raises(InvalidRequestError, match="latents must have shape"):
        pipe.generate("a cat", latents=latents[:, :2])


def test_cancel_check_stops_the_loop_at_the_next_step(pipe: Pipeline):
    from nanoedge.runtime.pipeline import GenerationCancelled

    steps: list[int] = []
    polls = {"count": 0}

    def cancel() -> bool:
        polls["count"] += 1
        return polls["count"] > 3  # say stop when asked before step 4

    with pytest.raises(GenerationCancelled, match="step 4 of "):
        pipe.generate_batch([GenerationRequest("stop me", steps=10, seed=1)], progress=lambda i, total: steps.append(i), cancel=cancel)
    assert steps == [1, 2, 3]
    # a check that never fires changes nothing
    kept = pipe.generate_batch([GenerationRequest("keep me", steps=3, seed=1)], cancel=lambda: False)[0].images[0]
    assert png_bytes(kept) == png_bytes(pipe.generate("keep me", steps=3, seed=1)[0])


# -- broken packages ------------------------------------------------------------------------------


def test_missing_package(tmp_path: Path):
    with pytest.raises(PackageError, match="does not exist"):
        Pipeline.load(tmp_path / "nowhere")


def test_folder_without_manifest(tmp_path: Path):
    with pytest.raises(PackageError, match="no nanoedge.json"):
        Pipeline.load(tmp_path)


def test_missing_file_is_named(tiny_package: Path, copy_package):
    package = copy_package(tiny_package)
    (package / "vae_decoder" / "model.onnx").unlink()
    with pytest.raises(PackageError, match=r"vae_decoder/model.onnx' is missing"):
        Pipeline.load(package)


def test_hash_mismatch_is_named(tiny_package: Path, copy_package):
    package = copy_package(tiny_package)
    path = package / "unet" / "model.onnx_data"
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(PackageError, match=r"unet/model.onnx_data' does not match its sha256") as err:
        Pipeline.load(package)
    assert "copy the package again" in err.value.hint


def test_corrupt_onnx_is_named_even_without_hash_check(tiny_package: Path, copy_package):
    package = copy_package(tiny_package)
    (package / "text_encoder" / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(PackageError, match=r"text_encoder/model.onnx"):
        Pipeline.load(package, verify=False)


def test_truncated_file_is_named(tiny_package: Path, copy_package):
    package = copy_package(tiny_package)
    path = package / "tokenizer" / "tokenizer.json"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(PackageError, match="truncated"):
        Pipeline.load(package)


def test_newer_format_asks_for_upgrade(tiny_package: Path, copy_package):
    package = copy_package(tiny_package)
    manifest = json.loads((package / "nanoedge.json").read_text())
    manifest["format_version"] = 99
    (package / "nanoedge.json").write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match="upgrade nanoedge|newer"):
        Pipeline.load(package)

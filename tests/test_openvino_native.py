"""openvino-native: OpenVINO's own runtime behind the session interface; auto's measured choice; CPU records."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from nanoedge.runtime import InvalidRequestError, PackageError, Pipeline, TargetUnavailableError
from nanoedge.targets import create_session, detect, get_profile

DEMO_INT8 = Path(__file__).resolve().parents[1] / "runtime" / "models" / "default-int8"
DEMO_FP32 = Path(__file__).resolve().parents[1] / "runtime" / "models" / "default"


def _usable() -> None:
    pytest.importorskip("openvino", reason="the openvino package ([openvino-native] extra) is not installed")
    status = detect(get_profile("openvino-native"))
    assert status.usable, status.reason  # OpenVINO's CPU plugin runs on any x86-64 with AVX2 and on ARM64


def _unet_feeds(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "sample": rng.standard_normal((2, 4, 8, 8), dtype=np.float32),
        "timestep": np.full((2,), 500.0, dtype=np.float32),
        "encoder_hidden_states": rng.standard_normal((2, 77, 32), dtype=np.float32),
    }


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_session_answers_like_an_onnxruntime_session(tiny_package: Path, monkeypatch):
    """Same input/output names, shapes' rank and types, and FP32 results as the cpu target's session."""
    _usable()
    monkeypatch.setenv("NANOEDGE_OPENVINO_PRECISION", "f32")
    ov = Pipeline.load(tiny_package, target="openvino-native")
    cpu = Pipeline.load(tiny_package, target="cpu")
    assert ov.profile.name == "openvino-native" and ov.sessions["unet"].get_providers() == ["OpenVINO CPU"]
    for component in ("text_encoder", "unet", "vae_decoder"):
        got, want = ov.sessions[component], cpu.sessions[component]
        assert [i.name for i in got.get_inputs()] == [i.name for i in want.get_inputs()]
        assert [o.name for o in got.get_outputs()] == [o.name for o in want.get_outputs()]
        assert [i.type for i in got.get_inputs()] == [i.type for i in want.get_inputs()]
        assert [len(i.shape) for i in got.get_inputs()] == [len(i.shape) for i in want.get_inputs()]
    feeds = _unet_feeds()
    got, want = ov.sessions["unet"].run(None, feeds)[0], cpu.sessions["unet"].run(None, feeds)[0]
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-4 * max(1.0, float(np.abs(want).max()))
    # by name, and the result is ours to keep: the next run must not overwrite it
    name = ov.sessions["unet"].get_outputs()[0].name
    first = ov.sessions["unet"].run([name], feeds)[0]
    ov.sessions["unet"].run(None, _unet_feeds(seed=1))
    np.testing.assert_array_equal(first, got)


def test_fp32_image_matches_the_cpu_target(tiny_package: Path, monkeypatch):
    _usable()
    monkeypatch.setenv("NANOEDGE_OPENVINO_PRECISION", "f32")
    images = {
        t: np.asarray(Pipeline.load(tiny_package, target=t).generate("a red circle", size="64x64", steps=4, seed=3)[0], dtype=np.int16)
        for t in ("openvino-native", "cpu")
    }
    assert np.abs(images["openvino-native"] - images["cpu"]).max() <= 1


def test_default_precision_image_stays_close(tiny_package: Path):
    """OpenVINO's default (BF16 where the CPU has it, else FP32)."""
    _usable()
    images = {
        t: np.asarray(Pipeline.load(tiny_package, target=t).generate("a red circle", size="64x64", steps=4, seed=3)[0], dtype=np.float64)
        for t in ("openvino-native", "cpu")
    }
    mse = ((images["openvino-native"] - images["cpu"]) ** 2).mean()
    assert (10 * np.log10(255.0**2 / mse) if mse else float("inf")) >= 30


def test_int8_qdq_is_as_accurate_as_the_graph_as_written(monkeypatch):
    """The shipped INT8 package: OpenVINO's UNet output is as close to the FP32 model as the QDQ reference is.

    Reference: onnxruntime with graph optimizations off (Q/DQ computed as written). OpenVINO
    rounds differently (so it does not equal the reference exactly), but must not be less
    accurate than it; the cpu target equals the reference.
    """
    import onnxruntime as ort

    _usable()
    monkeypatch.setenv("NANOEDGE_OPENVINO_PRECISION", "f32")
    from nanoedge.core.manifest import Manifest

    int8, fp32 = Manifest.load(DEMO_INT8), Manifest.load(DEMO_FP32)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    reference = ort.InferenceSession(str(int8.component_path("unet")), options, providers=["CPUExecutionProvider"])
    float_model = ort.InferenceSession(str(fp32.component_path("unet")), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in reference.get_inputs()]
    rng = np.random.default_rng(0)
    shapes = {i.name: i.shape for i in reference.get_inputs()}
    feeds = {}
    for name in names:
        dims = [2 if not isinstance(d, int) else d for d in shapes[name]]
        if name == "sample":
            dims = [2, dims[1], 8, 8]
        feeds[name] = np.full(dims, 500.0, np.float32) if "timestep" in name else rng.standard_normal(dims).astype(np.float32)
    want = float_model.run(None, feeds)[0]
    ref = reference.run(None, feeds)[0]
    ov = create_session(int8.component_path("unet"), get_profile("openvino-native")).run(None, feeds)[0]
    cpu = create_session(int8.component_path("unet"), get_profile("cpu")).run(None, feeds)[0]
    ref_error = 1 - _cosine(ref, want)
    assert 1 - _cosine(cpu, ref) < 1e-5
    assert 1 - _cosine(ov, want) <= 2 * ref_error + 1e-4, (1 - _cosine(ov, want), ref_error)


def test_precision_typo_is_a_clear_error(tiny_package: Path, monkeypatch):
    _usable()
    monkeypatch.setenv("NANOEDGE_OPENVINO_PRECISION", "bf61")
    with pytest.raises(InvalidRequestError) as err:
        Pipeline.load(tiny_package, target="openvino-native")
    assert "bf16" in err.value.hint and "f32" in err.value.hint


def test_broken_and_missing_files_are_package_errors(tiny_package: Path, copy_package, tmp_path: Path):
    _usable()
    profile = get_profile("openvino-native")
    with pytest.raises(PackageError, match="missing"):
        create_session(tmp_path / "nope.onnx", profile)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    with pytest.raises(PackageError) as err:
        create_session(broken, profile)
    assert "OpenVINO could not load" in err.value.message and err.value.hint


def test_unknown_input_names_the_real_ones(tiny_package: Path):
    _usable()
    session = Pipeline.load(tiny_package, target="openvino-native").sessions["unet"]
    with pytest.raises(InvalidRequestError) as err:
        session.run(None, {"latents": np.zeros((1, 4, 8, 8), np.float32)})
    assert "sample" in err.value.hint


def test_without_openvino_the_target_says_what_to_install(monkeypatch):
    import nanoedge.targets.openvino_native as native

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    monkeypatch.setattr(native, "_core", None)
    status = detect(get_profile("openvino-native"))
    assert not status.usable and "not installed" in status.reason and "openvino" in status.hint
    with pytest.raises(TargetUnavailableError):
        create_session(DEMO_FP32 / "unet" / "model.onnx", get_profile("openvino-native"))


def test_cache_dir_lives_under_the_nanoedge_cache(tiny_package: Path, monkeypatch, tmp_path: Path):
    _usable()
    monkeypatch.setenv("NANOEDGE_CACHE_DIR", str(tmp_path / "cache"))
    from nanoedge.targets.openvino_native import compile_config

    assert compile_config(3) == {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": 3,
        "CACHE_DIR": str(tmp_path / "cache" / "openvino-native"),
    }
    monkeypatch.setenv("NANOEDGE_OPENVINO_CACHE", "0")
    assert "CACHE_DIR" not in compile_config(None)
    monkeypatch.delenv("NANOEDGE_OPENVINO_CACHE")
    create_session(tiny_package / "text_encoder" / "model.onnx", get_profile("openvino-native"))
    assert any((tmp_path / "cache" / "openvino-native").iterdir())


def test_check_reports_whole_placement_and_precisions(tiny_package: Path):
    _usable()
    proc = run_cli("check", str(tiny_package), "--target", "openvino-native", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    for component in report["components"]:
        assert component["error"] is None and component["placement"] == 1.0 and component["total_nodes"] > 5
        assert set(component["precisions"]) <= {"f32", "bf16", "f16", "u8", "i8", "i32", "i64", "boolean", "undefined", "dynamic"}


# -- auto: measured among usable CPU targets -------------------------------------------------


def test_auto_measures_picks_the_fastest_and_remembers(tiny_package: Path, monkeypatch, tmp_path: Path):
    from nanoedge.core.manifest import Manifest
    from nanoedge.targets.resolve import resolve_target_with_reason

    monkeypatch.setenv("NANOEDGE_CACHE_DIR", str(tmp_path))
    timed = []

    def fake_time(root, target, threads):
        timed.append(target)
        return {"cpu": 2.0, "openvino-native": 1.0, "openvino-cpu": 3.0}[target]

    manifest = Manifest.load(tiny_package)
    profile, reason = resolve_target_with_reason("auto", manifest, measure=fake_time)
    usable = [t for t in ("openvino-cpu", "openvino-native", "cpu") if detect(get_profile(t)).usable]
    assert timed == usable  # only usable targets are measured
    expected = min(usable, key={"cpu": 2.0, "openvino-native": 1.0, "openvino-cpu": 3.0}.__getitem__)
    assert profile.name == expected
    if len(usable) > 1:
        assert "fastest measured" in reason
        timed.clear()
        again, reason = resolve_target_with_reason("auto", manifest, measure=fake_time)
        assert again.name == expected and timed == [] and "measured earlier" in reason


def test_auto_never_picks_an_unusable_target(tiny_package: Path, monkeypatch, tmp_path: Path):
    from nanoedge.core.manifest import Manifest
    from nanoedge.targets import resolve
    from nanoedge.targets.detect import TargetStatus

    monkeypatch.setenv("NANOEDGE_CACHE_DIR", str(tmp_path))
    real = resolve.detect
    monkeypatch.setattr(resolve, "detect", lambda p: TargetStatus(False, "test: no device") if p.name != "cpu" else real(p))
    manifest = Manifest.load(tiny_package)
    profile, reason = resolve.resolve_target_with_reason(
        "auto", manifest, measure=lambda *a: pytest.fail("one candidate: nothing to measure")
    )
    assert profile.name == "cpu" and "only usable" in reason


def test_bench_auto_says_which_target_and_why(tiny_package: Path, tmp_path: Path):
    bench = ("bench", str(tiny_package), "--target", "auto", "--repeats", "1", "--warmup", "0", "--no-cold-start", "--steps", "2")
    env = {"NANOEDGE_CACHE_DIR": str(tmp_path)}
    proc = run_cli(*bench, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "target auto ->" in proc.stdout and "CPU " in proc.stdout
    record = json.loads(run_cli(*bench, "--json", env=env).stdout)
    assert record["target"] in ("cpu", "openvino-native", "openvino-cpu") and record["target_reason"]
    assert {"model", "vendor", "features", "kind"} <= set(record["cpu"])


def test_generate_auto_says_which_target_and_why(tiny_package: Path, tmp_path: Path):
    proc = run_cli(
        "generate",
        "a red circle",
        "-m",
        str(tiny_package),
        "--target",
        "auto",
        "--steps",
        "2",
        "-o",
        str(tmp_path / "a.png"),
        env={"NANOEDGE_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert proc.returncode == 0, proc.stderr
    assert "target auto -> " in proc.stderr and (tmp_path / "a.png").exists()

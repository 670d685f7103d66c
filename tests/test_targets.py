"""Target profiles, detection, compatibility checks (no quantized package needed here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli
from nanoedge.runtime import Pipeline, TargetUnavailableError
from nanoedge.targets import detect, get_profile, known_targets, resolve_target


def test_every_profile_names_its_provider_package():
    assert set(known_targets()) == {"cpu", "cuda", "jetson", "qnn", "openvino", "openvino-cpu", "coreml", "xnnpack"}
    for name in known_targets():
        profile = get_profile(name)
        assert profile.providers and profile.pip_package and profile.schemes
    assert get_profile("qnn").needs_static_shapes and get_profile("qnn").full_offload
    assert get_profile("qnn").session_config["session.disable_cpu_ep_fallback"] == "1"
    assert "trt_engine_cache_path" in get_profile("jetson").provider_options["TensorrtExecutionProvider"]
    assert "JetPack" in get_profile("jetson").notes


def test_targets_command_lists_all_with_reasons():
    proc = run_cli("targets", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["cpu"]["usable"]
    for name, row in rows.items():
        assert row["reason"], name
        if not row["usable"]:
            assert row["install"] or name == "jetson", name


def test_qnn_usable_when_plugin_installed():
    pytest.importorskip("onnxruntime_qnn")
    status = detect(get_profile("qnn"))
    assert status.usable, status.reason


def test_missing_provider_says_what_to_install(tiny_package: Path):
    if detect(get_profile("cuda")).usable:
        pytest.skip("this machine has CUDA")
    with pytest.raises(TargetUnavailableError) as err:
        Pipeline.load(tiny_package, target="cuda")
    assert "onnxruntime-gpu" in err.value.hint


def test_auto_never_picks_a_simulator_or_an_unfit_package(tiny_package: Path):
    from nanoedge.runtime.manifest import Manifest

    profile = resolve_target("auto", Manifest.load(tiny_package).data)
    assert not detect(profile).simulated
    assert profile.name == "cpu" or detect(profile).usable
    assert Pipeline.load(tiny_package, target="auto").profile.name == profile.name


def test_check_cpu_places_everything(tiny_package: Path):
    proc = run_cli("check", str(tiny_package), "--target", "cpu", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] and report["fully_offloaded"]
    for component in report["components"]:
        assert component["placement"] == 1.0 and component["total_nodes"] > 10


def test_check_qnn_rejects_a_dynamic_fp32_package(tiny_package: Path):
    pytest.importorskip("onnxruntime_qnn")
    proc = run_cli("check", str(tiny_package), "--target", "qnn")
    assert proc.returncode == 1
    assert "static shapes" in proc.stdout and "NOT OK" in proc.stdout


def test_qnn_refuses_fp32_package_with_a_reason(tiny_static_package: Path):
    pytest.importorskip("onnxruntime_qnn")
    with pytest.raises(TargetUnavailableError, match="w8a16 or w8a8"):
        Pipeline.load(tiny_static_package, target="qnn")


def test_export_for_qnn_needs_static_shapes(tmp_path: Path):
    proc = run_cli("export", "preset:tiny-random", "-o", str(tmp_path / "p"), "--target", "qnn")
    assert proc.returncode == 2 and "--static-shape" in proc.stderr


def test_export_for_qnn_folds_shape_arithmetic(tmp_path: Path):
    pytest.importorskip("torch")
    import onnx

    from nanoedge.export import ExportOptions, export_package
    from nanoedge.runtime.sizes import Size

    manifest = export_package("preset:tiny-random", tmp_path / "p", ExportOptions(static_shape=Size(64, 64), target="qnn"))
    for name in ("text_encoder", "unet", "vae_decoder"):
        component = manifest.components[name]
        assert component["rewrites"]["folded_ops"].get("Shape", 0) > 0
        ops = {n.op_type for n in onnx.load(str(tmp_path / "p" / name / "model.onnx"), load_external_data=False).graph.node}
        assert not ops & {"Shape", "ConstantOfShape", "Identity"}, (name, ops)
        assert component["verification"]["max_abs_diff"] <= 1e-3

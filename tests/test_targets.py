"""Target profiles, detection, compatibility checks (no quantized package needed here)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
from conftest import run_cli

from nanoedge.runtime import Pipeline, TargetUnavailableError
from nanoedge.targets import detect, get_profile, known_targets, resolve_target


def test_every_profile_names_its_provider_package():
    assert set(known_targets()) == {"cpu", "cuda", "jetson", "qnn", "openvino", "openvino-cpu", "openvino-native", "coreml", "xnnpack"}
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
    from nanoedge.targets.cpuinfo import cpu_info

    if cpu_info().vendor != "Intel" and not rows["openvino-cpu"]["usable"]:
        assert rows["openvino-cpu"]["reason"].startswith(f"unavailable on this {cpu_info().vendor} CPU")
        assert rows["openvino-cpu"]["install"] == "use --target openvino-native"


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
    from nanoedge.core.manifest import Manifest
    from nanoedge.runtime.pipeline import time_auto_candidate

    profile = resolve_target("auto", Manifest.load(tiny_package), measure=time_auto_candidate)  # measured once, then remembered
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

    from nanoedge.core.sizes import Size
    from nanoedge.export import ExportOptions, export_package

    manifest = export_package("preset:tiny-random", tmp_path / "p", ExportOptions(static_shape=Size(64, 64), target="qnn"))
    for name in ("text_encoder", "unet", "vae_decoder"):
        component = manifest.components[name]
        assert component["rewrites"]["folded_ops"].get("Shape", 0) > 0
        ops = {n.op_type for n in onnx.load(str(tmp_path / "p" / name / "model.onnx"), load_external_data=False).graph.node}
        assert not ops & {"Shape", "ConstantOfShape", "Identity"}, (name, ops)
        assert component["verification"]["max_abs_diff"] <= 1e-3


# -- openvino-cpu: OpenVINO's CPU plugin through onnxruntime-ep-openvino ([openvino] extra) ----------


def _openvino_cpu_usable() -> None:
    """Skip only where the CPU cannot have the device; on an Intel CPU a missing device fails."""
    from nanoedge.targets.cpuinfo import cpu_info

    pytest.importorskip("onnxruntime_ep_openvino")
    profile = get_profile("openvino-cpu")
    vendor = cpu_info().vendor
    if vendor not in profile.cpu_vendors:
        pytest.skip(f"no OpenVINO CPU device: onnxruntime-ep-openvino offers none on this {vendor} CPU (Intel only)")
    status = detect(profile)
    assert status.usable, status.reason
    assert not status.simulated  # the real CPU, unlike QNN's x86-64 HTP simulator


def _unet_feeds(seed: int = 0) -> dict:
    import numpy as np

    rng = np.random.default_rng(seed)
    return {
        "sample": rng.standard_normal((2, 4, 8, 8), dtype=np.float32),
        "timestep": np.full((2,), 500.0, dtype=np.float32),
        "encoder_hidden_states": rng.standard_normal((2, 77, 32), dtype=np.float32),
    }


def test_openvino_cpu_picks_only_the_cpu_device():
    _openvino_cpu_usable()
    from nanoedge.targets.plugins import plugin_devices

    devices = plugin_devices(get_profile("openvino-cpu"))
    assert devices and all(d.ep_name == "OpenVINOExecutionProvider" and d.ep_metadata.get("ov_device") == "CPU" for d in devices)


def test_openvino_cpu_matches_the_cpu_provider_in_fp32(tiny_package: Path, monkeypatch):
    """With NANOEDGE_OPENVINO_PRECISION=f32 OpenVINO computes what onnxruntime's CPU provider does."""
    import numpy as np

    _openvino_cpu_usable()
    monkeypatch.setenv("NANOEDGE_OPENVINO_PRECISION", "f32")
    ov = Pipeline.load(tiny_package, target="openvino-cpu")
    cpu = Pipeline.load(tiny_package, target="cpu")
    assert ov.profile.name == "openvino-cpu"
    assert ov.sessions["unet"].get_providers()[0] == "OpenVINOExecutionProvider"
    feeds = _unet_feeds()
    got, want = ov.sessions["unet"].run(None, feeds)[0], cpu.sessions["unet"].run(None, feeds)[0]
    assert np.abs(got - want).max() < 1e-4 * max(1.0, float(np.abs(want).max()))


def test_openvino_cpu_generates_the_same_image_at_its_default_precision(tiny_package: Path):
    """Default precision (BF16 on CPUs with AMX/AVX-512-BF16, else FP32): the image stays close to the CPU one."""
    import numpy as np

    _openvino_cpu_usable()
    images = {
        t: np.asarray(Pipeline.load(tiny_package, target=t).generate("a red circle", size="64x64", steps=4, seed=3)[0], dtype=np.float64)
        for t in ("openvino-cpu", "cpu")
    }
    mse = ((images["openvino-cpu"] - images["cpu"]) ** 2).mean()
    psnr = 10 * np.log10(255.0**2 / mse) if mse else float("inf")
    assert psnr >= 30, psnr


def test_openvino_cpu_precision_typo_is_a_clear_error(tiny_package: Path, monkeypatch):
    from nanoedge.runtime import InvalidRequestError

    _openvino_cpu_usable()
    monkeypatch.setenv("NANOEDGE_OPENVINO_PRECISION", "int4")
    with pytest.raises(InvalidRequestError, match="NANOEDGE_OPENVINO_PRECISION") as err:
        Pipeline.load(tiny_package, target="openvino-cpu", reduce_memory=False).sessions["unet"]
    assert "f32" in err.value.hint


def test_check_openvino_cpu_places_the_package(tiny_package: Path):
    _openvino_cpu_usable()
    proc = run_cli("check", str(tiny_package), "--target", "openvino-cpu", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ok"]


def test_openvino_device_override_reaches_the_in_tree_provider(monkeypatch):
    from nanoedge.targets.session import _provider_options

    profile = get_profile("openvino")
    assert _provider_options(profile, "OpenVINOExecutionProvider")["device_type"] == "NPU"
    monkeypatch.setenv("NANOEDGE_OPENVINO_DEVICE", "gpu")
    assert _provider_options(profile, "OpenVINOExecutionProvider")["device_type"] == "GPU"


# -- the openvino-cpu logic without its device (runs on every CPU) -----------------------------


class _FakeDevice:
    """What ``onnxruntime.get_ep_devices()`` returns, reduced to the fields we read."""

    def __init__(self, ep_name: str, ov_device: str | None) -> None:
        self.ep_name = ep_name
        self.ep_metadata = {"ov_device": ov_device} if ov_device else {}
        self.device = type("HardwareDevice", (), {"type": "OrtHardwareDeviceType." + (ov_device or "CPU")})()


def _cpu(vendor: str):
    from nanoedge.targets.cpuinfo import CpuInfo

    return CpuInfo(arch="x86_64", vendor=vendor, model=f"{vendor} test CPU", flags=frozenset({"avx2", "avx512f", "avx512_vnni"}))


def test_openvino_cpu_picks_only_the_plugins_cpu_device(monkeypatch):
    import onnxruntime as ort

    from nanoedge.targets import plugins

    monkeypatch.setattr(plugins, "register", lambda profile: None)
    offered = [
        _FakeDevice("CPUExecutionProvider", None),
        _FakeDevice("OpenVINOExecutionProvider", "GPU"),
        _FakeDevice("OpenVINOExecutionProvider", "CPU"),
        _FakeDevice("OpenVINOExecutionProvider", "NPU"),
    ]
    monkeypatch.setattr(ort, "get_ep_devices", lambda: offered)
    assert plugins.plugin_devices(get_profile("openvino-cpu")) == [offered[2]]


@pytest.mark.parametrize("vendor", ["AMD", "Hygon"])
def test_openvino_cpu_on_another_vendor_says_why_and_what_instead(monkeypatch, vendor):
    detect_module = importlib.import_module("nanoedge.targets.detect")

    pytest.importorskip("onnxruntime_ep_openvino")
    monkeypatch.setattr(detect_module, "plugin_devices", lambda profile: [])
    monkeypatch.setattr(detect_module, "cpu_info", lambda: _cpu(vendor))
    status = detect(get_profile("openvino-cpu"))
    assert not status.usable
    assert status.reason == f"unavailable on this {vendor} CPU (onnxruntime-ep-openvino offers devices on Intel CPUs only)"
    assert status.hint == "use --target openvino-native"


def test_openvino_cpu_without_a_device_on_intel_is_not_blamed_on_the_vendor(monkeypatch):
    detect_module = importlib.import_module("nanoedge.targets.detect")

    pytest.importorskip("onnxruntime_ep_openvino")
    monkeypatch.setattr(detect_module, "plugin_devices", lambda profile: [])
    monkeypatch.setattr(detect_module, "cpu_info", lambda: _cpu("Intel"))
    status = detect(get_profile("openvino-cpu"))
    assert not status.usable and "reports no device on this Intel CPU" in status.reason


def test_auto_skips_openvino_cpu_when_it_has_no_device(monkeypatch, tiny_package: Path):
    from nanoedge.core.manifest import Manifest

    detect_module = importlib.import_module("nanoedge.targets.detect")

    monkeypatch.setattr(detect_module, "plugin_devices", lambda profile: [])
    monkeypatch.setattr(detect_module, "cpu_info", lambda: _cpu("AMD"))
    assert resolve_target("auto", Manifest.load(tiny_package)).name in ("openvino-native", "cpu")  # measured, never openvino-cpu


def test_openvino_cpu_options_threads_cache_and_precision(monkeypatch, tmp_path: Path):
    from nanoedge.runtime import InvalidRequestError
    from nanoedge.targets.plugins import plugin_provider_options

    profile = get_profile("openvino-cpu")
    monkeypatch.setenv("NANOEDGE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("NANOEDGE_OPENVINO_PRECISION", "BF16")
    options = plugin_provider_options(profile, threads=2)
    assert options["num_of_threads"] == "2"
    config = json.loads(options["load_config"])["CPU"]
    assert config == {"CACHE_DIR": str(tmp_path / "openvino-cpu"), "INFERENCE_PRECISION_HINT": "bf16"}
    assert (tmp_path / "openvino-cpu").is_dir()

    monkeypatch.setenv("NANOEDGE_OPENVINO_CACHE", "0")
    monkeypatch.setenv("NANOEDGE_OPENVINO_PRECISION", "fp32")
    assert json.loads(plugin_provider_options(profile)["load_config"]) == {"CPU": {"INFERENCE_PRECISION_HINT": "f32"}}
    monkeypatch.delenv("NANOEDGE_OPENVINO_PRECISION")
    assert "load_config" not in plugin_provider_options(profile)

    monkeypatch.setenv("NANOEDGE_OPENVINO_PRECISION", "int4")
    with pytest.raises(InvalidRequestError, match="NANOEDGE_OPENVINO_PRECISION") as err:
        plugin_provider_options(profile)
    assert "f32" in err.value.hint


# -- CPU identification -------------------------------------------------------------------------

_CPUINFO = {
    "intel-amx": ("GenuineIntel", "Intel(R) Xeon(R) Platinum 8488C", "fma avx2 avx512f avx512_vnni avx512_bf16 amx_int8 amx_bf16", "AMX"),
    "amd-zen4": ("AuthenticAMD", "AMD EPYC 9R14", "fma avx2 avx512f avx512_vnni avx512_bf16", "AVX-512-VNNI+BF16"),
    "amd-zen3": ("AuthenticAMD", "AMD EPYC 7R13 Processor", "fma avx2", "AVX2"),
}


@pytest.mark.parametrize("name", sorted(_CPUINFO))
def test_cpuinfo_reads_vendor_model_and_isa(name):
    from nanoedge.targets.cpuinfo import parse_cpuinfo

    vendor_id, model, flags, kind = _CPUINFO[name]
    block = f"processor\t: 0\nvendor_id\t: {vendor_id}\nmodel name\t: {model}\nflags\t\t: fpu sse {flags}\n"
    info = parse_cpuinfo(block + "\n" + block.replace(": 0", ": 1"), "x86_64")
    assert info.vendor == {"GenuineIntel": "Intel", "AuthenticAMD": "AMD"}[vendor_id]
    assert info.model == model and info.kind == kind
    assert info.has("AVX2") and info.has("avx2")
    assert info.has("AMX-INT8") == ("amx_int8" in flags)
    assert info.describe().startswith(f"{model} ({info.vendor}, x86_64): AVX2 FMA")


def test_cpuinfo_reads_an_arm_cpu():
    from nanoedge.targets.cpuinfo import parse_cpuinfo

    text = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd aes asimddp i8mm bf16\nCPU implementer\t: 0x41\n"
    info = parse_cpuinfo(text, "aarch64")
    assert (info.vendor, info.features, info.kind) == ("Arm", ("NEON", "DOTPROD", "I8MM", "BF16"), "ARM64+I8MM")

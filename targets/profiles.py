"""Target profiles: one small record per kind of hardware.

A profile says which execution providers to use (in order), with which options, what the
package should look like for it (static shapes, precision) and which pip package brings the
provider, so that a missing provider turns into an install hint rather than a silent CPU run.
Detection lives in :mod:`nanoedge.targets.detect`, choosing a target in ``resolve``, session
creation in ``session``: this module is data and imports none of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nanoedge.core.errors import InvalidRequestError
from nanoedge.core.manifest import Manifest


@dataclass(frozen=True)
class TargetProfile:
    """How to run a package on one kind of hardware.

    ``providers`` are onnxruntime execution-provider names in priority order; ``plugin`` names
    a provider shipped as a separate library that must be registered first (QNN, OpenVINO's
    plugin), and ``plugin_device`` the device metadata that picks one of the plugin's devices;
    ``full_offload`` means every node must run on the accelerator (CPU fallback disabled),
    which is what an NPU deployment needs to be fast and what ``nanoedge check`` verifies.
    """

    name: str
    description: str
    providers: tuple[str, ...]
    provider_options: dict[str, dict[str, str]] = field(default_factory=dict)
    needs_static_shapes: bool = False
    schemes: tuple[str, ...] = ("fp32",)
    pip_package: str = "onnxruntime"
    plugin: str | None = None
    plugin_device: dict[str, str] = field(default_factory=dict)
    full_offload: bool = False
    session_config: dict[str, str] = field(default_factory=dict)
    cache: str | None = None  # what `nanoedge compile` / the provider caches for fast start
    notes: str = ""
    # CPU vendors the provider offers its device on (empty: any). onnxruntime's OpenVINO plugin
    # lists no device on an AMD CPU whatever its ISA, so detection names the vendor and
    # ``instead`` (another target) rather than reporting a bare "no device".
    cpu_vendors: tuple[str, ...] = ()
    #: the runtime that computes the sessions: "onnxruntime" (every profile but one) or
    #: "openvino" (OpenVINO's own runtime behind the same session interface, targets/openvino_native.py)
    backend: str = "onnxruntime"
    instead: str | None = None

    @property
    def accelerator(self) -> str:
        return self.providers[0]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "providers": list(self.providers),
            "provider_options": self.provider_options,
            "needs_static_shapes": self.needs_static_shapes,
            "schemes": list(self.schemes),
            "pip_package": self.pip_package,
            "full_offload": self.full_offload,
            "cache": self.cache,
            "notes": self.notes,
            "cpu_vendors": list(self.cpu_vendors),
            "instead": self.instead,
            "backend": self.backend,
        }


def _nvidia_options(**tensorrt_extra: str) -> dict[str, dict[str, str]]:
    """TensorRT FP16 with persistent engine and timing caches, CUDA as the fallback."""
    tensorrt = {
        "trt_fp16_enable": "True",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": "{cache_dir}/tensorrt",
        "trt_timing_cache_enable": "True",
        **tensorrt_extra,
    }
    return {"TensorrtExecutionProvider": tensorrt, "CUDAExecutionProvider": {"cudnn_conv_algo_search": "HEURISTIC"}}


_PROFILES: dict[str, TargetProfile] = {
    p.name: p
    for p in (
        TargetProfile(
            name="cpu",
            description="onnxruntime CPU execution provider (x86-64 AVX2/AVX-512, ARM64 NEON)",
            providers=("CPUExecutionProvider",),
            schemes=("fp32", "int8", "dynamic", "weight-only"),
            notes="Thread count: NANOEDGE_THREADS or threads=; INT8 QDQ (uint8 weights without VNNI) or dynamic.",
        ),
        TargetProfile(
            name="cuda",
            description="NVIDIA GPU (desktop/server) through the CUDA execution provider, TensorRT when present",
            providers=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
            provider_options=_nvidia_options(),
            schemes=("fp32", "fp16"),
            pip_package="onnxruntime-gpu",
            cache="TensorRT engine cache (built on first run, reused after)",
            notes="pip install onnxruntime-gpu (CUDA 12 + cuDNN 9); TensorRT EP is used when its libraries are installed.",
        ),
        TargetProfile(
            name="jetson",
            description="NVIDIA Jetson (Orin/Xavier) through TensorRT FP16 with an engine cache, CUDA as fallback",
            providers=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
            provider_options=_nvidia_options(trt_max_workspace_size=str(2 << 30)),
            needs_static_shapes=False,
            schemes=("fp32", "fp16"),
            pip_package="onnxruntime-gpu (the JetPack wheel from NVIDIA's Jetson Zoo)",
            cache="TensorRT engine cache (first load builds engines for minutes; later loads reuse them)",
            notes="JetPack 6: install the onnxruntime-gpu wheel built for your JetPack/Python (Jetson Zoo), not the PyPI one; "
            "export with --static-shape to avoid engine rebuilds per shape; set NANOEDGE_CACHE_DIR to persistent storage.",
        ),
        TargetProfile(
            name="qnn",
            description="Qualcomm Hexagon NPU (HTP) through the onnxruntime-qnn plugin",
            providers=("QNNExecutionProvider",),
            provider_options={"QNNExecutionProvider": {"htp_performance_mode": "burst", "htp_graph_finalization_optimization_mode": "3"}},
            needs_static_shapes=True,
            schemes=("w8a16", "w8a8"),
            pip_package="onnxruntime-qnn",
            plugin="onnxruntime_qnn",
            full_offload=True,
            session_config={"session.disable_cpu_ep_fallback": "1"},
            cache="QNN context binaries (nanoedge compile --target qnn)",
            notes="Export with --static-shape WxH --target qnn and quantize w8a16 (or w8a8); on x86-64 the HTP runs as a simulator.",
        ),
        TargetProfile(
            name="openvino",
            description="Intel CPU/GPU/NPU through the OpenVINO execution provider",
            providers=("OpenVINOExecutionProvider", "CPUExecutionProvider"),
            provider_options={"OpenVINOExecutionProvider": {"device_type": "NPU", "cache_dir": "{cache_dir}/openvino"}},
            needs_static_shapes=True,
            schemes=("fp32", "int8"),
            pip_package="onnxruntime-openvino",
            cache="OpenVINO model cache (cache_dir)",
            notes="device_type NPU by default; NANOEDGE_OPENVINO_DEVICE=CPU|GPU|NPU overrides. NPUs need static shapes.",
        ),
        TargetProfile(
            name="openvino-cpu",
            description="Intel CPUs through OpenVINO's CPU plugin (onnxruntime-ep-openvino): INT8 on AMX/VNNI, BF16 where the CPU has it",
            providers=("OpenVINOExecutionProvider",),
            schemes=("fp32", "int8"),
            pip_package="onnxruntime-ep-openvino",
            plugin="onnxruntime_ep_openvino",
            plugin_device={"ov_device": "CPU"},
            cpu_vendors=("Intel",),
            instead="openvino-native",
            cache="OpenVINO model cache (NANOEDGE_CACHE_DIR/openvino-cpu; NANOEDGE_OPENVINO_CACHE=0 turns it off)",
            notes="OpenVINO runs float ops in BF16 on CPUs with AMX or AVX-512-BF16 (its default; images differ from FP32 "
            "by ~49 dB PSNR per UNet step); NANOEDGE_OPENVINO_PRECISION=f32 keeps FP32 (slower). Ops OpenVINO lacks run "
            "on onnxruntime's CPU provider.",
        ),
        TargetProfile(
            name="openvino-native",
            description="any x86-64 (AVX2 and up) or ARM64 CPU through OpenVINO's own runtime: "
            "INT8 on VNNI/AVX2/AMX, BF16 where the CPU has it",
            providers=("OpenVINO CPU",),
            schemes=("fp32", "int8"),
            pip_package="openvino",
            backend="openvino",
            cache="OpenVINO model cache (NANOEDGE_CACHE_DIR/openvino-native; NANOEDGE_OPENVINO_CACHE=0 turns it off)",
            notes="The same packages as cpu, read by the openvino package (not onnxruntime): works on AMD and Intel alike. "
            "Float ops run in BF16 where the CPU has AVX-512-BF16/AMX (OpenVINO's default); NANOEDGE_OPENVINO_PRECISION=f32 keeps FP32.",
        ),
        TargetProfile(
            name="coreml",
            description="Apple Neural Engine / GPU through the Core ML execution provider",
            providers=("CoreMLExecutionProvider", "CPUExecutionProvider"),
            provider_options={
                "CoreMLExecutionProvider": {
                    "ModelFormat": "MLProgram",
                    "MLComputeUnits": "ALL",
                    "ModelCacheDirectory": "{cache_dir}/coreml",
                }
            },
            needs_static_shapes=True,
            schemes=("fp32", "fp16"),
            pip_package="onnxruntime (macOS wheels include Core ML)",
            cache="Core ML compiled model cache",
            notes="macOS/iOS only; static shapes let the Neural Engine take the UNet.",
        ),
        TargetProfile(
            name="xnnpack",
            description="ARM CPUs (Android, Raspberry Pi) through the XNNPACK execution provider",
            providers=("XnnpackExecutionProvider", "CPUExecutionProvider"),
            schemes=("fp32", "int8"),
            pip_package="onnxruntime built with --use_xnnpack (onnxruntime-android on Android)",
            notes="The PyPI onnxruntime wheel does not include XNNPACK.",
        ),
    )
}

# Preference order for target="auto": the first usable one wins.
AUTO_ORDER = ("jetson", "cuda", "qnn", "openvino", "coreml", "xnnpack", "openvino-cpu", "openvino-native", "cpu")

#: Targets that run on the host CPU: ``auto`` measures among those rather than trusting the order.
CPU_TARGETS = ("openvino-cpu", "openvino-native", "cpu")


def known_targets() -> list[str]:
    return list(_PROFILES)


def get_profile(name: str) -> TargetProfile:
    try:
        return _PROFILES[name.lower()]
    except KeyError:
        raise InvalidRequestError(f"unknown target '{name}'", hint=f"known targets: {', '.join(['auto', *_PROFILES])}") from None


def package_misfit(profile: TargetProfile, manifest: Manifest | None) -> str | None:
    """Why a package does not suit ``profile`` (None when it does or when unknown)."""
    if manifest is None:
        return None
    compiled_for = manifest.compiled_for
    if compiled_for and compiled_for != profile.name:
        return f"this package is precompiled for {compiled_for} and runs only there (use the package it was compiled from)"
    if profile.needs_static_shapes and not manifest.sizes.get("static"):
        return f"{profile.name} needs static shapes and this package is dynamic (export with --static-shape WxH)"
    precisions = manifest.precisions
    if profile.full_offload and not precisions & set(profile.schemes):
        return f"{profile.name} needs a {' or '.join(profile.schemes)} package, this one is {', '.join(sorted(precisions))}"
    return None

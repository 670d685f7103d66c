"""Is a target usable on this machine, and if not, why and what to install.

Detection never raises: ``nanoedge targets`` lists every profile with a reason, and
``target="auto"`` walks them in preference order.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from .cpuinfo import cpu_info
from .plugins import plugin_devices
from .profiles import TargetProfile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TargetStatus:
    usable: bool
    reason: str
    hint: str | None = None
    providers: tuple[str, ...] = ()
    simulated: bool = False  # e.g. the QNN HTP simulator on x86-64: works, but not for speed


def _is_jetson() -> bool:
    return os.path.exists("/etc/nv_tegra_release") or os.path.exists("/sys/module/tegra_fuse")


def _detect_openvino_native() -> TargetStatus:
    """The openvino package's CPU device, with the capabilities that make it worth using."""
    from nanoedge.core.errors import TargetUnavailableError

    from .openvino_native import device_summary

    try:
        name, capabilities = device_summary()
    except TargetUnavailableError as exc:
        return TargetStatus(False, exc.message, exc.hint)
    except Exception as exc:  # a broken install must not crash `nanoedge targets`
        return TargetStatus(False, f"openvino could not start: {exc}", "reinstall openvino")
    if not name:
        return TargetStatus(False, "OpenVINO offers no CPU device here (it needs AVX2 on x86-64, or ARM64)", "use target cpu")
    kinds = "/".join(c for c in ("INT8", "BF16", "FP32") if c in capabilities)
    return TargetStatus(True, f"OpenVINO CPU ({name.strip()}): {kinds}", providers=("OpenVINO CPU",))


def detect(profile: TargetProfile) -> TargetStatus:
    if profile.backend == "openvino":
        return _detect_openvino_native()
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    if profile.plugin:
        try:
            devices = plugin_devices(profile)
        except ImportError:
            return TargetStatus(False, f"the {profile.plugin} package is not installed", f"pip install {profile.pip_package}")
        except Exception as exc:  # a broken plugin install must not crash `nanoedge targets`
            return TargetStatus(False, f"{profile.accelerator} could not be registered: {exc}", f"reinstall {profile.pip_package}")
        if not devices:
            return _no_device(profile)
        kinds = sorted({str(d.device.type).split(".")[-1] for d in devices})
        # Qualcomm's HTP on an x86-64 host is the simulator; OpenVINO's CPU device is the real CPU.
        simulated = profile.plugin == "onnxruntime_qnn" and os.uname().machine in ("x86_64", "AMD64")
        note = " (x86-64 HTP simulator)" if simulated else ""
        return TargetStatus(
            True,
            f"{profile.accelerator} from {profile.plugin}{note}, devices: {', '.join(kinds)}",
            providers=(profile.accelerator,),
            simulated=simulated,
        )
    if profile.name == "jetson" and not _is_jetson():
        return TargetStatus(False, "not a Jetson device (no /etc/nv_tegra_release)", "use target cuda on other NVIDIA GPUs")
    accelerators = [p for p in profile.providers if p != "CPUExecutionProvider" and p in available]
    if profile.name == "cpu":
        return TargetStatus(True, "CPUExecutionProvider is always available", providers=("CPUExecutionProvider",))
    if not accelerators:
        return TargetStatus(
            False,
            f"this onnxruntime ({ort.__version__}) has no {' or '.join(p for p in profile.providers if p != 'CPUExecutionProvider')}",
            f"install {profile.pip_package}",
        )
    return TargetStatus(True, f"{', '.join(accelerators)} available", providers=tuple(accelerators) + ("CPUExecutionProvider",))


def _no_device(profile: TargetProfile) -> TargetStatus:
    """A plugin that loads but offers no device: say why when the CPU's vendor explains it."""
    vendor = cpu_info().vendor
    instead = f"use --target {profile.instead}" if profile.instead else None
    if profile.cpu_vendors and vendor not in profile.cpu_vendors:
        allowed = " and ".join(profile.cpu_vendors)
        return TargetStatus(
            False, f"unavailable on this {vendor} CPU ({profile.pip_package} offers devices on {allowed} CPUs only)", instead
        )
    return TargetStatus(False, f"{profile.accelerator} registered but reports no device on this {vendor} CPU", instead)


def detect_all(profiles: list[TargetProfile]) -> dict[str, TargetStatus]:
    return {p.name: detect(p) for p in profiles}

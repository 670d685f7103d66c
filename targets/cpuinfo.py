"""What CPU this is: vendor, model and the instruction sets that decide which kernels are fast.

Targets are chosen from ISA flags, not vendor names, except where a vendor's own software
refuses other vendors' CPUs (onnxruntime's OpenVINO plugin offers its CPU device on Intel CPUs
only). Benchmarks and CI print :func:`describe` so every figure names the CPU it came from.
Reads ``/proc/cpuinfo`` on Linux; elsewhere only the architecture and the processor string
are known, and no ISA extension is claimed.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path

#: Flags (as Linux spells them) -> the names docs and benchmarks use, in the order printed.
X86_FEATURES: tuple[tuple[str, str], ...] = (
    ("avx2", "AVX2"),
    ("fma", "FMA"),
    ("avx_vnni", "AVX-VNNI"),
    ("avx512f", "AVX-512"),
    ("avx512_vnni", "AVX-512-VNNI"),
    ("avx512_bf16", "AVX-512-BF16"),
    ("avx512_fp16", "AVX-512-FP16"),
    ("amx_int8", "AMX-INT8"),
    ("amx_bf16", "AMX-BF16"),
)
ARM_FEATURES: tuple[tuple[str, str], ...] = (
    ("asimd", "NEON"),
    ("asimddp", "DOTPROD"),
    ("i8mm", "I8MM"),
    ("bf16", "BF16"),
    ("sve", "SVE"),
)
_VENDORS = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD", "HygonGenuine": "Hygon", "CentaurHauls": "Centaur"}
# aarch64 /proc/cpuinfo gives a JEDEC implementer code instead of a vendor string.
_ARM_IMPLEMENTERS = {
    "0x41": "Arm", "0x42": "Broadcom", "0x43": "Cavium", "0x4e": "NVIDIA", "0x51": "Qualcomm", "0x61": "Apple", "0xc0": "Ampere",
}


@dataclass(frozen=True)
class CpuInfo:
    """One machine's CPU as the kernels see it."""

    arch: str  # platform.machine(): x86_64, aarch64, arm64, ...
    vendor: str  # "Intel", "AMD", "Arm", ... or the raw string, "unknown" when not readable
    model: str
    flags: frozenset[str]

    @property
    def features(self) -> tuple[str, ...]:
        """The ISA extensions that matter for our kernels, by their usual names."""
        table = ARM_FEATURES if self.arch in ("aarch64", "arm64") else X86_FEATURES
        return tuple(name for flag, name in table if flag in self.flags)

    def has(self, feature: str) -> bool:
        """True if the CPU has ``feature``, given by its usual name (``"AVX-512-VNNI"``) or flag."""
        return feature in self.features or feature.lower() in self.flags

    @property
    def kind(self) -> str:
        """The class of kernels the CPU gets: the benchmarks keep one table per kind."""
        if self.has("AMX-INT8"):
            return "AMX"
        if self.has("AVX-512-VNNI"):
            return "AVX-512-VNNI" + ("+BF16" if self.has("AVX-512-BF16") else "")
        if self.has("AVX-VNNI"):
            return "AVX-VNNI"
        if self.has("AVX2"):
            return "AVX2"
        if self.arch in ("aarch64", "arm64"):
            return "ARM64" + ("+I8MM" if self.has("I8MM") else "+DOTPROD" if self.has("DOTPROD") else "")
        return self.arch

    def describe(self) -> str:
        """One line for logs and benchmark records, e.g. ``AMD EPYC (AMD, x86_64): AVX2 FMA ...``."""
        features = " ".join(self.features) or "no SIMD extensions detected"
        return f"{self.model} ({self.vendor}, {self.arch}): {features}"

    def as_dict(self) -> dict[str, object]:
        return {"arch": self.arch, "vendor": self.vendor, "model": self.model, "kind": self.kind, "features": list(self.features)}


def parse_cpuinfo(text: str, arch: str) -> CpuInfo:
    """Build a :class:`CpuInfo` from the text of ``/proc/cpuinfo`` (first processor's block)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # one processor is enough: all cores of a machine are alike here
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    raw_vendor = fields.get("vendor_id", "")
    vendor = _VENDORS.get(raw_vendor, raw_vendor)
    if not vendor and "CPU implementer" in fields:
        vendor = _ARM_IMPLEMENTERS.get(fields["CPU implementer"].lower(), fields["CPU implementer"])
    model = fields.get("model name") or fields.get("Model") or fields.get("Hardware") or platform.processor() or arch
    flags = frozenset((fields.get("flags") or fields.get("Features") or "").split())
    return CpuInfo(arch=arch, vendor=vendor or "unknown", model=model, flags=flags)


@functools.lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """This machine's CPU (read once per process)."""
    arch = platform.machine() or "unknown"
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text(errors="replace"), arch)
    except OSError:  # not Linux: no flags to read without native code
        return CpuInfo(arch=arch, vendor="unknown", model=platform.processor() or arch, flags=frozenset())


def main() -> None:
    """Print the line CI and benchmark logs start with (the Makefile's test target calls it)."""
    info = cpu_info()
    print(f"CPU: {info.describe()} [kind {info.kind}]")

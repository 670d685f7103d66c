"""CPU features that decide a recipe's weight type (read from /proc/cpuinfo, no imports)."""

from __future__ import annotations

import platform


def cpu_has_int8_dot_product() -> bool:
    """True where u8 x s8 products accumulate without 16-bit saturation (VNNI, AMX, ARM)."""
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        return True
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    except OSError:
        pass
    return False  # unknown: take the safe choice

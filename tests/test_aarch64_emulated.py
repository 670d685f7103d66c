"""aarch64 end to end under qemu-user: lean install from aarch64 wheels, an image from the demo INT8 package.

Slow (an arm64 Debian root, a pip install and a generation, all emulated: minutes) and it
needs root, debootstrap, qemu-user-static and network access to Debian's archive and PyPI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "aarch64_emulated.sh"


@pytest.mark.slow
def test_lean_runtime_generates_on_emulated_aarch64(tmp_path: Path):
    missing = [tool for tool in ("debootstrap", "qemu-aarch64-static", "chroot", "dpkg-deb") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install -y debootstrap qemu-user-static)")
    if os.geteuid() != 0:
        pytest.skip("needs root (debootstrap and chroot)")
    work = Path(os.environ.get("NANOEDGE_AARCH64_WORK", tmp_path / "aarch64"))  # reuse a root across runs
    proc = subprocess.run(
        ["bash", str(SCRIPT), str(work)], capture_output=True, text=True, timeout=3600, env={**os.environ, "PYTHON": sys.executable}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((work / "result.json").read_text())
    assert record["aarch64"]["onnxruntime"]
    # Same package, seed and scheduler on two ISAs: float rounding may differ, the image may not.
    assert record["identical"] or record["psnr_db_aarch64_vs_x86_64"] >= 30, record

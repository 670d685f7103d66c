#!/usr/bin/env bash
# aarch64, end to end under emulation: the lean runtime (base install, no extras) installed
# from aarch64 wheels into a Debian arm64 root, generating an image from the shipped demo
# INT8 package, compared with the same package and seed on this (x86-64) host.
#
#   bash scripts/aarch64_emulated.sh [WORK]        # default WORK: /tmp/nanoedge-aarch64
#   PACKAGE=runtime/models/default bash scripts/aarch64_emulated.sh WORK   # another package (default: the demo INT8)
#   REUSE_INSTALL=1 ...                           # keep WORK's arm64 install (same checkout)
#
# Needs (Debian): debootstrap qemu-user-static (apt-get install -y debootstrap qemu-user-static),
# root (chroot), and access to Debian's archive and to the Python package index.
#
# Why these steps:
# - `debootstrap --foreign` fetches and unpacks an arm64 Debian without running any arm64 code.
#   Its second stage runs arm64 maintainer scripts, which needs binfmt_misc (absent in most
#   containers), so the .debs (python3 and its dependencies included) are unpacked with
#   `dpkg-deb -x` instead: enough for Python, which needs no maintainer script.
# - Wheels are fetched on the host with `pip download --platform ... --only-binary=:all:` (no
#   sdist may sneak in: an aarch64 wheel exists for every runtime dependency), then the arm64
#   interpreter's own pip installs them from that folder with --no-index, so the tags are
#   checked by the aarch64 Python itself.
# - Everything arm64 runs as `chroot ROOT /usr/bin/qemu-aarch64-static ...`, which needs no
#   binfmt registration (nothing in the runtime starts a subprocess).
#
# Writes WORK/result.json: versions, wall times, the PSNR of the aarch64 image against the
# x86-64 one, and both images.
set -euo pipefail

WORK=${1:-/tmp/nanoedge-aarch64}
REPO=$(cd "$(dirname "$0")/.." && pwd)
HOST_PYTHON=${PYTHON:-python3}
SUITE=${NANOEDGE_DEBIAN_SUITE:-bookworm}
MIRROR=${NANOEDGE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGE=$(cd "$REPO" && realpath "${PACKAGE:-runtime/models/default-int8}")
PROMPT="a red circle on the left"
SEED=1
ROOT="$WORK/root"

for tool in debootstrap dpkg-deb chroot; do
    command -v "$tool" >/dev/null || { echo "error: $tool is missing: apt-get install -y debootstrap qemu-user-static" >&2; exit 2; }
done
QEMU=$(command -v qemu-aarch64-static || true)
[ -n "$QEMU" ] || { echo "error: qemu-aarch64-static is missing: apt-get install -y qemu-user-static" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "error: run as root (debootstrap and chroot need it)" >&2; exit 2; }
mkdir -p "$WORK"
started=$(date +%s)

# 1. arm64 Debian root with python3 and pip, unpacked without running arm64 code.
if [ ! -x "$ROOT/usr/bin/python3" ]; then
    echo "== debootstrap --foreign arm64 $SUITE" >&2
    rm -rf "$ROOT"
    debootstrap --foreign --arch=arm64 --variant=minbase --include=python3,python3-pip "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
    for deb in "$ROOT"/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$ROOT"; done
fi
cp "$QEMU" "$ROOT/usr/bin/qemu-aarch64-static"
# onnxruntime opens external-data files through /proc/self/fd: the root needs its own /proc.
# No /sys: the host's describes x86-64 CPUs, and onnxruntime's cpuinfo crashed qemu reading it
# (without it onnxruntime warns "cpuinfo_initialize failed" and runs on; speed under emulation means nothing anyway).
mkdir -p "$ROOT/proc"
mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
trap 'umount "$ROOT/proc" 2>/dev/null || true' EXIT
arm() { chroot "$ROOT" /usr/bin/qemu-aarch64-static "$@"; }
ARM_PY_VERSION=$(arm /usr/bin/python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
ARM_MACHINE=$(arm /usr/bin/python3 -c 'import platform; print(platform.machine())')
echo "== arm64 root: Python $ARM_PY_VERSION on $ARM_MACHINE (emulated)" >&2
[ "$ARM_MACHINE" = aarch64 ] || { echo "error: the root's python reports $ARM_MACHINE, not aarch64" >&2; exit 1; }
root_done=$(date +%s)

# 2. The lean runtime's wheels for aarch64, fetched on the host; nanoedge itself is pure Python.
if [ "${REUSE_INSTALL:-0}" = 1 ] && [ -d "$ROOT/opt/nanoedge/nanoedge" ]; then
    echo "== reusing the arm64 install in $ROOT/opt/nanoedge" >&2
else
rm -rf "$WORK/wheels" "$WORK/src" && mkdir -p "$WORK/wheels" "$WORK/src"
# from a copy of the tracked files: building in the checkout would leave build/ there
(cd "$REPO" && git ls-files -z | xargs -0 cp --parents -t "$WORK/src")
"$HOST_PYTHON" -m pip wheel --no-deps -q -w "$WORK/wheels" "$WORK/src" >&2
"$HOST_PYTHON" -m pip download -q --only-binary=:all: --implementation cp --python-version "$ARM_PY_VERSION" \
    --platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64 --platform manylinux_2_34_aarch64 \
    -d "$WORK/wheels" "$WORK"/wheels/nanoedge-*.whl >&2
ls "$WORK/wheels" >&2
if ls "$WORK/wheels" | grep -q -E "^torch-|^diffusers-|^transformers-"; then
    echo "error: the lean install pulled a heavy package" >&2; exit 1
fi

# 3. Install with the arm64 pip, from those wheels only.
rm -rf "$ROOT/wheels" "$ROOT/opt/nanoedge" "$ROOT/work" && cp -r "$WORK/wheels" "$ROOT/wheels"
arm /usr/bin/python3 -m pip install -q --no-compile --no-index --find-links /wheels --only-binary=:all: --target /opt/nanoedge nanoedge >&2
fi
installed=$(date +%s)

# 4. One image on aarch64 (emulated) and one on this host, same package and seed.
rm -rf "$ROOT/work" && mkdir -p "$ROOT/work" && cp -r "$PACKAGE" "$ROOT/work/pkg"
gen_started=$(date +%s)
# qemu-user hands the host environment to the guest; no arm64 `env` (it would exec python,
# which needs binfmt_misc).
PYTHONPATH=/opt/nanoedge HOME=/work NANOEDGE_CACHE_DIR=/work/cache arm /usr/bin/python3 -m nanoedge generate "$PROMPT" \
    -m /work/pkg --seed "$SEED" -o /work/aarch64.png >&2
gen_done=$(date +%s)
cp "$ROOT/work/aarch64.png" "$WORK/aarch64.png"
ARM_VERSIONS=$(PYTHONPATH=/opt/nanoedge arm /usr/bin/python3 -c \
    'import json, numpy, onnxruntime, PIL, tokenizers; print(json.dumps({"onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__, "pillow": PIL.__version__, "tokenizers": tokenizers.__version__}))')
(cd "$REPO" && "$HOST_PYTHON" -m nanoedge generate "$PROMPT" -m "$PACKAGE" --seed "$SEED" -o "$WORK/x86_64.png" >&2)

# 5. PSNR and the record.
"$HOST_PYTHON" - "$WORK" "$ARM_PY_VERSION" "$ARM_VERSIONS" "$SUITE" "${PACKAGE#"$REPO"/}" \
    $((root_done - started)) $((installed - root_done)) $((gen_done - gen_started)) "$(qemu-aarch64-static --version | head -1)" <<'EOF'
import json, platform, sys
from pathlib import Path
import numpy as np
from PIL import Image
work, py, versions, suite, package, root_s, install_s, gen_s, qemu = sys.argv[1:]
a = np.asarray(Image.open(Path(work) / "aarch64.png").convert("RGB"), dtype=np.float64)
b = np.asarray(Image.open(Path(work) / "x86_64.png").convert("RGB"), dtype=np.float64)
mse = float(np.mean((a - b) ** 2))
psnr = float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
record = {
    "package": package, "prompt": "a red circle on the left", "seed": 1,
    "image_size": list(a.shape[:2]), "psnr_db_aarch64_vs_x86_64": None if mse == 0 else round(psnr, 2), "identical": mse == 0,
    "max_abs_pixel_diff": int(np.max(np.abs(a - b))),
    "aarch64": {"debian": suite, "python": py, "emulator": qemu, **json.loads(versions)},
    "x86_64": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
    "seconds": {"arm64_root": int(root_s), "install": int(install_s), "generate_emulated": int(gen_s)},
}
(Path(work) / "result.json").write_text(json.dumps(record, indent=2))
(Path(work) / f"result-{Path(package).name}.json").write_text(json.dumps(record, indent=2))
print(json.dumps(record, indent=2))
EOF

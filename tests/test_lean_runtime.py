"""The runtime and targets never import torch, diffusers or transformers."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

HEAVY = ("torch", "diffusers", "transformers", "optimum", "onnx")

_PROBE = """
import atexit, json, sys
REPORT = sys.argv[1]
def report():
    with open(REPORT, "w") as handle:
        json.dump(sorted(m for m in sys.modules if m.split(".")[0] in {heavy}), handle)
atexit.register(report)
sys.argv = ["nanoedge"] + sys.argv[2:]
from nanoedge.cli.main import main
main()
"""


def _imported_during(args: list[str], tmp_path: Path) -> list[str]:
    report = tmp_path / "modules.json"
    code = _PROBE.replace("{heavy}", repr(set(HEAVY)))
    proc = subprocess.run([sys.executable, "-c", code, str(report), *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(report.read_text())


def test_generate_never_imports_heavy_packages(tiny_package: Path, tmp_path: Path):
    out = tmp_path / "x.png"
    assert _imported_during(["generate", "a red circle", "-m", str(tiny_package), "-o", str(out), "--seed", "1"], tmp_path) == []
    assert out.is_file()


def test_info_and_help_never_import_heavy_packages(tiny_package: Path, tmp_path: Path):
    assert _imported_during(["info", str(tiny_package)], tmp_path) == []
    assert _imported_during(["--help"], tmp_path) == []


def test_runtime_and_targets_modules_import_lean():
    code = (
        "import sys, pkgutil, importlib, nanoedge.runtime, nanoedge.targets\n"
        "for pkg in (nanoedge.runtime, nanoedge.targets):\n"
        "    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        if '.server' in info.name: continue\n"
        "        importlib.import_module(info.name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {set(HEAVY)!r})\n"
        "print(','.join(bad))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_serve_needs_httpx_only_with_an_upstream(tiny_package):
    """httpx (the overflow client) is imported only when --upstream is used; without it,
    ``--upstream`` fails with the install hint instead of a traceback."""
    pytest.importorskip("starlette")
    code = (
        "import sys\n"
        "sys.modules['httpx'] = None  # any 'import httpx' now raises ImportError\n"
        "from click.testing import CliRunner\n"
        "from nanoedge.runtime.server import ServerSettings, create_app\n"
        "from nanoedge.cli.main import cli\n"
        "create_app(lambda: None, ServerSettings())\n"
        "assert CliRunner().invoke(cli, ['serve', '--help']).exit_code == 0\n"
        f"result = CliRunner().invoke(cli, ['serve', '-m', {str(tiny_package)!r}, '--upstream', 'http://127.0.0.1:9/v1'])\n"
        "assert result.exit_code != 0 and \"pip install 'nanoedge[serve]'\" in result.output, result.output\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_base_install_depends_on_no_heavy_package():
    requirements = metadata.requires("nanoedge") or []
    base = [r for r in requirements if "extra ==" not in r]
    names = {r.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower() for r in base}
    assert names == {"onnxruntime", "numpy", "tokenizers", "pillow", "click"}
    for heavy in ("torch", "diffusers", "transformers"):
        assert heavy not in names


def test_torch_is_pinned_wherever_installed():
    requirements = metadata.requires("nanoedge") or []
    torch_reqs = [r for r in requirements if r.lower().startswith("torch")]
    assert torch_reqs, "the [export] extra must bring torch"
    assert all(r.split(";")[0].strip() == "torch==2.13.0" for r in torch_reqs)


@pytest.mark.parametrize("folder", ["runtime", "targets"])
def test_no_heavy_import_statements_in_source(folder: str):
    root = Path(__file__).resolve().parents[1] / folder
    offenders = []
    for path in root.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith(("import ", "from ")) and stripped.split()[1].split(".")[0] in (
                "torch",
                "diffusers",
                "transformers",
                "optimum",
            ):
                offenders.append(f"{path}:{number}: {stripped}")
    assert offenders == []

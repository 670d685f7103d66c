"""The CLI as users run it: subprocesses, exit codes, one-line errors without tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli


def test_generate_twice_gives_identical_png_bytes(tiny_package: Path, tmp_path: Path):
    for name in ("a.png", "b.png"):
        proc = run_cli("generate", "a red circle", "-m", str(tiny_package), "-o", str(tmp_path / name), "--seed", "1")
        assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_generate_json_and_numbered_files(tiny_package: Path, tmp_path: Path):
    proc = run_cli(
        "generate", "a cat", "-m", str(tiny_package), "-o", str(tmp_path / "cat.png"),
        "--n", "2", "--steps", "3", "--scheduler", "euler_a", "--size", "64x96", "--seed", "3", "--json",
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["files"] == [str(tmp_path / "cat-1.png"), str(tmp_path / "cat-2.png")]
    assert summary["seed"] == 3 and summary["steps"] == 3 and summary["scheduler"] == "euler_a" and summary["size"] == "64x96"
    assert all(Path(f).is_file() for f in summary["files"])


def test_info_shows_parameters_per_component(tiny_package: Path):
    proc = run_cli("info", str(tiny_package))
    assert proc.returncode == 0, proc.stderr
    for name in ("text_encoder", "unet", "vae_decoder", "M params", "total"):
        assert name in proc.stdout
    data = json.loads(run_cli("info", str(tiny_package), "--json").stdout)
    assert data["components"]["unet"]["parameters"] > 0


def test_errors_are_one_line_with_a_hint(tiny_package: Path, tmp_path: Path):
    cases = [
        (("generate", "x", "-m", str(tmp_path / "missing")), "does not exist", 3),
        (("generate", "x", "-m", str(tiny_package), "--size", "65x64"), "not a multiple of 8", 2),
        (("generate", "x", "-m", str(tiny_package), "--scheduler", "warp"), "unknown", 2),
        (("generate", "x", "-m", str(tiny_package), "--target", "tpu"), "unknown target", 2),
        (("export", "preset:nope", "-o", str(tmp_path / "o")), "unknown preset", 2),
        (("info", str(tmp_path)), "no nanoedge.json", 3),
    ]
    for args, message, code in cases:
        proc = run_cli(*args)
        assert proc.returncode == code, (args, proc.returncode, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
        assert "hint:" in proc.stderr or "error:" in proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr


def test_verbose_shows_the_traceback(tmp_path: Path):
    proc = run_cli("-v", "generate", "x", "-m", str(tmp_path / "missing"))
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr


def test_export_cli_end_to_end(tmp_path: Path):
    out = tmp_path / "pkg"
    proc = run_cli("export", "preset:tiny-random", "-o", str(out), "--static-shape", "64x64", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["components"]["unet"]["max_abs_diff"] < 1e-3
    assert (out / "nanoedge.json").is_file()
    again = run_cli("export", "preset:tiny-random", "-o", str(out))
    assert again.returncode == 2 and "--overwrite" in again.stderr

"""``nanoedge quantize`` as users run it: per-component choice, JSON, ``info``, and the gate failing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

pytest.importorskip("onnx")

FAST = [
    "--calibration-prompts",
    "2",
    "--eval-prompts",
    "1",
    "--steps",
    "2",
    "--size",
    "32x32",
    "--report-samples",
    "4",
    "--sensitivity-samples",
    "2",
]


@pytest.fixture(scope="module")
def trajectories(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli-trajectories") / "store"


def test_per_component_choice_json_and_info(tiny_package: Path, tmp_path: Path, trajectories: Path):
    out = tmp_path / "q"
    proc = run_cli(
        "quantize",
        str(tiny_package),
        "-o",
        str(out),
        "--scheme",
        "weight-only",
        "--unet",
        "int8",
        "--text-encoder",
        "fp32",
        "--min-component-psnr",
        "0",
        "--min-psnr",
        "0",
        "--min-responsiveness",
        "0",
        "--calibration-dir",
        str(trajectories),
        "--json",
        *FAST,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["passed"] and summary["package"] == str(out)
    assert summary["schemes"] == {"text_encoder": "fp32", "unet": "int8", "vae_decoder": "weight-only"}
    report = summary["report"]
    assert report["components"]["text_encoder"]["identical"] is True
    assert report["components"]["unet"]["scheme"] == "int8" and report["size"]["unet_ratio"] < 0.8
    source = json.loads((tiny_package / "nanoedge.json").read_text())
    written = json.loads((out / "nanoedge.json").read_text())
    assert written["files"]["text_encoder/model.onnx"]["sha256"] == source["files"]["text_encoder/model.onnx"]["sha256"]
    assert written["files"]["unet/model.onnx_data"]["sha256"] != source["files"]["unet/model.onnx_data"]["sha256"]

    info = run_cli("info", str(out))
    assert info.returncode == 0, info.stderr
    for text in (
        "quantized  scheme weight-only",
        "unet int8",
        "vae_decoder weight-only",
        "image PSNR",
        "responsiveness",
        "gate",
        "calibration 2 prompts",
    ):
        assert text in info.stdout, (text, info.stdout)
    generated = run_cli("generate", "a red circle", "-m", str(out), "-o", str(tmp_path / "x.png"), "--steps", "2", "--seed", "1")
    assert generated.returncode == 0, generated.stderr


def test_gate_failure_exits_non_zero_and_writes_nothing(tiny_package: Path, tmp_path: Path, trajectories: Path):
    out = tmp_path / "never"
    proc = run_cli(
        "quantize",
        str(tiny_package),
        "-o",
        str(out),
        "--scheme",
        "int8",
        "--min-psnr",
        "200",
        "--min-responsiveness",
        "5",
        "--max-attempts",
        "1",
        "--max-size-ratio",
        "1.0",
        "--calibration-dir",
        str(trajectories),
        "--json",
        *FAST,
    )
    assert proc.returncode == 6, proc.stderr
    assert "missed the quality gate" in proc.stderr and "nothing was written" in proc.stderr
    assert "median image PSNR" in proc.stderr and "< 200 dB" in proc.stderr
    assert "prompt responsiveness" in proc.stderr and "< 5" in proc.stderr
    assert "hint:" in proc.stderr and "Traceback" not in proc.stderr
    failed = json.loads(proc.stdout)
    assert failed["passed"] is False and len(failed["attempts"]) == 2  # all quantized, then one mixed-precision try
    assert all(a["shortfalls"] for a in failed["attempts"])
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".never")]  # no staging folder left behind


def test_bad_arguments_fail_fast_with_a_hint(tiny_package: Path, tmp_path: Path):
    cases = [
        (("--scheme", "int4"), "Invalid value", 2),
        (("--prompts", str(tmp_path / "none.txt")), "does not exist", 2),
        (("--guidance", "1"), "classifier-free guidance", 2),
        (("--calibration-prompts", "100"), "the file has", 2),
        (("--size", "33x32"), "not a multiple of 8", 2),
        (("--max-attempts", "-1"), "--max-attempts must be >= 0", 2),  # the library says max_attempts
        (("--max-size-ratio", "0"), "--max-size-ratio must be in (0, 1]", 2),
    ]
    for args, message, code in cases:
        proc = run_cli("quantize", str(tiny_package), "-o", str(tmp_path / "o"), *args)
        assert proc.returncode == code, (args, proc.returncode, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert not (tmp_path / "o").exists()

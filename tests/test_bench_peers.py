"""The peers' part of the comparison harness on canned records: no peer needs to be installed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import peers  # noqa: E402
from compare_report import summarize  # noqa: E402
from peers_report import cpu_heading, drop_incomparable_psnr, peer_targets, peers_section, peers_table, stage_table  # noqa: E402

KINDS = {"diffusers": "diffusers", "optimum": "optimum", "int8": "nanoedge", "sdcpp-q8_0": "sdcpp", "ov-int8w": "openvino-genai"}
CPU = {"arch": "x86_64", "vendor": "AMD", "model": "AMD EPYC", "kind": "AVX-512-VNNI+BF16", "features": ["AVX2", "AVX-512-VNNI"]}


def _run(variant, image_s, rss, psnr=None, config="512x512-s4-g1", stages=None, comparable=True, ok=True, round_index=1):
    info = {"comparable_pixels": comparable}
    if stages:
        info["stages"] = stages
    return {
        "phase": "main",
        "config": config,
        "size": "512x512",
        "steps": 4,
        "guidance": 1.0,
        "variant": variant,
        "kind": KINDS[variant],
        "round": round_index,
        "ok": ok,
        "image_s": image_s,
        "image_cpu_s": image_s,
        "cold_start_s": 10.0,
        "peak_rss_mib": rss,
        "model_bytes": 1_000_000,
        "psnr_vs_diffusers": psnr,
        "info": info,
        "error": "boom",
        "image": f"images/{config}/{variant}-r{round_index}.png",
    }


def _canned():
    return [
        _run("diffusers", [40.0], 2000, psnr=float("inf")),
        _run("optimum", [30.0], 1800, psnr=60.0),
        _run("int8", [10.0], 900, psnr=31.0),
        _run(
            "sdcpp-q8_0",
            [50.0],
            1200,
            psnr=7.0,
            comparable=False,
            stages={"total_s": 50.0, "text_encoder_s": 1.0, "unet_step_s": 9.0, "vae_and_rest_s": 13.0},
        ),
        _run(
            "ov-int8w", [20.0], 2500, psnr=35.0, stages={"total_s": 20.0, "text_encoder_s": 0.5, "unet_step_s": 3.5, "vae_decoder_s": 5.0}
        ),
    ]


def test_incomparable_psnr_is_dropped_and_shown_as_such():
    runs = _canned()
    drop_incomparable_psnr(runs)
    assert runs[3]["psnr_vs_diffusers"] is None and runs[4]["psnr_vs_diffusers"] == 35.0
    table = peers_table(summarize(runs)["512x512-s4-g1"], list(KINDS), KINDS)
    assert "n/a (own RNG)" in next(line for line in table.splitlines() if line.startswith("| sdcpp-q8_0 "))


def test_peers_table_ratios_against_diffusers_and_fastest_peer():
    runs = _canned()
    drop_incomparable_psnr(runs)
    table = peers_table(summarize(runs)["512x512-s4-g1"], list(KINDS), KINDS)
    lines = table.splitlines()
    assert "fastest peer (ov-int8w)" in lines[0] and len(lines) == 2 + 5
    int8 = next(line for line in lines if line.startswith("| int8 "))
    # 40/10 vs diffusers, 20/10 vs the fastest peer; RSS 900/2000 and 900/2500
    assert "| 4.00× | 2.00× | 10.0 | 2.00× |" in int8 and "0.45×" in int8 and "0.36×" in int8 and "31.0 dB" in int8
    assert "| 0.40× |" in next(line for line in lines if line.startswith("| sdcpp-q8_0 "))  # 20/50


def test_peer_targets_met_and_missed():
    runs = _canned()
    drop_incomparable_psnr(runs)
    summary = summarize(runs)["512x512-s4-g1"]
    speed, quality, memory = peer_targets(summary, "int8", KINDS)
    assert speed["value"] == 2.0 and speed["met"] and "ov-int8w" in speed["target"]
    assert quality["value"] == pytest.approx(-4.0) and quality["met"] is False  # 31 dB < ov's 35 dB
    assert memory["value"] == pytest.approx(900 / 1200) and memory["met"] and "sdcpp-q8_0" in memory["target"]
    # the fastest peer draws its own noise: quality is 'not measurable', never 'met'
    slow_ov = [r for r in runs if r["variant"] != "ov-int8w"]
    _speed, quality, _memory = peer_targets(summarize(slow_ov)["512x512-s4-g1"], "int8", KINDS)
    assert quality["met"] is None and "not comparable" in quality["note"]
    assert peer_targets(summarize(runs[:3])["512x512-s4-g1"], "int8", KINDS) == []  # no peer measured
    no_reference = [dict(r, psnr_vs_diffusers=None) for r in runs if r["variant"] != "diffusers"]
    _speed, quality, _memory = peer_targets(summarize(no_reference)["512x512-s4-g1"], "int8", KINDS)
    assert quality["met"] is None and "diffusers' image" in quality["note"]


def test_stage_table_lists_runs_with_stages():
    table = stage_table(_canned(), "512x512-s4-g1")
    rows = table.splitlines()[2:]
    assert [r.split("|")[1].strip() for r in rows] == ["sdcpp-q8_0", "ov-int8w"]
    assert "| 9.00 | 13.00 |" in rows[0] and "| 3.50 | 5.00 |" in rows[1]
    assert stage_table(_canned(), "other-config") == ""


def test_cpu_heading_prefers_cpuinfo():
    assert cpu_heading({"cpu": CPU}).startswith("AVX-512-VNNI+BF16 — AMD EPYC (AMD, x86_64): AVX2")
    assert cpu_heading({"cpu_model": "X", "cpu_flags_of_note": ["avx2"]}) == "X: avx2"


def test_section_and_full_report_on_canned_records(tmp_path: Path):
    import compare_output
    from PIL import Image

    work, out = tmp_path / "work", tmp_path / "out"
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    runs = _canned()
    for run in runs:
        path = work / run["image"]
        path.parent.mkdir(parents=True, exist_ok=True)
        noisy = (
            reference if run["variant"] == "diffusers" else np.clip(reference.astype(int) + rng.integers(-3, 4, reference.shape), 0, 255)
        )
        Image.fromarray(noisy.astype(np.uint8)).save(path)
        run.update({"cpu_utilization": 1.0, "loadavg_before": [1.0], "loadavg_after": [1.0], "wall_s": 1.0})
    meta = {
        "started_utc": "t",
        "command": "python bench/compare.py run ...",
        "machine": {"cpu": CPU},
        "images_per_process": 1,
        "variants": [{"label": k, "kind": v, "path": "p"} for k, v in KINDS.items()],
        "configs": ["512x512-s4-g1"],
        "scaling": [],
        "rounds": 1,
        "scaling_rounds": 0,
        "scaling_variants": [],
    }
    (work / "meta.json").write_text(json.dumps(meta))
    (work / "runs.jsonl").write_text("\n".join(json.dumps(r) for r in runs) + "\n")
    result = compare_output.report(work, out)
    md = (out / "compare.md").read_text()
    assert "## Peers on AVX-512-VNNI+BF16" in md and "n/a (own RNG)" in md
    assert result["peers"]["targets"]["512x512-s4-g1"][0]["met"] is True
    assert (out / "peers-512x512-s4-g1.png").exists() and "peers-512x512-s4-g1.png" in result["charts"]
    sd = next(r for r in result["runs"] if r["variant"] == "sdcpp-q8_0")
    assert sd["psnr_vs_diffusers"] is None  # recomputed from the images, then dropped: its noise is its own
    lines, data = peers_section(meta, runs[:3], out, list(KINDS), "int8")
    assert lines == [] and data == {}


def test_expand_peer_labels():
    assert peers.expand_peer_labels(["sdcpp"]) == ["sdcpp-f32", "sdcpp-q8_0", "sdcpp-q4_0"]
    assert peers.expand_peer_labels(["ov-int8w,sdcpp-q8_0", "ov-int8w"]) == ["ov-int8w", "sdcpp-q8_0"]
    assert peers.expand_peer_labels(["all"]) == list(peers.PEERS)
    with pytest.raises(ValueError, match="unknown peer"):
        peers.expand_peer_labels(["llama"])


def test_peer_provenance(tmp_path: Path):
    work = tmp_path
    ckpt = work / "diffusers"
    (ckpt / "unet").mkdir(parents=True)
    (ckpt / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"weights")
    (ckpt / "compare_source.json").write_text(json.dumps({"preset": "bk-sdm-tiny", "seed": 0}))
    gguf = work / "sdcpp" / "q8_0.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"gguf")
    assert "missing" in peers.check_peer_provenance(gguf, work) and not peers.peer_ready("sdcpp", str(gguf))
    peers._write_provenance(gguf, ckpt, ["convert", "x"], 1.0, peers.weights_fingerprint(ckpt))
    assert peers.check_peer_provenance(gguf, work) is None and peers.peer_ready("sdcpp", str(gguf))
    assert json.loads(Path(str(gguf) + ".json").read_text())["command"] == "convert x"
    (ckpt / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"other weights")
    assert "other UNet weights" in peers.check_peer_provenance(gguf, work)
    (ckpt / "compare_source.json").write_text(json.dumps({"preset": "bk-sdm-tiny", "seed": 1}))
    assert "seed 0, not bk-sdm-tiny seed 1" in peers.check_peer_provenance(gguf, work)


def test_prepare_commands_name_each_tool(tmp_path: Path):
    sd = peers.prepare_command(peers.PEERS["sdcpp-q4_0"], tmp_path, 10)
    assert sd[-1] == "q4_0" and sd[-2].endswith("q4_0.gguf") and "lib.convert" in sd[2]
    ov = peers.prepare_command(peers.PEERS["ov-fp32"], tmp_path, 10)
    assert ov[1:3] == ["export", "openvino"] and ov[ov.index("--weight-format") + 1] == "fp32"
    int8w = peers.prepare_command(peers.PEERS["ov-int8w"], tmp_path, 10)
    assert "OVWeightQuantizationConfig(bits=8)" in int8w[2] and int8w[3:] == [
        str(tmp_path / "openvino/fp32"),
        str(tmp_path / "openvino/int8w"),
    ]
    hybrid = peers.prepare_command(peers.PEERS["ov-hybrid"], tmp_path, 10)
    assert "quant_method='hybrid'" in hybrid[2] and "num_samples=10" in hybrid[2] and json.loads(hybrid[-1]) == peers.CALIBRATION_PROMPTS


def test_run_cli_adds_peer_variants_with_options(tmp_path: Path, monkeypatch):
    import compare

    seen = {}
    monkeypatch.setattr(compare, "run_all", lambda args: seen.update(variants=args.variants, options=args.peer_options))
    monkeypatch.setattr(compare, "report", lambda *a, **k: None)
    compare.main(
        [
            "run",
            "--work",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
            "--no-optimum",
            "--peers",
            "sdcpp-q8_0,ov-fp32",
            "--peer-options",
            'sdcpp-q8_0={"diffusion_conv_direct": true}',
        ]
    )
    assert [v[:2] for v in seen["variants"]] == [("diffusers", "diffusers"), ("sdcpp-q8_0", "sdcpp"), ("ov-fp32", "openvino-genai")]
    assert seen["options"]["sdcpp-q8_0"]["diffusion_conv_direct"] is True and seen["options"]["sdcpp-q8_0"]["n_threads"] == 2
    assert peers.PEERS["sdcpp-q8_0"].options["diffusion_conv_direct"] is False  # the defaults are not mutated
    with pytest.raises(SystemExit):
        compare.main(["run", "--work", str(tmp_path), "--out", str(tmp_path / "o"), "--peer-options", "ov-fp32={}"])


def test_requirements_file_matches_the_peers_extra():
    import tomllib

    root = Path(__file__).resolve().parents[1]
    extra = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]["peers"]
    listed = [
        line.strip()
        for line in (root / "bench" / "requirements-peers.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert sorted(listed) == sorted(extra)
    assert "torch==2.13.0" in listed and not any(line.startswith("torch") and line != "torch==2.13.0" for line in listed)


def test_quantized_openvino_export_gets_the_fp32_exports_tokenizer_models(tmp_path: Path):
    fp32, int8w = tmp_path / "fp32", tmp_path / "int8w"
    (fp32 / "tokenizer").mkdir(parents=True)
    (int8w / "tokenizer").mkdir(parents=True)
    for name in ("openvino_tokenizer.xml", "openvino_tokenizer.bin", "openvino_detokenizer.xml", "vocab.json"):
        (fp32 / "tokenizer" / name).write_text(name)
    (int8w / "tokenizer" / "vocab.json").write_text("own")
    copied = peers.copy_openvino_tokenizer(fp32, int8w)
    assert copied == ["openvino_detokenizer.xml", "openvino_tokenizer.bin", "openvino_tokenizer.xml"]
    assert (int8w / "tokenizer" / "vocab.json").read_text() == "own" and peers.copy_openvino_tokenizer(fp32, int8w) == []

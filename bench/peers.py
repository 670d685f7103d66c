"""The peers nanoedge races in ``bench/compare.py``: stable-diffusion.cpp and OpenVINO GenAI.

Both get the same weights as every other variant: ``prepare`` converts ``WORK/diffusers`` (the
preset's deterministic random draw) with each peer's own tool, and records the exact command
and the source's preset/seed plus a fingerprint of its UNet weights next to the result, so
``run`` can refuse a peer model that came from other weights (as it refuses a nanoedge package
whose manifest names another preset or seed).

    WORK/sdcpp/<wtype>.gguf         stable-diffusion.cpp's own conversion (sd_cpp convert), f32 / q8_0 / q4_0
    WORK/openvino/fp32              optimum-cli export openvino --weight-format fp32
    WORK/openvino/int8w             optimum-intel INT8 weight compression of that export (what
                                    --weight-format int8 applies)
    WORK/openvino/hybrid            optimum-intel hybrid INT8 of that export (NNCF: UNet weights +
                                    activations, calibrated on prompts; other models' weights INT8)

Peer packages install with ``pip install -r bench/requirements-peers.txt`` (see that file).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("bench.peers")

HERE = Path(__file__).resolve().parent
PROVENANCE = "compare_export.json"

# prompts for the hybrid INT8 calibration (optimum-intel runs the whole pipeline on each and
# records the UNet's inputs at every step); none of them is the benchmark's prompt
CALIBRATION_PROMPTS = [
    "a lighthouse on a rocky coast at sunset, oil painting",
    "a bowl of ramen on a wooden table, studio photo",
    "an astronaut riding a horse in a desert, digital art",
    "a snowy mountain village at night with warm windows",
    "a close-up of a hummingbird drinking from a flower",
    "a busy street market in the rain, cinematic lighting",
    "a watercolor of a sailboat on a calm lake",
    "a futuristic city skyline with flying cars",
]


@dataclass(frozen=True)
class Peer:
    """One peer variant: its label in the report, the worker kind, where prepare writes it, how it runs."""

    label: str
    kind: str  # compare_worker.py kind: "sdcpp" or "openvino-genai"
    relpath: str  # under WORK
    options: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def path(self, work: Path) -> Path:
        return work / self.relpath


# The sd.cpp options are chosen, not yet searched (bench/peers_sdcpp_settings.py has not run to the
# end on a quiet machine; docs/speed.md section 7): 2 threads (the binding's default is half the
# logical CPUs: 1 on a 2-core box), flash attention in the UNet. ipndm + discrete: sd.cpp has no
# PNDM; iPNDM is its 4th-order pseudo-numerical multistep sampler, the same family as diffusers'
# PNDM (PLMS) on the same discrete schedule.
SDCPP_OPTIONS = {
    "n_threads": 2,
    "diffusion_flash_attn": True,
    "flash_attn": False,
    "diffusion_conv_direct": False,
    "vae_conv_direct": False,
    "sample_method": "ipndm",
    "scheduler": "discrete",
}

PEERS: dict[str, Peer] = {
    p.label: p
    for p in [
        Peer("sdcpp-f32", "sdcpp", "sdcpp/f32.gguf", {**SDCPP_OPTIONS}, "stable-diffusion.cpp, weights F32"),
        Peer("sdcpp-q8_0", "sdcpp", "sdcpp/q8_0.gguf", {**SDCPP_OPTIONS}, "stable-diffusion.cpp, weights q8_0"),
        Peer("sdcpp-q4_0", "sdcpp", "sdcpp/q4_0.gguf", {**SDCPP_OPTIONS}, "stable-diffusion.cpp, weights q4_0"),
        Peer("ov-fp32", "openvino-genai", "openvino/fp32", {"scheduler": "PNDM"}, "OpenVINO GenAI, FP32 export"),
        Peer("ov-int8w", "openvino-genai", "openvino/int8w", {"scheduler": "PNDM"}, "OpenVINO GenAI, INT8 weight compression"),
        Peer("ov-hybrid", "openvino-genai", "openvino/hybrid", {"scheduler": "PNDM"}, "OpenVINO GenAI, NNCF hybrid INT8"),
    ]
}
PEER_KINDS = {"sdcpp", "openvino-genai"}


def weights_fingerprint(checkpoint: Path) -> str:
    """sha1 of the checkpoint's UNet weight file(s): what makes two exports 'the same weights'."""
    digest = hashlib.sha1()
    files = sorted((checkpoint / "unet").glob("*.safetensors")) + sorted((checkpoint / "unet").glob("*.bin"))
    if not files:
        raise FileNotFoundError(f"no UNet weights under {checkpoint / 'unet'}: run `bench/compare.py prepare` first")
    for path in files:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def provenance_file(output: Path) -> Path:
    """The record next to a peer model: inside a folder, or ``<file>.json`` beside a single file."""
    return output / PROVENANCE if output.suffix != ".gguf" else output.with_name(output.name + ".json")


def _write_provenance(output: Path, checkpoint: Path, command: list[str], seconds: float, fingerprint: str) -> None:
    source = json.loads((checkpoint / "compare_source.json").read_text())
    provenance_file(output).write_text(
        json.dumps(
            {
                "source": str(checkpoint),
                "preset": source["preset"],
                "seed": source["seed"],
                "unet_sha1": fingerprint,
                "command": shlex.join(command),
                "seconds": round(seconds, 1),
                "written_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            indent=2,
        )
    )


def check_peer_provenance(path: str | Path, work: Path, fingerprint: str | None = None) -> str | None:
    """Why the peer model at ``path`` is not built from WORK/diffusers' weights (None = fine)."""
    checkpoint = work / "diffusers"
    source_file = checkpoint / "compare_source.json"
    if not source_file.exists():
        return f"{source_file} is missing: run `bench/compare.py prepare` first"
    record_file = provenance_file(Path(path))
    if not record_file.exists():
        return f"{record_file} is missing: write the peer model with `bench/compare.py prepare --peers ...`"
    want = json.loads(source_file.read_text())
    got = json.loads(record_file.read_text())
    if got.get("preset") != want["preset"] or int(got.get("seed", -1)) != int(want["seed"]):
        return f"{path} was converted from preset {got.get('preset')} seed {got.get('seed')}, not {want['preset']} seed {want['seed']}"
    fingerprint = fingerprint or weights_fingerprint(checkpoint)
    if got.get("unet_sha1") != fingerprint:
        return (
            f"{path} was converted from other UNet weights than {checkpoint} "
            f"(sha1 {got.get('unet_sha1')} != {fingerprint}): prepare it again"
        )
    return None


def peer_ready(kind: str, path: str) -> bool:
    """Whether a peer's model has been written (the harness waits for models still being prepared)."""
    return provenance_file(Path(path)).exists()


# -- prepare ---------------------------------------------------------------------------------
def sdcpp_convert_command(checkpoint: Path, output: Path, wtype: str) -> list[str]:
    """sd.cpp's own converter (the library's ``convert``, what ``sd -M convert`` runs) through the binding."""
    code = (
        "import sys; from stable_diffusion_cpp import stable_diffusion_cpp as lib; "
        "from stable_diffusion_cpp.stable_diffusion import GGML_TYPE_MAP; "
        "ok = lib.convert(sys.argv[1].encode(), b'', sys.argv[2].encode(), int(GGML_TYPE_MAP[sys.argv[3]]), b'', True); "
        "sys.exit(0 if ok else 1)"
    )
    return [sys.executable, "-c", code, str(checkpoint), str(output), wtype]


def openvino_export_command(checkpoint: Path, output: Path, weight_format: str) -> list[str]:
    """optimum-intel's exporter exactly as a user runs it (fp32 or int8 weight compression)."""
    cli = Path(sys.executable).with_name("optimum-cli")
    return [
        str(cli) if cli.exists() else "optimum-cli",
        "export",
        "openvino",
        "--model",
        str(checkpoint),
        "--task",
        "text-to-image",
        "--weight-format",
        weight_format,
        str(output),
    ]


def openvino_quantize_command(fp32_ir: Path, output: Path, mode: str, num_samples: int = 0) -> list[str]:
    """optimum-intel's INT8 of the FP32 export: ``int8w`` weight compression or ``hybrid`` NNCF INT8.

    Starting from the FP32 OpenVINO export (not the diffusers folder) skips a second PyTorch
    trace; optimum-intel compresses the same IR either way. ``int8w`` is what
    ``optimum-cli export openvino --weight-format int8`` applies (8-bit asymmetric per-channel
    weights in every model). ``hybrid`` (``quant_method="hybrid"``) quantizes the UNet's weights
    and activations, calibrated on our own prompt list (the CLI's ``--dataset
    conceptual_captions`` downloads a dataset from the Hub), and the other models' weights.
    """
    if mode == "int8w":
        config = "OVWeightQuantizationConfig(bits=8)"
    else:
        config = (
            f"OVWeightQuantizationConfig(bits=8, quant_method='hybrid', dataset=json.loads(sys.argv[3]), num_samples={int(num_samples)})"
        )
    code = (
        "import sys, json; from optimum.intel import OVStableDiffusionPipeline, OVWeightQuantizationConfig; "
        f"cfg = {config}; "
        "OVStableDiffusionPipeline.from_pretrained(sys.argv[1], quantization_config=cfg).save_pretrained(sys.argv[2])"
    )
    return [sys.executable, "-c", code, str(fp32_ir), str(output)] + ([json.dumps(CALIBRATION_PROMPTS)] if mode == "hybrid" else [])


def copy_openvino_tokenizer(fp32_ir: Path, output: Path) -> list[str]:
    """Copy the OpenVINO tokenizer models that optimum-cli wrote for the FP32 export.

    ``save_pretrained`` of a quantized pipeline keeps the Hugging Face tokenizer files only;
    OpenVINO GenAI needs ``openvino_tokenizer.xml`` (converted by openvino-tokenizers during
    ``optimum-cli export``), else it fails with "Tokenizer::encode is not available".
    """
    import shutil

    copied = []
    for source in sorted((fp32_ir / "tokenizer").glob("openvino_*tokenizer.*")):
        target = output / "tokenizer" / source.name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
            copied.append(source.name)
    return copied


def prepare_command(peer: Peer, work: Path, hybrid_samples: int) -> list[str]:
    checkpoint, output = work / "diffusers", peer.path(work)
    if peer.kind == "sdcpp":
        return sdcpp_convert_command(checkpoint, output, peer.label.split("-", 1)[1])
    fmt = Path(peer.relpath).name
    if fmt == "fp32":
        return openvino_export_command(checkpoint, output, "fp32")
    return openvino_quantize_command(PEERS["ov-fp32"].path(work), output, fmt, hybrid_samples)


def prepare_peers(work: Path, labels: list[str], hybrid_samples: int = 100) -> list[str]:
    """Write each named peer's model from WORK/diffusers, each in its own process; the failures' messages."""
    checkpoint = work / "diffusers"
    fingerprint = weights_fingerprint(checkpoint)
    failures = []
    if any(label in ("ov-int8w", "ov-hybrid") for label in labels) and "ov-fp32" not in labels:
        labels = ["ov-fp32"] + list(labels)  # the INT8 variants start from the FP32 export
    for label in labels:
        peer = PEERS[label]
        output = peer.path(work)
        if provenance_file(output).exists():
            problem = check_peer_provenance(output, work, fingerprint)
            if problem is None:
                log.info("%s already at %s", label, output)
                continue
            log.warning("%s: %s; writing it again", label, problem)
        output.parent.mkdir(parents=True, exist_ok=True)
        command = prepare_command(peer, work, hybrid_samples)
        log_path = work / "logs" / f"prepare-{label}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log.info("%s: %s", label, shlex.join(command)[:300])
        started = time.perf_counter()
        with open(log_path, "w") as handle:
            done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - started
        written = output.exists() and (output.is_file() or (output / "model_index.json").exists())
        if done.returncode != 0 or not written:
            tail = log_path.read_text()[-800:]
            failures.append(f"{label}: exit {done.returncode} after {seconds:.0f} s (log {log_path}): {tail}")
            log.error("%s failed: see %s", label, log_path)
            continue
        if peer.kind == "openvino-genai" and output != PEERS["ov-fp32"].path(work):
            copy_openvino_tokenizer(PEERS["ov-fp32"].path(work), output)
        _write_provenance(output, checkpoint, command, seconds, fingerprint)
        log.info("%s written to %s in %.1f s", label, output, seconds)
    return failures


def expand_peer_labels(items: list[str]) -> list[str]:
    """``--peers`` values (comma lists, ``all``, ``sdcpp``, ``openvino``) -> peer labels in table order."""
    wanted: list[str] = []
    for item in items:
        for name in (v.strip() for v in item.split(",")):
            if not name:
                continue
            if name == "all":
                wanted += list(PEERS)
            elif name in ("sdcpp", "openvino"):
                wanted += [p.label for p in PEERS.values() if p.label.startswith("sdcpp" if name == "sdcpp" else "ov-")]
            elif name in PEERS:
                wanted.append(name)
            else:
                raise ValueError(f"unknown peer {name!r}: choose from all, sdcpp, openvino, {', '.join(PEERS)}")
    return list(dict.fromkeys(wanted))

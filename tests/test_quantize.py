"""``quantize_package`` on the tiny package: every scheme, the report, mixed precision, the input.

Calibration is cut to 2 prompts x 2 steps at 32x32 and the trajectories are recorded once
for the module (``calibration_dir``), so the whole file stays fast on a shared 2-core box.
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from nanoedge.core.errors import InvalidRequestError, QualityGateError  # noqa: E402
from nanoedge.core.manifest import COMPONENTS, Manifest, sha256_file  # noqa: E402
from nanoedge.quantize import SCHEMES, QuantizeOptions, quantize_package  # noqa: E402
from nanoedge.quantize.calibration import EVALUATION, TrajectoryStore, spread  # noqa: E402
from nanoedge.quantize.metrics import RunningError, image_psnr  # noqa: E402
from nanoedge.quantize.prompts import load_prompts  # noqa: E402
from nanoedge.runtime import Pipeline  # noqa: E402

FAST = {"calibration_prompts": 2, "eval_prompts": 1, "steps": 2, "size": "32x32", "report_samples": 4, "sensitivity_samples": 2}
OPEN_GATE = {"min_component_psnr": 0.0, "min_psnr": 0.0, "min_responsiveness": 0.0}


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(folder)): (sha256_file(p), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trajectories(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("trajectories") / "store"


@pytest.fixture(scope="module")
def source_before(tiny_package: Path) -> dict[str, tuple[str, int]]:
    return snapshot(tiny_package)


@pytest.fixture(scope="module")
def quantized(tiny_package: Path, tmp_path_factory, trajectories: Path, source_before) -> dict:
    root = tmp_path_factory.mktemp("quantized")
    return {
        scheme: quantize_package(
            tiny_package, root / scheme, QuantizeOptions(scheme=scheme, calibration_dir=trajectories, **FAST, **OPEN_GATE)
        )
        for scheme in SCHEMES
    }


def _ops(model_path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(model_path), load_external_data=False).graph.node}


@pytest.mark.parametrize("scheme", SCHEMES)
def test_scheme_loads_and_generates_close_to_fp32(quantized, tiny_package: Path, scheme: str):
    """Each package runs in the runtime, and its image is far closer to the FP32 image of the
    same prompt and seed than FP32 images of two seeds are to each other."""
    package = quantized[scheme].manifest.root
    pipe = Pipeline.load(package)  # checks every file against its sha256 in the new manifest
    kwargs = {"size": FAST["size"], "steps": FAST["steps"]}
    image = np.asarray(pipe.generate("a blue square", seed=5, **kwargs)[0])
    fp32 = Pipeline.load(tiny_package)
    reference = np.asarray(fp32.generate("a blue square", seed=5, **kwargs)[0])
    other_seed = np.asarray(fp32.generate("a blue square", seed=6, **kwargs)[0])
    assert image.shape == (32, 32, 3) and image.std() > 0
    assert image_psnr(reference, image) > image_psnr(reference, other_seed) + 6


@pytest.mark.parametrize("scheme", SCHEMES)
def test_manifest_records_recipe_float_nodes_and_every_figure(quantized, tiny_package: Path, scheme: str):
    manifest = quantized[scheme].manifest
    section = manifest.quantization
    assert section["scheme"] == scheme
    for name in COMPONENTS:
        assert manifest.component(name)["precision"] == scheme
        entry = section["components"][name]
        assert entry["recipe"]["scheme"] == scheme and entry["quantizable_nodes"] > 0
        assert isinstance(entry["float_nodes"], list)
    report = section["report"]
    for name in COMPONENTS:
        figures = report["components"][name]
        assert 0.9 < figures["cosine"] <= 1.0 and figures["psnr_db"] > 15 and figures["samples"] >= 1
    assert report["end_to_end"]["image_psnr_db"] > 15 and report["end_to_end"]["prompts"] == 1
    resp = report["responsiveness"]
    assert resp["ratio"] > 0 and resp["fp32_std"] > 0 and resp["quantized_std"] > 0 and -1 <= resp["direction_cosine"] <= 1
    size = report["size"]
    source = Manifest.load(tiny_package)
    on_disk = sum((manifest.root / rel).stat().st_size for rel in manifest.component("unet")["files"])
    assert size["unet_bytes"] == on_disk
    assert size["fp32_unet_bytes"] == sum(source.files[rel]["bytes"] for rel in source.component("unet")["files"])
    # The tiny UNet has 0.4 M parameters, so scales and Q/DQ nodes weigh more than on a real
    # model (bench/quantize_real.sh measures BK-SDM-Tiny); the weights must still shrink.
    assert size["unet_ratio"] == pytest.approx(on_disk / size["fp32_unet_bytes"], abs=1e-4) and size["unet_ratio"] < 0.8
    assert size["package_bytes"] < size["fp32_package_bytes"]
    assert section["attempts"][0]["passed"] and section["gate"]["min_psnr"] == 0.0


@pytest.mark.parametrize(
    "scheme,present,absent",
    [
        ("int8", {"QuantizeLinear", "DequantizeLinear"}, {"DynamicQuantizeLinear"}),
        ("w8a16", {"QuantizeLinear", "DequantizeLinear"}, {"DynamicQuantizeLinear"}),
        ("w8a8", {"QuantizeLinear", "DequantizeLinear"}, {"DynamicQuantizeLinear"}),
        ("dynamic", {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger"}, {"QuantizeLinear"}),
        ("weight-only", {"DequantizeLinear"}, {"QuantizeLinear", "DynamicQuantizeLinear"}),
    ],
)
def test_unet_graph_holds_the_scheme(quantized, scheme: str, present: set[str], absent: set[str]):
    unet = quantized[scheme].manifest.component_path("unet")
    ops = _ops(unet)
    assert present <= ops and not absent & ops
    model = onnx.load(str(unet))
    types = {t.data_type for t in model.graph.initializer}
    assert types & {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}  # weights are stored as 8-bit integers
    if scheme == "w8a16":
        assert onnx.TensorProto.UINT16 in types  # 16-bit activation zero points
        assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 21
    if scheme == "w8a8":
        # 8-bit activations, with the residual/norm/softmax/SiLU tensors and the graph's ends at 16 bits
        zero_points = {t.name: t.data_type for t in model.graph.initializer}
        activation_bits = collections.Counter(
            zero_points.get(n.input[2]) for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in zero_points
        )
        assert activation_bits[onnx.TensorProto.UINT8] > 0 and activation_bits[onnx.TensorProto.UINT16] > 0, activation_bits
        assert "sample" in {
            n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear" and zero_points.get(n.input[2]) == onnx.TensorProto.UINT16
        }
    if scheme == "int8":
        # Attention score products (two activations) stay float: only constant-weight MatMuls are quantized.
        producers = {o: n for n in model.graph.node for o in n.output}
        initializers = {t.name for t in model.graph.initializer}
        for node in model.graph.node:
            if node.op_type == "MatMul":
                feeds = [producers.get(i) for i in node.input]
                dq_weight = feeds[1] is not None and feeds[1].op_type == "DequantizeLinear" and feeds[1].input[0] in initializers
                if not dq_weight:
                    assert all(f is None or f.op_type != "DequantizeLinear" for f in feeds), node.name


def test_report_figures_match_an_independent_measurement(quantized, tiny_package: Path, trajectories: Path):
    """Recompute the UNet figures and the image PSNR outside the quantizer: same numbers."""
    result = quantized["int8"]
    report = result.report
    store = TrajectoryStore(trajectories)
    pipe = Pipeline.load(result.manifest.root)
    running = RunningError()
    for call in spread(store.calls(EVALUATION, "unet"), FAST["report_samples"]):
        running.add(store.output(call), pipe.sessions["unet"].run(None, store.inputs(call))[0])
    assert report["components"]["unet"]["cosine"] == pytest.approx(running.cosine(), abs=1e-6)
    assert report["components"]["unet"]["psnr_db"] == pytest.approx(running.psnr(), abs=1e-4)
    prompt = load_prompts()[-1]  # the held-out prompt: the bottom of the default file
    kwargs = {"negative_prompt": "", "size": "32x32", "steps": 2, "seed": 0}
    fp32 = np.asarray(Pipeline.load(tiny_package).generate(prompt, **kwargs)[0])
    ours = np.asarray(pipe.generate(prompt, **kwargs)[0])
    assert report["end_to_end"]["image_psnr_db"] == pytest.approx(image_psnr(fp32, ours), abs=0.01)


def test_input_package_is_untouched(quantized, tiny_package: Path, source_before):
    assert snapshot(tiny_package) == source_before  # same files, bytes and mtimes: no helper files left either


def _float_nodes_read_float(result, plain) -> None:
    """Float-kept nodes lose their activation Q/DQ pairs (the written graph has short names, so
    the check counts QuantizeLinear nodes against the fully quantized UNet)."""
    section = result.manifest.quantization
    kept = [f for c in section["components"].values() for f in c.get("float_nodes", []) if f["reason"] == "sensitivity"]
    assert kept and all(f["gain_db"] > 0 for f in kept)

    def quantize_ops(manifest) -> int:
        model = onnx.load(str(manifest.component_path("unet")), load_external_data=False)
        return sum(n.op_type == "QuantizeLinear" for n in model.graph.node)

    assert quantize_ops(result.manifest) < quantize_ops(plain.manifest)


def test_mixed_precision_keeps_the_nodes_with_the_largest_effect_float(quantized, tiny_package: Path, tmp_path: Path, trajectories: Path):
    """A component gate just above what plain int8 reaches: mixed precision must find nodes to keep float."""
    plain = quantized["int8"].report["components"]["unet"]["psnr_db"]
    options = QuantizeOptions(
        scheme="int8",
        calibration_dir=trajectories,
        min_component_psnr=plain + 0.5,
        min_psnr=0.0,
        min_responsiveness=0.0,
        max_size_ratio=1.0,
        **FAST,
    )
    result = quantize_package(tiny_package, tmp_path / "mp", options)
    attempts = result.attempts
    assert not attempts[0]["passed"] and attempts[-1]["passed"] and len(attempts) >= 2
    assert result.report["components"]["unet"]["psnr_db"] >= plain + 0.5
    _float_nodes_read_float(result, quantized["int8"])
    top = result.manifest.quantization["sensitivity"]["top"]
    gains = [r["gain_db"] for r in top if r["gain_db"] is not None]
    assert gains == sorted(gains, reverse=True)


# Enough calls for the figure to be a measurement: at 2 steps of 32x32 a node that won back
# 0.05 dB on two ranking calls could lose 0.05 dB on the two held-out ones.
MONOTONIC = {"calibration_prompts": 4, "eval_prompts": 4, "steps": 4, "size": "64x64", "report_samples": 16, "sensitivity_samples": 8}


def test_keeping_more_in_float_never_makes_the_gated_metric_worse(tiny_package: Path, tmp_path: Path):
    """Monotonicity: the search's nested float sets (1, 2, 4, 8 nodes) never lower the UNet's
    teacher-forced output PSNR on the held-out calls, the figure the gate holds it to. The gate
    is out of reach so that every step is built and measured."""
    options = QuantizeOptions(
        scheme="int8",
        components={"text_encoder": "fp32", "vae_decoder": "fp32"},
        min_component_psnr=200.0,
        min_psnr=0.0,
        min_responsiveness=0.0,
        max_size_ratio=1.0,
        max_attempts=4,
        **MONOTONIC,
    )
    with pytest.raises(QualityGateError) as failed:
        quantize_package(tiny_package, tmp_path / "never", options)
    attempts = failed.value.attempts
    figures = [a["unet_psnr_db"] for a in attempts]
    assert len(figures) == 5, attempts
    assert all(later >= earlier for earlier, later in zip(figures, figures[1:])), figures
    assert figures[-1] > figures[0] + 1.0, figures
    counts = [a["float_nodes"] for a in attempts]
    assert counts == sorted(counts) and len(set(counts)) == len(counts), counts
    assert not (tmp_path / "never").exists()


def test_refuses_a_quantized_input_and_an_existing_output(quantized, tmp_path: Path, tiny_package: Path):
    with pytest.raises(InvalidRequestError, match="already quantized"):
        quantize_package(quantized["dynamic"].manifest.root, tmp_path / "again", QuantizeOptions(**FAST))
    with pytest.raises(InvalidRequestError, match="already exists"):
        quantize_package(tiny_package, quantized["dynamic"].manifest.root, QuantizeOptions(**FAST))


def test_static_batch_one_package_pairs_cfg_calls(tiny_static_package: Path, tmp_path: Path):
    """The NPU form (static 64x64, batch 1) runs CFG as two UNet calls; responsiveness still measures."""
    options = QuantizeOptions(scheme="w8a16", **{**FAST, "size": None}, **OPEN_GATE)
    result = quantize_package(tiny_static_package, tmp_path / "static-w8a16", options)
    resp = result.report["responsiveness"]
    assert resp["ratio"] is not None and resp["fp32_std"] > 0 and resp["samples"] >= 1
    assert result.manifest.sizes["static"] == "64x64"
    unet = result.manifest.component("unet")
    assert unet["inputs"][0]["shape"][0] == 1 and unet["precision"] == "w8a16"
    image = Pipeline.load(result.manifest.root).generate("a red circle", seed=2, steps=2)[0]
    assert image.size == (64, 64)

"""Quantization building blocks on small hand-made inputs: arithmetic, ranges, rewrites, names, planning, gate."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from nanoedge.core.errors import InvalidRequestError  # noqa: E402
from nanoedge.quantize.gate import QualityGate  # noqa: E402
from nanoedge.quantize.graphs import save_model  # noqa: E402
from nanoedge.quantize.impact import NodeImpact  # noqa: E402
from nanoedge.quantize.metrics import Responsiveness, cosine, psnr  # noqa: E402
from nanoedge.quantize.mixed import nested_steps  # noqa: E402
from nanoedge.quantize.prompts import load_prompts, split_prompts  # noqa: E402
from nanoedge.quantize.qmath import dequantize, quantize, scale_zero_point, weight_params  # noqa: E402
from nanoedge.quantize.ranges import collect_ranges, unrepresentable  # noqa: E402
from nanoedge.quantize.recipes import recipe_for  # noqa: E402


@pytest.mark.parametrize(
    "qtype,symmetric,reduce_range", [("int8", True, False), ("int8", True, True), ("uint8", False, False), ("uint8", False, True)]
)
def test_per_channel_weights_match_onnxruntime(qtype: str, symmetric: bool, reduce_range: bool):
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import quantize_data

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((6, 5, 3), dtype=np.float32) * np.array([0.01, 1, 3, 0.5, 10, 0.2], dtype=np.float32)[:, None, None]
    weight[2] = np.abs(weight[2])  # a channel with no negative value: zero point must still hold 0
    params = weight_params(weight, 0, qtype, symmetric, reduce_range)
    ours = quantize(weight, params, 0)
    onnx_type = TensorProto.INT8 if qtype == "int8" else TensorProto.UINT8
    for channel in range(weight.shape[0]):
        zero, scale, theirs = quantize_data(weight[channel].ravel(), onnx_type, symmetric, reduce_range)
        assert np.isclose(params.scale[channel], scale, rtol=1e-6)
        assert params.zero_point[channel] == zero
        assert np.array_equal(ours[channel].ravel(), theirs)
    restored = dequantize(ours, params, 0)
    step = params.scale.reshape(-1, 1, 1)
    assert np.all(np.abs(restored - weight) <= step / 2 + 1e-6)


def test_activation_params_include_zero_and_use_the_full_grid():
    params = scale_zero_point(np.array(0.5), np.array(4.0), "uint8", symmetric=False)
    assert params.zero_point == 0 and math.isclose(float(params.scale), 4.0 / 255, rel_tol=1e-6)
    params16 = scale_zero_point(np.array(-2.0), np.array(6.0), "uint16", symmetric=False)
    assert params16.qmax == 65535 and math.isclose(float(params16.scale), 8.0 / 65535, rel_tol=1e-6)


def _matmul_model(path: Path, weight: np.ndarray) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"), helper.make_node("Relu", ["y"], ["z"], name="relu")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", weight.shape[0]])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", weight.shape[1]])],
        [numpy_helper.from_array(weight, "w")],
        value_info=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", weight.shape[1]])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    save_model(model, path, external=True)
    return path


def test_streaming_ranges_equal_numpy_extremes(tmp_path: Path):
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((8, 4), dtype=np.float32)
    path = _matmul_model(tmp_path / "m.onnx", weight)
    samples = [{"x": rng.standard_normal((3, 8), dtype=np.float32) * (i + 1)} for i in range(4)]
    ranges = collect_ranges(path, ["x", "y", "z"], iter(samples), len(samples))
    xs = np.concatenate([s["x"] for s in samples])
    ys = xs @ weight
    assert ranges["x"] == pytest.approx((xs.min(), xs.max()), rel=1e-6)
    assert ranges["y"] == pytest.approx((ys.min(), ys.max()), rel=1e-5)
    assert ranges["z"] == pytest.approx((max(ys.min(), 0), ys.max()), rel=1e-5)
    assert not (tmp_path / "ranges-augmented.onnx").exists()
    assert unrepresentable({"mask": (-3.4e38, 0.0), "act": (-40.0, 300.0), "bad": (float("-inf"), 1.0)}) == {"mask", "bad"}


def test_nested_steps_keep_what_the_step_before_kept_within_each_budget():
    ranking = [
        NodeImpact("unet", "a", "Conv", 40.0, 3.0, 400),  # costs 300 extra bytes in float
        NodeImpact("vae_decoder", "b", "Conv", 41.0, 2.0, 40),  # no budget there
        NodeImpact("unet", "c", "MatMul", 38.0, 1.0, 0),  # no weights: free
        NodeImpact("unet", "d", "Conv", 37.5, 0.5, 4000),  # 3000 extra bytes never fit
        NodeImpact("unet", "f", "Conv", 37.2, 0.2, 40),
        NodeImpact("unet", "e", "Conv", 37.0, 0.0, 40),  # gains nothing: never kept
        NodeImpact("unet", "g", "Conv", 36.0, -1.0, 40),  # makes it worse: never kept
    ]
    steps = nested_steps(ranking, {"unet": 1000, "vae_decoder": 0}, max_steps=5)
    assert [s.keep_float.get("unet") for s in steps] == [{"a"}, {"a", "c"}, {"a", "c", "f"}]
    for before, after in zip(steps, steps[1:]):
        assert all(before.keep_float[c] <= after.keep_float[c] for c in before.keep_float)
    assert all(s.extra_bytes.get("unet", 0) <= 1000 for s in steps)
    assert nested_steps(ranking, {"unet": 1000}, max_steps=2)[-1].node_count == 2
    assert nested_steps(ranking, {"unet": 0, "vae_decoder": 0}, max_steps=4)[-1].keep_float == {"unet": frozenset({"c"})}


def test_gate_names_every_figure_that_fell_short():
    gate = QualityGate(min_component_psnr=35, min_psnr=30, min_responsiveness=0.85)
    report = {
        "components": {
            "unet": {"scheme": "int8", "psnr_db": 33.0},
            "text_encoder": {"scheme": "fp32", "psnr_db": None, "identical": True},
            "vae_decoder": {"scheme": "int8", "psnr_db": 40.0},
        },
        "end_to_end": {"image_psnr_db": 31.0, "median_image_psnr_db": 24.5, "identical": False},
        "responsiveness": {"ratio": 0.5},
    }
    missed = gate.shortfalls(report)
    assert missed == ["unet output PSNR 33.00 dB < 35 dB", "median image PSNR 24.50 dB < 30 dB", "prompt responsiveness 0.500 < 0.85"]
    same = {
        "components": {"unet": {"scheme": "int8", "psnr_db": None, "identical": True}},
        "end_to_end": {"median_image_psnr_db": None, "identical": True},
        "responsiveness": {"ratio": 1.0},
    }
    assert gate.shortfalls(same) == []
    with pytest.raises(InvalidRequestError, match="max_size_ratio"):
        QualityGate(max_size_ratio=0)


def _concat_conv_model(path: Path) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(4)
    weight = rng.standard_normal((4, 5, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    nodes = [
        helper.make_node("Concat", ["a", "b"], ["cat"], name="cat", axis=1),
        helper.make_node("Conv", ["cat", "w", "bias"], ["y"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["cat"], ["r"], name="other_reader"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 3, 6, 6]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 2, 6, 6]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None), helper.make_tensor_value_info("r", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "bias")],
    )
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    onnx.save_model(model, str(path))
    return path


def test_split_concat_convs_is_exact_in_fp32(tmp_path: Path):
    """One conv per concatenated input, summed: the same function, each input on its own grid."""
    import onnxruntime as ort

    from nanoedge.quantize.rewrites import apply_rewrites

    path = _concat_conv_model(tmp_path / "m.onnx")
    rng = np.random.default_rng(5)
    feeds = {"a": rng.standard_normal((2, 3, 6, 6)).astype(np.float32), "b": 0.01 * rng.standard_normal((2, 2, 6, 6)).astype(np.float32)}
    before = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    changed = apply_rewrites(path, ("split_concat_convs",))
    assert changed == {"split_concat_convs": ["conv"]}
    model = onnx.load(str(path))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Conv") == 2 and "Concat" in ops and ops.count("Add") == 1
    assert {t.name for t in model.graph.initializer} == {"w__split0", "w__split1", "bias"}  # the whole weight is gone
    after = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_allclose(after[0], before[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(after[1], before[1])
    assert apply_rewrites(path, ("split_concat_convs",)) == {"split_concat_convs": []}  # nothing left to split


def test_short_names_are_deterministic_and_keep_the_interface(tmp_path: Path):
    import onnxruntime as ort

    from nanoedge.quantize.graphs import shorten_names

    path = _concat_conv_model(tmp_path / "m.onnx")
    first, second = onnx.load(str(path)), onnx.load(str(path))
    assert shorten_names(first) > 0 and shorten_names(second) > 0
    assert first.SerializeToString() == second.SerializeToString()
    assert [i.name for i in first.graph.input] == ["a", "b"] and [o.name for o in first.graph.output] == ["y", "r"]
    assert all(len(n.name) <= 3 for n in first.graph.node) and all(len(t.name) <= 3 for t in first.graph.initializer)
    onnx.checker.check_model(first)
    feeds = {"a": np.ones((1, 3, 6, 6), np.float32), "b": np.ones((1, 2, 6, 6), np.float32)}
    short = tmp_path / "short.onnx"
    onnx.save_model(first, str(short))
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = ort.InferenceSession(str(short), providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_array_equal(got[0], expected[0])


def test_responsiveness_sees_a_collapsed_guidance_signal():
    rng = np.random.default_rng(3)
    uncond = rng.standard_normal((2, 4, 8, 8))
    signal = rng.standard_normal((2, 4, 8, 8)) * 0.2
    reference = np.concatenate([uncond, uncond + signal])
    collapsed = np.concatenate([uncond, uncond + 0.1 * signal])
    meter = Responsiveness()
    meter.add(reference, collapsed)
    assert meter.ratio() == pytest.approx(0.1, rel=1e-6)
    assert meter.cosine() == pytest.approx(1.0)
    same = Responsiveness()
    same.add(reference, reference)
    assert same.ratio() == pytest.approx(1.0)
    assert cosine(reference, -reference) == pytest.approx(-1.0)
    assert psnr(np.array([0.0, 2.0]), np.array([0.0, 2.0])) == math.inf


def test_default_prompts_and_split(tmp_path: Path):
    prompts = load_prompts()
    assert len(prompts) >= 32 and len(set(prompts)) == len(prompts)
    calibration, held_out = split_prompts(prompts, 30, 4)
    assert not set(calibration) & set(held_out) and held_out == prompts[-4:]
    custom = tmp_path / "p.txt"
    custom.write_text("# comment\nfirst\n\nsecond\nthird\n")
    assert split_prompts(load_prompts(custom), 2, 1) == (["first", "second"], ["third"])
    with pytest.raises(InvalidRequestError, match="need 4 prompts, the file has 3"):
        split_prompts(load_prompts(custom), 3, 1)
    with pytest.raises(InvalidRequestError, match="does not exist"):
        load_prompts(tmp_path / "missing.txt")


def test_recipes_record_their_choices():
    int8 = recipe_for("int8", weight_type="uint8")
    assert (int8.kind, int8.weight_type, int8.weight_symmetric, int8.activation_type) == ("static", "uint8", False, "uint8")
    assert recipe_for("w8a16").opset == 21 and recipe_for("w8a16").activation_type == "uint16"
    assert recipe_for("dynamic").kind == "dynamic" and recipe_for("weight-only").activation_type is None
    assert (recipe_for("dynamic").weight_type, recipe_for("dynamic").weight_symmetric) == ("uint8", False)
    assert recipe_for("dynamic", weight_type="int8").weight_type == "int8"
    assert recipe_for("int8").as_dict()["op_types"] == ["Conv", "Gemm", "MatMul"]
    with pytest.raises(InvalidRequestError):
        recipe_for("int4")


def test_w8a8_sixteen_bit_rules_pick_structure_not_names():
    from onnx import TensorProto, helper, numpy_helper

    from nanoedge.quantize.qdq import sixteen_bit_tensors

    w = numpy_helper.from_array(np.ones((4, 4), dtype=np.float32), "w")
    bias = numpy_helper.from_array(np.ones(4, dtype=np.float32), "bias")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Add", ["h", "bias"], ["hb"], name="bias_add"),  # constant operand: not a residual
        helper.make_node("Sigmoid", ["hb"], ["sg"], name="sig"),
        helper.make_node("Mul", ["hb", "sg"], ["silu"], name="silu"),
        helper.make_node("Softmax", ["silu"], ["p"], name="sm"),
        helper.make_node("Add", ["p", "h"], ["res"], name="res"),  # two computed tensors: residual
        helper.make_node("Concat", ["res", "h"], ["cat"], name="cat", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("cat", TensorProto.FLOAT, [1, 8])],
        [w, bias],
    )
    assert sixteen_bit_tensors(graph, ()) == []
    assert sixteen_bit_tensors(graph, ("io",)) == ["x", "cat"]
    assert sixteen_bit_tensors(graph, ("concat",)) == ["cat"]
    assert sixteen_bit_tensors(graph, ("residual",)) == ["res"]
    assert sixteen_bit_tensors(graph, ("silu",)) == ["silu"]
    assert sixteen_bit_tensors(graph, ("softmax",)) == ["silu", "p"]
    w8a8 = recipe_for("w8a8")
    assert w8a8.activation_type == "uint8" and set(w8a8.sixteen_bit) == {"io", "residual", "softmax", "norm", "silu", "concat"}
    assert w8a8.as_dict()["sixteen_bit"] == list(w8a8.sixteen_bit) and recipe_for("w8a16").sixteen_bit == ()


def test_cpu_scheme_on_a_qnn_export_warns(caplog):
    from types import SimpleNamespace

    from nanoedge.quantize.checks import warn_cpu_scheme_for_npu as _warn_cpu_scheme_for_npu

    qnn = SimpleNamespace(components={"unet": {"rewrites": {"target": "qnn"}}, "vae_decoder": {}})
    plain = SimpleNamespace(components={"unet": {}})
    with caplog.at_level("WARNING", logger="nanoedge.quantize.checks"):
        _warn_cpu_scheme_for_npu(qnn, {"unet": "w8a8", "vae_decoder": "w8a16"})
        _warn_cpu_scheme_for_npu(plain, {"unet": "int8"})
        assert not caplog.records
        _warn_cpu_scheme_for_npu(qnn, {"unet": "int8", "vae_decoder": "w8a8"})
    assert len(caplog.records) == 1 and "w8a8" in caplog.records[0].getMessage()


def test_npu_scheme_on_a_fused_attention_package_warns(caplog):
    from types import SimpleNamespace

    from nanoedge.quantize.checks import warn_fused_attention_for_npu as _warn_fused_attention_for_npu

    fused = SimpleNamespace(components={"unet": {"fused_attention": 18}, "vae_decoder": {"fused_attention": 1}})
    plain = SimpleNamespace(components={"unet": {}, "vae_decoder": {}})
    with caplog.at_level("WARNING", logger="nanoedge.quantize.checks"):
        _warn_fused_attention_for_npu(plain, {"unet": "w8a8"})
        _warn_fused_attention_for_npu(fused, {"unet": "int8", "vae_decoder": "dynamic"})
        assert not caplog.records
        _warn_fused_attention_for_npu(fused, {"unet": "w8a16"})
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "unet/vae_decoder" in message and "--target qnn" in message


def _embedding_model(path, vocab: int, width: int, tied: bool = False):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    table = rng.standard_normal((vocab, width)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["rows"], name="embed", axis=0)]
    outputs = [helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["b", "s", width])]
    if tied:  # the same table read by a MatMul (tied output projection): must stay float
        nodes.append(helper.make_node("MatMul", ["rows", "table_t"], ["logits"], name="lm_head"))
        nodes.append(helper.make_node("Transpose", ["table"], ["table_t"], name="t", perm=[1, 0]))
        nodes = [nodes[0], nodes[2], nodes[1]]
        outputs.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", "s", vocab]))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "s"])],
        outputs,
        [numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(model, str(path))
    return table


def test_token_embedding_table_becomes_int8_rows(tmp_path):
    import onnxruntime as ort

    from nanoedge.quantize.embeddings import quantize_embedding_tables

    path = tmp_path / "model.onnx"
    table = _embedding_model(path, vocab=4096, width=64)
    before = path.stat().st_size
    assert quantize_embedding_tables(path, min_elements=1 << 16) == ["table"]
    assert path.stat().st_size < before / 3
    ids = np.array([[0, 5, 4095, 17]], dtype=np.int64)
    rows = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0]
    step = np.abs(table[ids[0]]).max(axis=1, keepdims=True) / 127.0
    assert np.all(np.abs(rows[0] - table[ids[0]]) <= step / 2 + 1e-6)
    assert quantize_embedding_tables(path, min_elements=1 << 16) == [], "already converted: nothing left to do"


def test_small_or_shared_tables_stay_float(tmp_path):
    from nanoedge.quantize.embeddings import quantize_embedding_tables

    small = tmp_path / "small.onnx"
    _embedding_model(small, vocab=77, width=64)
    assert quantize_embedding_tables(small) == []
    tied = tmp_path / "tied.onnx"
    _embedding_model(tied, vocab=4096, width=64, tied=True)
    assert quantize_embedding_tables(tied, min_elements=1 << 16) == []


def test_shape_hints_are_dropped_without_touching_weights(tmp_path):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from nanoedge.quantize.qdq import drop_shape_hints

    weight = numpy_helper.from_array(np.eye(4, dtype=np.float32) * 2, "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [weight],
        value_info=[helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch", 4])],
    )
    path = tmp_path / "m.onnx"
    onnx.save_model(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
        str(path),
        save_as_external_data=True,
        location="m.onnx_data",
        size_threshold=0,
    )
    assert drop_shape_hints(path) == 1
    assert len(onnx.load(str(path), load_external_data=False).graph.value_info) == 0
    x = np.arange(8, dtype=np.float32).reshape(2, 4) - 3
    y = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.array_equal(y, np.maximum(2 * x, 0))
    assert drop_shape_hints(path) == 0


def test_library_errors_name_the_option_not_the_flag():
    from nanoedge.quantize.options import QuantizeOptions

    with pytest.raises(InvalidRequestError, match="^max_attempts must be >= 0") as error:
        QuantizeOptions(max_attempts=-1).validate()
    assert error.value.param == "max_attempts" and "--" not in str(error.value)
    with pytest.raises(InvalidRequestError, match="^report_samples must be >= 1"):
        QuantizeOptions(report_samples=0).validate()

"""The machine's limit: GEMM throughput measured with onnxruntime, and a UNet's work per step.

    python bench/roofline.py PACKAGE [--size 512x512] [--batch 2] [--json]

Prints (1) this CPU's best FP32 and INT8 matrix-multiply throughput through onnxruntime's own
kernels (MatMul, and MatMulInteger u8 x u8 / u8 x s8), (2) the multiply-accumulates of one UNet
call at the given shape, counted from the ONNX graph after shape inference (Conv, MatMul,
Gemm; attention's activation x activation MatMuls included), and (3) the roofline minimum
time per UNet step = 2 * MACs / peak throughput. Divide a measured per-step time by that
minimum to see how far a variant is from what the hardware allows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _matmul_model(m: int, k: int, n: int, kind: str):
    import onnx
    from onnx import TensorProto, helper

    if kind == "fp32":
        a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])
        b = numpy_initializer("b", np.random.default_rng(0).standard_normal((k, n), dtype=np.float32))
        node = helper.make_node("MatMul", ["a", "b"], ["y"])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])
        graph = helper.make_graph([node], "mm", [a], [y], [b])
    else:
        a = helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])
        weight_type = np.int8 if kind == "u8s8" else np.uint8
        b = numpy_initializer("b", np.random.default_rng(0).integers(-100 if weight_type == np.int8 else 0, 100, (k, n)).astype(weight_type))
        node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
        y = helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])
        graph = helper.make_graph([node], "mm", [a], [y], [b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def numpy_initializer(name: str, array: np.ndarray):
    from onnx import numpy_helper

    return numpy_helper.from_array(array, name)


def gemm_throughput(kind: str, m: int = 4096, k: int = 1280, n: int = 1280, repeats: int = 5) -> float:
    """Best-of-``repeats`` GFLOP/s (2 flops per MAC) for one large matrix multiply."""
    import onnxruntime as ort

    model = _matmul_model(m, k, n, kind)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    a = np.random.default_rng(1).standard_normal((m, k), dtype=np.float32) if kind == "fp32" else np.random.default_rng(1).integers(0, 255, (m, k)).astype(np.uint8)
    session.run(None, {"a": a})
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        session.run(None, {"a": a})
        best = min(best, time.perf_counter() - started)
    return 2.0 * m * k * n / best / 1e9


def unet_macs(model_file: Path, batch: int, height: int, width: int) -> dict[str, int]:
    """Multiply-accumulates of one UNet call by op type, from shape-inferred ONNX."""
    import onnx

    model = onnx.load(str(model_file), load_external_data=False)
    concrete = {"batch": batch, "height": height // 8, "width": width // 8}
    for value in model.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_value = concrete.get(dim.dim_param, 1)
    model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes = {}
    for value in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        dims = [d.dim_value if d.dim_value > 0 else None for d in value.type.tensor_type.shape.dim]
        shapes[value.name] = dims
    initializers = {i.name: list(i.dims) for i in model.graph.initializer}
    shapes.update(initializers)
    totals: dict[str, int] = {"Conv": 0, "MatMul": 0, "Gemm": 0, "unknown": 0}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "MatMul", "Gemm"):
            continue
        out = shapes.get(node.output[0])
        if not out or None in out:
            totals["unknown"] += 1
            continue
        if node.op_type == "Conv":
            weight = shapes.get(node.input[1])
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            macs = int(np.prod(out)) * (weight[1] if weight else 0) * int(np.prod(weight[2:])) if weight else 0
            del group  # weight[1] is already Cin / group
        else:
            a = shapes.get(node.input[0])
            if not a or None in a:
                totals["unknown"] += 1
                continue
            trans_a = next((x.i for x in node.attribute if x.name == "transA"), 0)
            k = a[-2] if (node.op_type == "Gemm" and trans_a) else a[-1]
            macs = int(np.prod(out)) * k
        totals[node.op_type] += macs
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("package")
    parser.add_argument("--size", default="512x512")
    parser.add_argument("--batch", type=int, default=2, help="UNet batch (2 = one image with guidance)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    manifest = json.loads((Path(args.package) / "nanoedge.json").read_text())
    unet_file = Path(args.package) / manifest["components"]["unet"]["model"]
    macs = unet_macs(unet_file, args.batch, height, width)
    total = sum(v for k, v in macs.items() if k != "unknown")
    result = {"size": args.size, "batch": args.batch, "unet_gmacs_per_step": total / 1e9, "macs_by_op": macs}
    for kind in ("fp32", "u8u8", "u8s8"):
        result[f"gemm_gflops_{kind}"] = gemm_throughput(kind)
    best_int8 = max(result["gemm_gflops_u8u8"], result["gemm_gflops_u8s8"])
    result["roofline_step_s_fp32"] = 2 * total / 1e9 / result["gemm_gflops_fp32"]
    result["roofline_step_s_int8"] = 2 * total / 1e9 / best_int8
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return
    print(f"UNet at {args.size}, batch {args.batch}: {total / 1e9:.1f} GMACs per step ({macs})")
    print(f"GEMM FP32 {result['gemm_gflops_fp32']:.1f} GFLOP/s, INT8 u8u8 {result['gemm_gflops_u8u8']:.1f}, u8s8 {result['gemm_gflops_u8s8']:.1f} GOP/s")
    print(f"roofline minimum per step: FP32 {result['roofline_step_s_fp32']:.2f} s, INT8 {result['roofline_step_s_int8']:.2f} s")


if __name__ == "__main__":
    main()

"""The machine's limit: GEMM throughput measured with onnxruntime, and a UNet's work per step.

    python bench/roofline.py PACKAGE [--size 512x512] [--batch 2] [--step-times STEPS.json] [--openvino] [--json]

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
import os
import sys
import time
from pathlib import Path

import numpy as np

from nanoedge.core.manifest import Manifest


def _matmul_model(m: int, k: int, n: int, kind: str):
    from onnx import TensorProto, helper

    if kind == "fp32":
        a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])
        b = numpy_initializer("b", np.random.default_rng(0).standard_normal((k, n), dtype=np.float32))
        node = helper.make_node("MatMul", ["a", "b"], ["y"])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])
        graph = helper.make_graph([node], "mm", [a], [y], [b])
    elif kind == "qdq":
        # float in and out, INT8 inside: what a quantized package's MatMul looks like to a provider
        # that fuses QDQ (OpenVINO runs it as an INT8 GEMM: u8 activations x s8 weights)
        a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])
        w = numpy_initializer("w", np.random.default_rng(0).integers(-100, 100, (k, n)).astype(np.int8))
        scales = [numpy_initializer("sa", np.array(0.05, np.float32)), numpy_initializer("za", np.array(128, np.uint8)),
                  numpy_initializer("sw", np.array(0.01, np.float32)), numpy_initializer("zw", np.array(0, np.int8))]
        nodes = [helper.make_node("QuantizeLinear", ["a", "sa", "za"], ["aq"]),
                 helper.make_node("DequantizeLinear", ["aq", "sa", "za"], ["ad"]),
                 helper.make_node("DequantizeLinear", ["w", "sw", "zw"], ["wd"]),
                 helper.make_node("MatMul", ["ad", "wd"], ["y"])]
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])
        graph = helper.make_graph(nodes, "mm", [a], [y], [w, *scales])
    else:
        a = helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])
        weight_type = np.int8 if kind == "u8s8" else np.uint8
        b = numpy_initializer(
            "b", np.random.default_rng(0).integers(-100 if weight_type == np.int8 else 0, 100, (k, n)).astype(weight_type)
        )
        node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
        y = helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])
        graph = helper.make_graph([node], "mm", [a], [y], [b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def numpy_initializer(name: str, array: np.ndarray):
    from onnx import numpy_helper

    return numpy_helper.from_array(array, name)


def gemm_throughput(kind: str, m: int = 4096, k: int = 1280, n: int = 1280, repeats: int = 40, target: str = "cpu") -> dict[str, float]:
    """GFLOP/s (2 flops per MAC) of one large matrix multiply through onnxruntime's CPU kernels.

    ``wall``: best of ``repeats`` runs by wall clock. ``cpu``: the same work divided by the CPU
    seconds the process spent per thread (best run), i.e. what the cores deliver while they
    run it; on a shared machine other jobs steal wall time but not this, so it is the better
    estimate of the hardware's peak (a little low if idle threads spin). The roofline uses the
    larger of the two. ``target="openvino-cpu"`` runs the same model through OpenVINO's CPU
    plugin (onnxruntime-ep-openvino): ``fp32`` there is its BF16 GEMM on AMX CPUs, ``qdq`` its
    INT8 one.
    """
    import tempfile

    import onnxruntime as ort

    model = _matmul_model(m, k, n, kind)
    if target == "cpu":
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    else:
        import onnx

        from nanoedge.targets import create_session, get_profile

        with tempfile.TemporaryDirectory() as tmp:
            onnx.save(model, f"{tmp}/mm.onnx")
            session = create_session(Path(f"{tmp}/mm.onnx"), get_profile(target))
    threads = max(1, len(os.sched_getaffinity(0)))
    float_input = kind in ("fp32", "qdq")
    a = (
        np.random.default_rng(1).standard_normal((m, k), dtype=np.float32)
        if float_input
        else np.random.default_rng(1).integers(0, 255, (m, k)).astype(np.uint8)
    )
    session.run(None, {"a": a})
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        session.run(None, {"a": a})
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, (time.process_time() - cpu) / threads)
    flops = 2.0 * m * k * n
    return {"wall": flops / best_wall / 1e9, "cpu": flops / max(best_cpu, 1e-9) / 1e9, "threads": threads}


def _fixed_shape_model(model_file: Path, batch: int, height: int, width: int):
    """The UNet with its input dims fixed and every tensor's shape inferred.

    onnxruntime's symbolic shape inference is used first: it evaluates the Shape -> Gather ->
    Concat -> Reshape chains that the attention blocks build at run time (onnx's own inference
    with data propagation left 63 of the MatMuls behind those reshapes unresolved). It reads
    initializer values, so the weights are loaded (about 3x the UNet's bytes of memory, briefly).
    """
    import onnx

    model = onnx.load(str(model_file), load_external_data=True)
    concrete = {"batch": batch, "height": height // 8, "width": width // 8}
    for value in model.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_value = concrete.get(dim.dim_param, 1)
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        return SymbolicShapeInference.infer_shapes(model, auto_merge=True), "onnxruntime symbolic"
    except Exception as exc:  # an op the symbolic pass does not know: onnx's own inference
        print(f"symbolic shape inference failed ({type(exc).__name__}: {exc}); using onnx's", file=sys.stderr)
        return onnx.shape_inference.infer_shapes(model, data_prop=True), "onnx data_prop"


def unet_macs(model_file: Path, batch: int, height: int, width: int) -> dict[str, int]:
    """Multiply-accumulates of one UNet call by op type, from shape-inferred ONNX.

    ``unknown`` counts the Conv/MatMul/Gemm/MultiHeadAttention nodes whose shapes stayed unresolved (their work is
    missing from the total, so it must be 0 for the roofline to mean anything).
    """
    model, _how = _fixed_shape_model(model_file, batch, height, width)
    shapes = {}
    for value in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in value.type.tensor_type.shape.dim]
        shapes[value.name] = dims
    initializers = {i.name: list(i.dims) for i in model.graph.initializer}
    shapes.update(initializers)
    totals: dict[str, int] = {"Conv": 0, "MatMul": 0, "Gemm": 0, "unknown": 0}
    for node in model.graph.node:
        if node.op_type == "MultiHeadAttention":
            # fused attention (export/attention_fusion.py): QK^T and PV, counted with MatMul as
            # the unfused graph's score products were; query [B, S, D], key [B, L, D], value [B, L, Dv]
            q, k, v = (shapes.get(name) for name in node.input[:3])
            if not q or not k or not v or None in q + k + v or len(q) != 3:
                totals["unknown"] += 1
                continue
            totals["MatMul"] += q[0] * q[1] * k[1] * (q[2] + v[2])
            continue
        if node.op_type not in ("Conv", "MatMul", "Gemm"):
            continue
        out = shapes.get(node.output[0])
        if not out or None in out:
            totals["unknown"] += 1
            continue
        if node.op_type == "Conv":
            weight = shapes.get(node.input[1])
            if not weight:
                totals["unknown"] += 1
                continue
            # weight is [Cout, Cin / group, kH, kW]: each output element costs Cin/group * kH * kW
            macs = int(np.prod(out)) * int(np.prod(weight[1:]))
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
    parser.add_argument(
        "--step-times",
        default=None,
        help="JSON written by `bench/unet_step_time.py ... --json` or `bench/speed_options.py ... --json` (same size and batch): "
        "prints each variant's median step time as a multiple of the roofline minimum",
    )
    parser.add_argument(
        "--openvino",
        action="store_true",
        help="also measure OpenVINO's CPU plugin (target openvino-cpu): its float GEMM (BF16 on AMX CPUs) and its INT8 GEMM",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    unet_file = Manifest.load(args.package).component_path("unet")
    macs = unet_macs(unet_file, args.batch, height, width)
    total = sum(v for k, v in macs.items() if k != "unknown")
    from nanoedge.targets.cpuinfo import cpu_info

    result = {"size": args.size, "batch": args.batch, "unet_gmacs_per_step": total / 1e9, "macs_by_op": macs, "cpu": cpu_info().as_dict()}
    # (name in the result, model kind, target): onnxruntime's CPU kernels, and OpenVINO's on request
    measures = [("fp32", "fp32", "cpu"), ("u8u8", "u8u8", "cpu"), ("u8s8", "u8s8", "cpu")]
    if args.openvino:
        measures += [("ov_float", "fp32", "openvino-cpu"), ("ov_int8", "qdq", "openvino-cpu")]
    for kind, model_kind, target in measures:
        measured = gemm_throughput(model_kind, target=target)
        result[f"gemm_gflops_{kind}"] = max(measured["wall"], measured["cpu"])
        result[f"gemm_gflops_{kind}_wall"] = measured["wall"]
        result[f"gemm_gflops_{kind}_per_cpu_second"] = measured["cpu"]
        result["threads"] = measured["threads"]
    kinds = [kind for kind, _, _ in measures]
    if args.openvino:
        result["roofline_step_s_ov_float"] = 2 * total / 1e9 / result["gemm_gflops_ov_float"]
    # the INT8 floor is the fastest INT8 GEMM measured on this machine, whichever kernel ran it
    best_int8 = max(result[f"gemm_gflops_{k}"] for k in kinds if k in ("u8u8", "u8s8", "ov_int8"))
    result["roofline_step_s_fp32"] = 2 * total / 1e9 / result["gemm_gflops_fp32"]
    result["roofline_step_s_int8"] = 2 * total / 1e9 / best_int8
    rows = []
    if args.step_times:
        measured = json.loads(Path(args.step_times).read_text())
        if (measured.get("size"), measured.get("batch")) != (args.size, args.batch):
            parser.error(
                f"{args.step_times} was measured at {measured.get('size')} batch "
                f"{measured.get('batch')}, not {args.size} batch {args.batch}"
            )
        for row in measured["rows"]:
            if "median_wall_s" in row:  # bench/speed_options.py output: one row per (package, variant)
                label = row["package"] if row["variant"] == "default" else f"{row['package']}:{row['variant']}"
                row = {"label": label, "precision": row["precision"], "median_s": row["median_wall_s"], "median_cpu_s": row["median_cpu_s"]}
            # a variant whose heavy ops run in float is bound by the FP32 peak (OpenVINO's float
            # peak when it ran there: BF16 on AMX CPUs), else by the INT8 one
            bound = "fp32" if row["precision"] in ("fp32", "weight-only", "w8a16") else "int8"
            if bound == "fp32" and row.get("target") == "openvino-cpu":
                if "roofline_step_s_ov_float" not in result:
                    parser.error(f"{row['label']} ran on openvino-cpu: pass --openvino to measure that provider's float peak")
                bound = "ov_float"
            floor = result[f"roofline_step_s_{bound}"]
            entry = {"label": row["label"], "precision": row["precision"], "median_s": row["median_s"], "bound": bound,
                     "roofline_s": round(floor, 3), "x_roofline": round(row["median_s"] / floor, 2),
                     "x_int8_roofline": round(row["median_s"] / result["roofline_step_s_int8"], 2)}
            if row.get("median_cpu_s"):  # CPU seconds per thread: the step's time with the cores to itself
                entry["median_cpu_s"] = row["median_cpu_s"]
                entry["x_roofline_cpu"] = round(row["median_cpu_s"] / floor, 2)
            rows.append(entry)
        result["variants"] = rows
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return
    cpu = result["cpu"]
    print(f"CPU: {cpu['model']} ({cpu['vendor']}, {cpu['arch']}, kind {cpu['kind']}): {' '.join(cpu['features'])}")
    print(f"UNet at {args.size}, batch {args.batch}: {total / 1e9:.1f} GMACs per step ({macs})")
    for kind in kinds:
        print(f"GEMM {kind:<8} {result[f'gemm_gflops_{kind}']:8.1f} G(FL)OP/s  (best wall {result[f'gemm_gflops_{kind}_wall']:.1f}, "
              f"per CPU second {result[f'gemm_gflops_{kind}_per_cpu_second']:.1f}; {result['threads']} threads)")
    ov = f", OpenVINO float {result['roofline_step_s_ov_float']:.2f} s" if args.openvino else ""
    print(f"roofline minimum per step: FP32 {result['roofline_step_s_fp32']:.2f} s, INT8 {result['roofline_step_s_int8']:.2f} s{ov}")
    if rows:
        print(f"{'variant':<14}{'precision':<12}{'median s':>10}{'bound':>7}{'floor s':>9}{'x floor':>9}{'x INT8 floor':>14}"
              f"{'cpu s':>8}{'x floor (cpu)':>15}")
        for r in rows:
            cpu = f"{r['median_cpu_s']:>8.2f}{r['x_roofline_cpu']:>15.2f}" if "median_cpu_s" in r else ""
            print(f"{r['label']:<14}{r['precision']:<12}{r['median_s']:>10.2f}{r['bound']:>7}{r['roofline_s']:>9.2f}{r['x_roofline']:>9.2f}"
                  f"{r['x_int8_roofline']:>14.2f}{cpu}")


if __name__ == "__main__":
    main()

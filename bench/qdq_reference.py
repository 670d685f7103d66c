"""Which runtime computes a QDQ (INT8) package right? Each one against the graph as written.

    python bench/qdq_reference.py PACKAGE [--steps 4] [--size 512x512] [--calls 3] [--json out.json]

The reference is the same ONNX file run by onnxruntime with every graph optimization off
(``ORT_DISABLE_ALL``): QuantizeLinear/DequantizeLinear then run as the float ops the ONNX
spec defines and MatMul/Conv in FP32, with no fused INT8 kernel and no reordering. Against
it, on the very same inputs (captured from one generation on the ``cpu`` target: the text
encoder's call, the first/middle/last UNet calls, the VAE decoder's call):

- ``ort-cpu``: the ``cpu`` target as deployed (fused INT8 kernels);
- ``openvino-bf16`` / ``openvino-f32``: the ``openvino-native`` target with OpenVINO's
  precision hint (BF16 is its default on CPUs with AVX-512-BF16/AMX).

Printed per component and call: cosine similarity and max abs difference to the reference, and
the same between ``ort-cpu`` and ``openvino-bf16`` (the figure the issue quotes). With
``--float-package`` (the FP32 package the INT8 one was quantized from), each is also compared
with the float model on the same inputs: how much of the difference is quantization itself.
Never imports torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nanoedge.core.manifest import Manifest  # noqa: E402
from nanoedge.runtime.pipeline import GenerationRequest, Pipeline  # noqa: E402
from nanoedge.targets import create_session, get_profile  # noqa: E402


def capture(package: str, steps: int, size: str | None, calls: int, guidance: float | None) -> dict[str, list[dict[str, np.ndarray]]]:
    """Inputs of every component call during one generation on the cpu target (a subset of UNet calls)."""
    pipe = Pipeline.load(package, target="cpu")
    seen: dict[str, list[dict[str, np.ndarray]]] = {}
    pipe.observers.append(lambda component, feeds, result: seen.setdefault(component, []).append({k: v.copy() for k, v in feeds.items()}))
    pipe.generate_batch(
        [pipe.resolve(GenerationRequest("a photo of a red fox in the snow", seed=0, size=size, steps=steps, guidance=guidance))]
    )
    unet = seen.get("unet", [])
    if len(unet) > calls:
        picks = sorted({round(i * (len(unet) - 1) / (calls - 1)) for i in range(calls)}) if calls > 1 else [0]
        seen["unet"] = [unet[i] for i in picks]
    return seen


def reference_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def openvino_session(path: Path, precision: str):
    os.environ["NANOEDGE_OPENVINO_PRECISION"] = precision
    try:
        return create_session(path, get_profile("openvino-native"))
    finally:
        del os.environ["NANOEDGE_OPENVINO_PRECISION"]


def compare(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    cosine = float(a64 @ b64 / (np.linalg.norm(a64) * np.linalg.norm(b64)))
    return {"cosine": round(cosine, 6), "max_abs": float(np.max(np.abs(a64 - b64))), "ref_abs_max": float(np.max(np.abs(b64)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("package")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", default=None, help="WxH (default: the package's)")
    parser.add_argument("--guidance", type=float, default=None)
    parser.add_argument("--calls", type=int, default=3, help="UNet calls compared (first, ..., last)")
    parser.add_argument("--float-package", default=None, help="the FP32 package this one was quantized from")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    feeds = capture(args.package, args.steps, args.size, args.calls, args.guidance)
    manifest = Manifest.load(args.package)
    rows = []
    for component in ("text_encoder", "unet", "vae_decoder"):
        path = manifest.component_path(component)
        runners = {
            "reference": reference_session(path),
            "ort-cpu": create_session(path, get_profile("cpu")),
            "openvino-bf16": openvino_session(path, "bf16"),
            "openvino-f32": openvino_session(path, "f32"),
        }
        if args.float_package:
            runners["fp32-model"] = reference_session(Manifest.load(args.float_package).component_path(component))
        for call, inputs in enumerate(feeds.get(component, [])):
            outs = {name: session.run(None, inputs)[0] for name, session in runners.items()}
            row = {"component": component, "call": call}
            for name in ("ort-cpu", "openvino-bf16", "openvino-f32"):
                row[f"{name} vs reference"] = compare(outs[name], outs["reference"])
            row["ort-cpu vs openvino-bf16"] = compare(outs["ort-cpu"], outs["openvino-bf16"])
            if "fp32-model" in outs:
                for name in ("reference", "ort-cpu", "openvino-bf16", "openvino-f32"):
                    row[f"{name} vs fp32-model"] = compare(outs[name], outs["fp32-model"])
            rows.append(row)
            print(
                component,
                call,
                " | ".join(f"{k}: cos {v['cosine']:.6f} max {v['max_abs']:.3g}" for k, v in row.items() if isinstance(v, dict)),
                flush=True,
            )
        del runners
    if args.json:
        args.json.write_text(json.dumps({"package": args.package, "steps": args.steps, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

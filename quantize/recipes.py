"""The quantization schemes: what each one does to a component, as data (no onnx, no I/O).

A :class:`Recipe` is written into the output manifest as it is, so a package says exactly
how it was made. Schemes:

``int8``
    Static W8A8 in QDQ form: per-channel INT8 weights, UINT8 activations with ranges from
    calibration. Only Conv, Gemm and MatMul with a constant weight are quantized: those are
    where the time goes on CPU (onnxruntime fuses them into QLinearConv / QLinearMatMul), and
    keeping softmax, norms and the attention score products in float avoids the failure modes
    that make plain INT8 diffusion models drift.
``w8a8``
    The same, every operator, with 8-bit activations: the NPU (QNN HTP W8A8) form of INT8.
``w8a16``
    INT8 weights, 16-bit activations, every operator onnxruntime can quantize: the Qualcomm
    HTP recipe. 16-bit Q/DQ needs opset 21 (the model is upgraded). On CPU it runs as float
    with Q/DQ pairs, so it is a portability format, not a CPU speed-up.
``dynamic``
    INT8 weights, activations quantized per call at run time (MatMulInteger/ConvInteger):
    no calibration needed, CPU only.
``weight-only``
    INT8 weights stored with a DequantizeLinear in front of the float op; activations stay
    float. The smallest accuracy loss, a size win only.
``fp32``
    Leave the component as it is (for per-component choices).

Weight types (``weight_type="auto"``; the choice is recorded in the manifest):

- ``int8``: the u8 x s8 kernels saturate on x86 CPUs without VNNI (measured: cosine 0.961
  instead of 0.998), so signed INT8 weights where the CPU has VNNI / AVX-VNNI / AMX or is
  ARM, and ``reduce_range`` (7-bit weights, which cannot saturate) on x86 without it.
  Unsigned weights ran slower than signed ones on the VNNI test machine.
- ``dynamic``: unsigned weights: onnxruntime's ConvInteger with signed weights is several
  times slower on both kinds of x86 CPU (see ``bench/`` and docs/quantization.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from nanoedge.core.errors import InvalidRequestError

from .cpu import cpu_has_int8_dot_product

SCHEMES = ("int8", "w8a16", "w8a8", "dynamic", "weight-only")
COMPONENT_SCHEMES = (*SCHEMES, "fp32")
WEIGHT_TYPES = ("auto", "int8", "uint8")

# Operators the CPU-oriented schemes quantize: the ones that carry weights and the time.
COMPUTE_OPS = ("Conv", "Gemm", "MatMul")
# Every operator with float inputs and outputs (an NPU runs nothing in float): "*" stands
# for all operator types except these, which only move data between types.
ALL_OPS = ("*",)
NEVER_QUANTIZED = ("Cast", "Shape", "Size", "ConstantOfShape")
# w8a8 keeps these activations at 16 bits (rules of sixteen_bit_tensors). Measured on the
# tiny static package, HTP simulator vs CPU EP, image PSNR of 2 prompts at 4 steps, guidance 7.5,
# calibrated at 4 steps: all 8-bit 26.8/27.8 dB; + io, residual 27.8/29.1; + softmax, norm
# 28.1/29.4; + silu 30.1/30.3; + concat 34.6/35.1 (docs/targets.md). The HTP's 8-bit arithmetic
# is as close to FP32 as the CPU EP's (23.7 vs 23.8 dB): the two differ by independent
# rounding noise, which classifier-free guidance multiplies, so only less noise closes the gap.
W8A8_SIXTEEN_BIT = ("io", "residual", "softmax", "norm", "silu", "concat")
# int8 rewrites the graph before calibration so each concatenated input of a conv keeps its
# own 8-bit scale (quantize/rewrites.py; measured in docs/quantization.md).
INT8_REWRITES = ("split_concat_convs",)
# onnxruntime's dynamic quantizer has integer kernels for these two only.
DYNAMIC_OPS = ("Conv", "MatMul")


@dataclass(frozen=True)
class Recipe:
    """How one component is quantized. ``kind`` is static, dynamic, weight-only or none."""

    scheme: str
    kind: str
    weight_type: str = "int8"
    weight_symmetric: bool = True
    per_channel: bool = True
    reduce_range: bool = False
    activation_type: str | None = None
    activation_symmetric: bool = False
    op_types: tuple[str, ...] = COMPUTE_OPS
    const_weight_only: bool = True
    opset: int | None = None
    calibration: str | None = None
    qnn_compatible: bool = False
    # Activation tensors kept at 16 bits in an 8-bit graph, by rule (see sixteen_bit_tensors).
    sixteen_bit: tuple[str, ...] = ()
    # Graph rewrites applied before calibration (names in quantize.rewrites.REWRITES).
    rewrites: tuple[str, ...] = ()

    def quantizes(self, op_type: str) -> bool:
        if op_type in NEVER_QUANTIZED:
            return False
        return "*" in self.op_types or op_type in self.op_types

    @property
    def needs_ranges(self) -> bool:
        return self.kind == "static"

    @property
    def activation_bits(self) -> int | None:
        return {"uint8": 8, "int8": 8, "uint16": 16, "int16": 16}.get(self.activation_type or "")

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["op_types"] = list(self.op_types)
        data["sixteen_bit"] = list(self.sixteen_bit)
        data["rewrites"] = list(self.rewrites)
        return data


def recipe_for(scheme: str, weight_type: str = "auto", calibration: str = "minmax") -> Recipe:
    """The recipe of a scheme name; ``weight_type`` auto/int8/uint8 as described above."""
    if scheme not in COMPONENT_SCHEMES:
        raise InvalidRequestError(f"unknown scheme '{scheme}'", hint=f"use one of: {', '.join(COMPONENT_SCHEMES)}")
    if weight_type not in WEIGHT_TYPES:
        raise InvalidRequestError(f"unknown weight type '{weight_type}'", hint=f"use one of: {', '.join(WEIGHT_TYPES)}")
    if scheme == "fp32":
        return Recipe(scheme="fp32", kind="none", weight_type="float32", per_channel=False, op_types=())
    if scheme == "weight-only":
        # No integer kernels run, so saturation cannot happen: always symmetric INT8.
        return Recipe(scheme=scheme, kind="weight-only")
    if scheme == "w8a8":
        # The 8-bit twin of w8a16 for NPUs (QNN HTP W8A8): every operator quantized with
        # 8-bit activations, so the accelerator takes the whole graph. The CPU-oriented
        # ``int8`` keeps norms and softmax in float, which an NPU would hand back to the CPU.
        return Recipe(
            scheme=scheme,
            kind="static",
            activation_type="uint8",
            op_types=ALL_OPS,
            const_weight_only=False,
            calibration=calibration,
            qnn_compatible=True,
            sixteen_bit=W8A8_SIXTEEN_BIT,
        )
    if scheme == "w8a16":
        # NPU format: symmetric INT8 per-channel weights, every operator quantized, and
        # onnxruntime's QNN pre-processing (Erf chains fused to Gelu) and per-operator
        # overrides (LayerNorm/MatMul weight types HTP accepts).
        return Recipe(
            scheme=scheme,
            kind="static",
            activation_type="uint16",
            op_types=ALL_OPS,
            const_weight_only=False,
            opset=21,
            calibration=calibration,
            qnn_compatible=True,
        )
    if weight_type != "auto":
        chosen, reduce = weight_type, False
    elif scheme == "dynamic":
        # ConvInteger/MatMulInteger with signed weights ran the BK-SDM-Tiny UNet 3.2x slower
        # than with unsigned ones on a VNNI CPU (2.7x on AVX2 in an earlier probe): unsigned.
        chosen, reduce = "uint8", False
    else:
        chosen, reduce = "int8", not cpu_has_int8_dot_product()
    if scheme == "int8":
        base = Recipe(scheme=scheme, kind="static", activation_type="uint8", calibration=calibration, rewrites=INT8_REWRITES)
    else:
        base = Recipe(scheme=scheme, kind="dynamic", activation_type="uint8", op_types=DYNAMIC_OPS)
    return replace(base, weight_type=chosen, weight_symmetric=chosen == "int8", reduce_range=reduce)

"""Quantization arithmetic in numpy, matching onnxruntime's quantizer bit for bit.

Two places need it outside onnxruntime's own quantizer: the weight-only scheme (which writes
INT8 weights + DequantizeLinear itself) and the sensitivity probe (which fake-quantizes one
node at a time). Both must see exactly the numbers the real quantized graph will use, so
the ranges, rounding (half to even) and zero points follow ``onnxruntime.quantization``'s
``compute_scale_zp`` / ``get_qmin_qmax_for_qType`` rules, vectorised over channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# name -> (numpy dtype, full range, symmetric range, reduced range) as onnxruntime defines them
_TYPES: dict[str, tuple[type, tuple[int, int], tuple[int, int], tuple[int, int]]] = {
    "int8": (np.int8, (-128, 127), (-127, 127), (-64, 64)),
    "uint8": (np.uint8, (0, 255), (0, 255), (0, 127)),
    "int16": (np.int16, (-32768, 32767), (-32767, 32767), (-16384, 16384)),
    "uint16": (np.uint16, (0, 65535), (0, 65535), (0, 32767)),
}


def qrange(qtype: str, symmetric: bool = False, reduce_range: bool = False) -> tuple[int, int]:
    """(qmin, qmax) for a quantized type, as onnxruntime's ``get_qmin_qmax_for_qType``."""
    _, full, sym, reduced = _TYPES[qtype]
    if reduce_range:
        return reduced
    return sym if symmetric else full


def numpy_dtype(qtype: str) -> type:
    return _TYPES[qtype][0]


@dataclass(frozen=True)
class QParams:
    """Scale and zero point (scalars, or one per channel) plus the integer range they use."""

    scale: np.ndarray
    zero_point: np.ndarray
    qmin: int
    qmax: int
    qtype: str


def scale_zero_point(rmin: np.ndarray, rmax: np.ndarray, qtype: str, symmetric: bool, reduce_range: bool = False) -> QParams:
    """Scale/zero point covering [rmin, rmax] (always widened to include 0), elementwise."""
    qmin, qmax = qrange(qtype, symmetric, reduce_range)
    rmin = np.minimum(np.asarray(rmin, dtype=np.float64), 0.0)
    rmax = np.maximum(np.asarray(rmax, dtype=np.float64), 0.0)
    if symmetric:
        absmax = np.maximum(np.abs(rmin), np.abs(rmax))
        rmin, rmax = -absmax, absmax
    scale = (rmax - rmin) / float(qmax - qmin)
    tiny = np.finfo(np.float32).tiny
    degenerate = scale < tiny
    scale = np.where(degenerate, 1.0, scale).astype(np.float32)
    if symmetric:
        zero = np.full(scale.shape, np.round((qmin + qmax) / 2.0))
    else:
        zero = np.round(qmin - rmin / np.where(degenerate, 1.0, scale.astype(np.float64)))
    zero = np.where(degenerate, 0 if qmin <= 0 <= qmax else qmin, np.clip(zero, qmin, qmax))
    return QParams(scale=scale, zero_point=zero.astype(numpy_dtype(qtype)), qmin=qmin, qmax=qmax, qtype=qtype)


def _channel_view(params: QParams, ndim: int, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    scale = params.scale.astype(np.float32)
    zero = params.zero_point.astype(np.float32)
    if axis is not None and scale.ndim == 1:
        shape = [1] * ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
        zero = zero.reshape(shape)
    return scale, zero


def quantize(values: np.ndarray, params: QParams, axis: int | None = None) -> np.ndarray:
    """Integers for ``values`` (round half to even, then clip), as QuantizeLinear computes them."""
    scale, zero = _channel_view(params, values.ndim, axis)
    q = np.round(values.astype(np.float32) / scale) + zero
    return np.clip(q, params.qmin, params.qmax).astype(numpy_dtype(params.qtype))


def dequantize(q: np.ndarray, params: QParams, axis: int | None = None) -> np.ndarray:
    scale, zero = _channel_view(params, q.ndim, axis)
    return ((q.astype(np.float32) - zero) * scale).astype(np.float32)


def weight_params(weight: np.ndarray, axis: int | None, qtype: str, symmetric: bool, reduce_range: bool = False) -> QParams:
    """Per-channel (``axis``) or per-tensor (``axis=None``) parameters for a weight tensor."""
    w = np.asarray(weight, dtype=np.float32)
    if axis is None:
        return scale_zero_point(np.array(w.min()), np.array(w.max()), qtype, symmetric, reduce_range)
    moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    return scale_zero_point(moved.min(axis=1), moved.max(axis=1), qtype, symmetric, reduce_range)


def fake_quantize_weight(weight: np.ndarray, axis: int | None, qtype: str, symmetric: bool, reduce_range: bool = False) -> np.ndarray:
    """The float weight the quantized graph effectively multiplies with (quantize + dequantize)."""
    params = weight_params(weight, axis, qtype, symmetric, reduce_range)
    return dequantize(quantize(weight, params, axis), params, axis)

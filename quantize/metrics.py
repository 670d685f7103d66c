"""Accuracy figures: cosine, PSNR and prompt responsiveness.

PSNR for model outputs (noise predictions, embeddings, decoded images in [-1, 1]) uses the
reference's own value range as the peak, so figures are comparable across components;
PSNR for 8-bit images uses 255.
"""

from __future__ import annotations

import math

import numpy as np


def cosine(reference: np.ndarray, test: np.ndarray) -> float:
    a = np.asarray(reference, dtype=np.float64).ravel()
    b = np.asarray(test, dtype=np.float64).ravel()
    denominator = np.linalg.norm(a) * np.linalg.norm(b)
    if denominator == 0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(a @ b / denominator)


def psnr(reference: np.ndarray, test: np.ndarray, peak: float | None = None) -> float:
    """10 log10(peak^2 / MSE) in dB; ``peak`` defaults to the reference's max - min."""
    ref = np.asarray(reference, dtype=np.float64)
    mse = float(np.mean((ref - np.asarray(test, dtype=np.float64)) ** 2))
    if peak is None:
        peak = float(ref.max() - ref.min()) if ref.size else 0.0
    if mse == 0:
        return math.inf
    if peak <= 0:
        return -math.inf
    return 10.0 * math.log10(peak * peak / mse)


def image_psnr(reference: np.ndarray, test: np.ndarray) -> float:
    return psnr(reference, test, peak=255.0)


class RunningError:
    """Accumulates cosine / PSNR parts over many calls without keeping the tensors."""

    def __init__(self) -> None:
        self.dot = self.ref_sq = self.test_sq = self.err_sq = 0.0
        self.count = 0
        self.low = math.inf
        self.high = -math.inf
        self.calls = 0

    def add(self, reference: np.ndarray, test: np.ndarray) -> None:
        ref = np.asarray(reference, dtype=np.float64).ravel()
        out = np.asarray(test, dtype=np.float64).ravel()
        self.dot += float(ref @ out)
        self.ref_sq += float(ref @ ref)
        self.test_sq += float(out @ out)
        diff = ref - out
        self.err_sq += float(diff @ diff)
        self.count += ref.size
        self.low = min(self.low, float(ref.min()))
        self.high = max(self.high, float(ref.max()))
        self.calls += 1

    def cosine(self) -> float:
        denominator = math.sqrt(self.ref_sq * self.test_sq)
        return 1.0 if denominator == 0 and self.err_sq == 0 else (self.dot / denominator if denominator else 0.0)

    def psnr(self) -> float:
        if self.err_sq == 0:
            return math.inf
        peak = self.high - self.low
        return 10.0 * math.log10(peak * peak / (self.err_sq / self.count)) if peak > 0 else -math.inf


class Responsiveness:
    """std(cond - uncond) of a quantized UNet over FP32's, on the same CFG batches.

    A UNet whose guidance signal collapses (the known W8A16 failure: 0.009 against 0.175)
    still produces plausible noise predictions, so PSNR alone does not catch it; this ratio
    does. Also tracks the cosine between the two guidance directions.
    """

    def __init__(self) -> None:
        self.reference = RunningError()
        self.sum_ref = self.sum_test = 0.0

    def add(self, reference: np.ndarray, test: np.ndarray) -> None:
        half = reference.shape[0] // 2
        ref = reference[half:] - reference[:half]
        out = test[half:] - test[:half]
        self.reference.add(ref, out)
        self.sum_ref += float(np.asarray(ref, dtype=np.float64).sum())
        self.sum_test += float(np.asarray(out, dtype=np.float64).sum())

    def _std(self, square_sum: float, total: float) -> float:
        n = self.reference.count
        return math.sqrt(max(square_sum / n - (total / n) ** 2, 0.0)) if n else 0.0

    @property
    def fp32_std(self) -> float:
        return self._std(self.reference.ref_sq, self.sum_ref)

    @property
    def quantized_std(self) -> float:
        return self._std(self.reference.test_sq, self.sum_test)

    def ratio(self) -> float:
        return self.quantized_std / self.fp32_std if self.fp32_std > 0 else math.nan

    def cosine(self) -> float:
        return self.reference.cosine()

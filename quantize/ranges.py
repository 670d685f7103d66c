"""Streaming activation ranges: calibration that needs no more memory than one inference.

onnxruntime's ``quantize_static`` keeps every intermediate activation of every calibration
sample in memory (4 UNet samples at 512 px took 15.6 GB), and its ``CalibMaxIntermediateOutputs``
escape hatch is broken in 1.32 ("No data is collected"). This collector instead adds a
ReduceMin and a ReduceMax after each tensor to calibrate, so a run returns two scalars per
tensor; samples are fed one at a time from disk and only running extremes are kept. The
result is written in onnxruntime's own calibration-cache format, which ``quantize_static``
reads instead of calibrating (``calibration_cache_path``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from nanoedge.core.atomic import write_bytes_atomic
from nanoedge.targets import get_profile

from .graphs import load_model

log = logging.getLogger(__name__)

_MIN = "__nanoedge_min"
_MAX = "__nanoedge_max"
# Beyond any real activation: a tensor reaching this holds a mask or sentinel (CLIP's causal
# mask is -3.4e38). No integer grid can represent it and its neighbours, so nodes reading or
# writing such a tensor stay float.
UNQUANTIZABLE_RANGE = 1e6

Ranges = dict[str, tuple[float, float]]


class RangeCollector:
    """Runs an augmented copy of a model and keeps the running min/max of chosen tensors."""

    def __init__(self, model_path: Path, tensors: Sequence[str], threads: int | None = None) -> None:
        import onnx
        from onnx import helper

        model = load_model(model_path, weights=False)
        self.tensors = list(dict.fromkeys(tensors))
        added: dict[str, list] = {}
        producers = {o: n.name for n in model.graph.node for o in n.output}
        for name in self.tensors:
            for suffix, op in ((_MIN, "ReduceMin"), (_MAX, "ReduceMax")):
                node = helper.make_node(op, [name], [name + suffix], name=name + suffix, keepdims=0)
                added.setdefault(producers.get(name, ""), []).append(node)
                model.graph.output.append(helper.make_tensor_value_info(name + suffix, onnx.TensorProto.FLOAT, []))
        place_after_producers(model.graph, added)
        # Saved next to the model so the external-data references resolve to the same weights file.
        self.path = model_path.with_name("ranges-augmented.onnx")
        onnx.save_model(model, str(self.path))
        self.session = analysis_session(self.path, threads)
        self.output_names = [n + s for n in self.tensors for s in (_MIN, _MAX)]
        self.low = np.full(len(self.tensors), np.inf, dtype=np.float64)
        self.high = np.full(len(self.tensors), -np.inf, dtype=np.float64)
        self.samples = 0

    def update(self, feeds: dict[str, np.ndarray]) -> None:
        for part in split_batch(self.session, feeds):
            values = self.session.run(self.output_names, part)
            lows = np.array([float(v) for v in values[0::2]])
            highs = np.array([float(v) for v in values[1::2]])
            self.low = np.minimum(self.low, lows)
            self.high = np.maximum(self.high, highs)
        self.samples += 1

    def ranges(self) -> Ranges:
        if not self.samples:
            raise ValueError("no calibration sample was collected")
        return {name: (float(lo), float(hi)) for name, lo, hi in zip(self.tensors, self.low, self.high)}

    def close(self) -> None:
        self.session = None
        self.path.unlink(missing_ok=True)


def analysis_session(path: Path, threads: int | None = None):
    """A CPU session like the runtime's (same options), but without onnxruntime's memory arena.

    Graphs that expose every activation to a reduction defeat the arena's reuse: measured on
    the BK-SDM-Tiny UNet at 512 px with all 1854 tensors observed, two batch-1 runs peaked at
    13.4 GB with the arena and 9.5 GB without. Calibration is not latency-critical, so the
    arena's speed is worth less here than staying inside a 24 GB machine.
    """
    import onnxruntime as ort

    from nanoedge.targets.session import session_options

    options = session_options(get_profile("cpu"), threads)
    options.enable_cpu_mem_arena = False
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def split_batch(session, feeds: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """One feed per batch row when the model's batch axis is dynamic, else the feeds as they are.

    Every operator in these models works per sample (GroupNorm, attention, convolutions), so
    extremes and errors over the rows one by one equal those over the batch, while the
    activations alive at once halve for a CFG pair (one 512 px UNet run with every tensor
    observed: 7.4 GB at batch 1, 13.3 GB at batch 2; a w8a16 run at batch 2 was killed at
    22 GB on a 24 GB machine).
    """
    batch_dim = session.get_inputs()[0].shape[0]
    sizes = {v.shape[0] for v in feeds.values() if getattr(v, "ndim", 0) >= 1}
    if isinstance(batch_dim, int) or len(sizes) != 1 or (rows := sizes.pop()) <= 1:
        return [feeds]
    return [{k: np.ascontiguousarray(v[i : i + 1]) for k, v in feeds.items()} for i in range(rows)]


def place_after_producers(graph, added: dict[str, list]) -> None:
    """Insert ``added[node_name]`` right after that node ("" = before everything).

    Keeps the added nodes in the order a reader expects (each next to what it observes);
    onnxruntime plans its own execution order, so this is for readability of the augmented
    graph, not for memory (measured: same peak either way).
    """
    original = list(graph.node)
    del graph.node[:]
    graph.node.extend(added.get("", []))
    for node in original:
        graph.node.append(node)
        graph.node.extend(added.get(node.name, []))


def collect_ranges(
    model_path: Path,
    tensors: Sequence[str],
    samples: Iterable[dict[str, np.ndarray]],
    total: int,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Ranges:
    """Min/max of ``tensors`` over ``samples`` (model inputs), one sample in memory at a time."""
    collector = RangeCollector(model_path, tensors, threads)
    try:
        for index, feeds in enumerate(samples):
            collector.update(feeds)
            if progress is not None:
                progress(index + 1, total)
        return collector.ranges()
    finally:
        collector.close()


def save_ranges(ranges: Ranges, path: Path) -> None:
    """Keep collected ranges next to the FP32 references they came from (written atomically)."""
    import json

    write_bytes_atomic(path, json.dumps({name: [float(lo), float(hi)] for name, (lo, hi) in ranges.items()}).encode())


def load_ranges(path: Path) -> Ranges | None:
    """Ranges saved by :func:`save_ranges`, or None when there are none (or they are unreadable)."""
    import json

    try:
        data = json.loads(path.read_text())
        return {name: (float(lo), float(hi)) for name, (lo, hi) in data.items()}
    except (OSError, ValueError, TypeError):
        return None


def write_calibration_cache(ranges: Ranges, path: Path) -> Path:
    """Write ranges in onnxruntime's calibration-cache JSON (read by ``quantize_static``)."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData, save_tensors_data

    data = {
        name: TensorData(lowest=np.array(lo, dtype=np.float32), highest=np.array(hi, dtype=np.float32))
        for name, (lo, hi) in ranges.items()
        if np.isfinite(lo) and np.isfinite(hi)
    }
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), path)
    return path


def unrepresentable(ranges: Ranges, limit: float = UNQUANTIZABLE_RANGE) -> set[str]:
    """Tensors whose calibrated range no integer grid can hold (masks, sentinels, infinities)."""
    return {name for name, (lo, hi) in ranges.items() if not (np.isfinite(lo) and np.isfinite(hi)) or max(abs(lo), abs(hi)) > limit}

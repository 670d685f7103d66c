"""OpenVINO's own runtime behind the runtime's one session interface (target ``openvino-native``).

Why a second backend: onnxruntime's OpenVINO plugin (``openvino-cpu``) offers its CPU device
on Intel CPUs only, yet the ``openvino`` package itself runs on any x86-64 CPU with AVX2 (and
on ARM64): it reads our ONNX files, QDQ pairs included, runs the quantized MatMul/Conv as INT8
GEMMs (VNNI, AVX2 or AMX, whatever the CPU has) and the float ops in BF16 where the CPU has
BF16. Measured on an AMD EPYC Zen 4 in docs/benchmarks.md.

Why an adapter and not a second code path: the pipeline, ``nanoedge check`` and the benchmarks
call ``session.run(None, feeds, run_options)`` and ``get_inputs()/get_outputs()`` on whatever
``create_session`` returns. :class:`OpenVINOSession` offers exactly that surface, so nothing
above ``targets/`` knows which runtime computes a component.

Settings (environment, read when a session opens):

- ``NANOEDGE_THREADS`` / ``threads=``: ``INFERENCE_NUM_THREADS``.
- ``NANOEDGE_OPENVINO_PRECISION``: ``f32``, ``bf16`` or ``f16`` (OpenVINO's
  ``INFERENCE_PRECISION_HINT``); unset: OpenVINO's default, BF16 on CPUs with AVX-512-BF16
  or AMX, FP32 elsewhere.
- ``NANOEDGE_OPENVINO_CACHE=0``: no model cache; otherwise compiled models are kept under
  ``NANOEDGE_CACHE_DIR/openvino-native``, keyed by OpenVINO on the model file and settings.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nanoedge.core import settings
from nanoedge.core.errors import InvalidRequestError, PackageError, TargetUnavailableError
from nanoedge.core.settings import cache_dir

from .plugins import openvino_precision_hint

log = logging.getLogger(__name__)

#: NANOEDGE_OPENVINO_PRECISION values -> OpenVINO's INFERENCE_PRECISION_HINT.
INSTALL_HINT = 'pip install "nanoedge[openvino-native]" (the openvino package)'

_core = None
_core_lock = threading.Lock()

# OpenVINO element type names -> the onnxruntime type strings callers read from NodeArg.type.
_TYPE_NAMES = {
    "f32": "tensor(float)",
    "f16": "tensor(float16)",
    "i64": "tensor(int64)",
    "i32": "tensor(int32)",
    "u8": "tensor(uint8)",
    "i8": "tensor(int8)",
}


def import_openvino():
    """The ``openvino`` module, or a TargetUnavailableError that says how to install it."""
    try:
        import openvino
    except ImportError as exc:
        raise TargetUnavailableError("the openvino package is not installed", hint=INSTALL_HINT) from exc
    return openvino


def core():
    """One ``openvino.Core`` per process: it owns the plugins and their thread pools."""
    global _core
    with _core_lock:
        if _core is None:
            _core = import_openvino().Core()
        return _core


def device_summary() -> tuple[str, list[str]]:
    """(CPU name as OpenVINO reports it, its optimization capabilities such as INT8, BF16)."""
    ov_core = core()
    if "CPU" not in ov_core.available_devices:
        return "", []
    return str(ov_core.get_property("CPU", "FULL_DEVICE_NAME")), [str(c) for c in ov_core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def compile_config(threads: int | None) -> dict[str, Any]:
    """OpenVINO CPU properties from the runtime's settings (see the module docstring)."""
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    precision = openvino_precision_hint()
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    if settings.openvino_cache():
        folder = cache_dir() / "openvino-native"
        folder.mkdir(parents=True, exist_ok=True)
        config["CACHE_DIR"] = str(folder)
    return config


@dataclass(frozen=True)
class PortInfo:
    """What onnxruntime's NodeArg offers and callers read: name, shape (None/str = dynamic), type."""

    name: str
    shape: list[Any]
    type: str


def _graph_name(port) -> str:
    """The ONNX graph's own name for a compiled port.

    After OpenVINO's fusions a port carries every tensor name merged into it (``input_ids``
    next to ``/Cast_output_0``); the exporter's internal names start with ``/`` or ``onnx::``.
    """
    names = sorted(port.get_names())
    public = [n for n in names if not n.startswith(("/", "onnx::"))]
    return (public or names or [port.get_any_name()])[0]


def _port_info(port) -> PortInfo:
    shape = []
    for dim in port.get_partial_shape():
        shape.append(dim.get_length() if dim.is_static else None)
    element = port.get_element_type().get_type_name()
    return PortInfo(_graph_name(port), shape, _TYPE_NAMES.get(element, f"tensor({element})"))


class OpenVINOSession:
    """A compiled OpenVINO model that answers like an ``onnxruntime.InferenceSession``.

    Thread-safe: concurrent ``run`` calls each take an infer request from a small pool (each
    request owns its intermediate buffers, so one per concurrent caller, reused after).
    Outputs are copied out of OpenVINO's buffers, which the next inference reuses.
    """

    def __init__(self, compiled, model_path: Path) -> None:
        self._compiled = compiled
        self.model_path = model_path
        self._inputs = [_port_info(p) for p in compiled.inputs]
        self._outputs = [_port_info(p) for p in compiled.outputs]
        # every name a port answers to -> its index (callers use the graph's names)
        self._input_index = {name: i for i, p in enumerate(compiled.inputs) for name in p.get_names()}
        self._output_index = {name: i for i, p in enumerate(compiled.outputs) for name in p.get_names()}
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def get_inputs(self) -> list[PortInfo]:
        return list(self._inputs)

    def get_outputs(self) -> list[PortInfo]:
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        return ["OpenVINO CPU"]

    def run(self, output_names: Sequence[str] | None, feeds: dict[str, np.ndarray], run_options: Any = None) -> list[np.ndarray]:
        """Same contract as InferenceSession.run; ``run_options`` (onnxruntime's) has no meaning here."""
        unknown = [name for name in feeds if name not in self._input_index]
        if unknown:
            raise InvalidRequestError(
                f"unknown input(s) {unknown} for '{self.model_path}'", hint=f"inputs are {[p.name for p in self._inputs]}"
            )
        wanted = [p.name for p in self._outputs] if output_names is None else list(output_names)
        missing = [name for name in wanted if name not in self._output_index]
        if missing:
            raise InvalidRequestError(
                f"unknown output(s) {missing} for '{self.model_path}'", hint=f"outputs are {[p.name for p in self._outputs]}"
            )
        with self._lock:
            request = self._idle.pop() if self._idle else self._compiled.create_infer_request()
        try:
            request.infer({self._input_index[name]: np.ascontiguousarray(value) for name, value in feeds.items()})
            return [request.get_output_tensor(self._output_index[name]).data.copy() for name in wanted]
        finally:
            with self._lock:
                self._idle.append(request)


#: What OpenVINO's error says when a low-precision (INT8) transformation threw.
LPT_FAILURE = "Transformation] END"


def _first_line(exc: BaseException) -> str:
    """The informative line of an OpenVINO error (its first lines are source locations)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith("Exception from src/")]
    return (useful or lines or [type(exc).__name__])[0][:300]


def open_session(model_path: Path, threads: int | None = None) -> OpenVINOSession:
    """Read and compile ``model_path`` (ONNX, QDQ INT8 as is) for OpenVINO's CPU device."""
    ov_core = core()
    config = compile_config(threads)
    if "CPU" not in ov_core.available_devices:
        raise TargetUnavailableError(
            "OpenVINO offers no CPU device here", hint="OpenVINO's CPU plugin needs an x86-64 CPU with AVX2 or an ARM64 CPU"
        )
    if not Path(model_path).exists():
        raise PackageError(f"model file '{model_path}' is missing", hint="re-export the package")
    try:
        # Compiling from the path (not from read_model's result) lets OpenVINO's cache skip
        # reading and converting the ONNX file on a later load.
        try:
            compiled = ov_core.compile_model(str(model_path), "CPU", config)
        except Exception as exc:
            if LPT_FAILURE not in str(exc):
                raise
            # OpenVINO 2026.4's low-precision transformations throw on a Concat that joins a
            # dequantized tensor with a float one along the token axis (the demo UNet's
            # attention pooling). Without them OpenVINO computes the QDQ graph as written, in
            # float: the exact reference result, without INT8 kernels for that model.
            log.warning(
                "openvino-native: OpenVINO's INT8 transformations failed on %s; running its QDQ pairs in float " "(exact, slower): %s",
                model_path,
                _first_line(exc),
            )
            compiled = ov_core.compile_model(str(model_path), "CPU", {**config, "LP_TRANSFORMS_MODE": "NO"})
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses with long multi-line texts
        first_line = _first_line(exc)
        raise PackageError(
            f"OpenVINO could not load '{model_path}': {first_line}",
            hint="the file is corrupt or uses an op OpenVINO lacks: check it with "
            "`nanoedge check PACKAGE --target openvino-native`, or use --target cpu",
        ) from exc
    log.info("openvino-native: compiled %s (%s)", model_path, ", ".join(f"{k}={v}" for k, v in config.items()))
    return OpenVINOSession(compiled, Path(model_path))


def executed_precisions(session: OpenVINOSession) -> dict[str, int]:
    """How many executed layers ran in each precision (from OpenVINO's runtime graph).

    For ``nanoedge check``: shows whether the QDQ MatMul/Conv really run as INT8 (``u8``/``i8``)
    and the float ops in BF16 or FP32 on this CPU.
    """
    counts: dict[str, int] = {}
    for op in session._compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "runtimePrecision" in info:
            value = info["runtimePrecision"]
            precision = value.astype(str) if hasattr(value, "astype") else str(value)
            counts[precision] = counts.get(precision, 0) + 1
    return counts

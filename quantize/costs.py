"""The measured cost of one FP32 call per component, for :mod:`.plan`, cached per package.

One image is generated with two denoising steps at the size asked; a pipeline observer takes
the time between consecutive model calls (the observer runs right after each call), so the
measurement is the real runtime path with the real inputs. The UNet figure is the fastest of
its calls (the first one also pays onnxruntime's first-run allocations); the text encoder and
the VAE decoder, called once per image, are run once more on the inputs they saw and timed
alone (BK-SDM-Tiny's first decode at 256x256 took 14.3 s on a loaded machine, a decode in the
report 2.9 s).

The figures are cached in the cache folder by package content, size and thread count, so a
second run plans the same way (and finds its FP32 references) whatever the machine's load is
at that moment. Delete ``<cache>/quantize/<package>/costs.json`` to measure again.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from nanoedge.core.atomic import write_bytes_atomic

from .plan import CallCosts

log = logging.getLogger(__name__)

PROBE_STEPS = 2
PROBE_PROMPT = "a photo of a red house by a lake"


class _Timer:
    def __init__(self) -> None:
        self.mark = time.perf_counter()
        self.calls: list[tuple[str, float]] = []
        self.inputs: dict[str, dict] = {}

    def __call__(self, component: str, inputs: dict, output) -> None:
        now = time.perf_counter()
        self.calls.append((component, now - self.mark))
        self.inputs[component] = inputs
        self.mark = now


def _time_again(pipe, component: str, inputs: dict | None) -> float | None:
    if inputs is None:
        return None
    started = time.perf_counter()
    pipe.sessions[component].run(None, inputs)
    return time.perf_counter() - started


def measure_call_costs(pipe, size: str, guidance: float, scheduler: str | None) -> CallCosts:
    """Generate one image at ``size`` with ``pipe`` (FP32) and time each model call."""
    timer = _Timer()
    pipe.clear_caches()
    pipe.observers.append(timer)
    try:
        timer.mark = time.perf_counter()
        pipe.generate(PROBE_PROMPT, size=size, steps=PROBE_STEPS, guidance=guidance, seed=0, scheduler=scheduler)
    finally:
        pipe.observers.remove(timer)
        pipe.clear_caches()
    by_component: dict[str, list[float]] = {}
    for component, seconds in timer.calls:
        by_component.setdefault(component, []).append(seconds)
    unet = by_component.get("unet") or [0.0]
    again = {name: _time_again(pipe, name, timer.inputs.get(name)) for name in ("text_encoder", "vae_decoder")}
    return CallCosts(
        size=size,
        unet_s=min(unet),
        vae_s=again["vae_decoder"] or sum(by_component.get("vae_decoder", [0.0])),
        # the prompt and the negative prompt: as many calls as the probe made
        text_s=(again["text_encoder"] or 0.0) * len(by_component.get("text_encoder", [])) or sum(by_component.get("text_encoder", [0.0])),
        extra_unet_calls=max(0, len(unet) - PROBE_STEPS),
    )


class CostCache:
    """``costs.json`` in one package's cache folder: {threads: {size: CallCosts}}."""

    def __init__(self, folder: Path, threads: int | None) -> None:
        self.file = Path(folder) / "costs.json"
        self.key = f"threads={threads or 'default'}"

    def _read(self) -> dict:
        try:
            return json.loads(self.file.read_text())
        except (OSError, ValueError):
            return {}

    def get(self, size: str) -> CallCosts | None:
        entry = self._read().get(self.key, {}).get(size)
        try:
            return CallCosts(**entry) if entry else None
        except TypeError:  # written by another version: measure again
            return None

    def put(self, costs: CallCosts) -> None:
        data = self._read()
        data.setdefault(self.key, {})[costs.size] = costs.__dict__
        write_bytes_atomic(self.file, json.dumps(data, indent=2).encode())
        log.debug("cached FP32 call costs at %s in %s", costs.size, self.file)

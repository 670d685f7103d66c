"""Calibration data from real trajectories: run the FP32 package, record what each model sees.

No random tensors: the runtime generates images for calibration prompts and a pipeline
observer records every model call (text encoder ``input_ids``; UNet ``sample``, ``timestep``
and ``encoder_hidden_states`` at every denoising step, CFG halves included; VAE
``latent_sample``). Each call is written straight to disk as .npy files, so memory holds one
call at a time whatever the image size, prompt count or step count.

Two splits: ``calibration`` (ranges and sensitivity) and ``evaluation`` (held-out prompts;
their FP32 outputs and final images are kept too, for the accuracy report).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

log = logging.getLogger(__name__)

CALIBRATION = "calibration"
EVALUATION = "evaluation"
OUTPUT_FILE = "__output__.npy"


@dataclass(frozen=True)
class CalibrationSettings:
    """How trajectories are generated; the same settings drive the end-to-end comparison."""

    size: str
    steps: int
    guidance: float
    scheduler: str | None
    seed: int
    negative_prompt: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


class TrajectoryStore:
    """On-disk model calls: ``root/<split>/<component>/<index>/<input>.npy`` (+ output, images)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._counts: dict[tuple[str, str], int] = {}

    def add(self, split: str, component: str, inputs: dict[str, np.ndarray], output: np.ndarray | None) -> Path:
        key = (split, component)
        index = self._counts.get(key, 0)
        folder = self.root / split / component / f"{index:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, value in inputs.items():
            np.save(folder / f"{name}.npy", np.ascontiguousarray(value))
        if output is not None:
            np.save(folder / OUTPUT_FILE, np.ascontiguousarray(output))
        self._counts[key] = index + 1
        return folder

    def calls(self, split: str, component: str) -> list[Path]:
        folder = self.root / split / component
        return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    @staticmethod
    def inputs(call: Path) -> dict[str, np.ndarray]:
        return {p.stem: np.load(p) for p in sorted(call.glob("*.npy")) if p.name != OUTPUT_FILE}

    @staticmethod
    def output(call: Path) -> np.ndarray:
        return np.load(call / OUTPUT_FILE)

    def iter_inputs(self, split: str, component: str, calls: Sequence[Path] | None = None) -> Iterator[dict[str, np.ndarray]]:
        for call in calls if calls is not None else self.calls(split, component):
            yield self.inputs(call)

    def add_image(self, split: str, image: np.ndarray) -> None:
        folder = self.root / split / "images"
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"{len(list(folder.glob('*.npy'))):06d}.npy", image)

    def images(self, split: str) -> list[np.ndarray]:
        folder = self.root / split / "images"
        return [np.load(p) for p in sorted(folder.glob("*.npy"))] if folder.is_dir() else []

    def write_meta(self, meta: dict) -> None:
        (self.root / "meta.json").write_text(json.dumps(meta, indent=2))


class _Recorder:
    """Pipeline observer that streams each call of the watched components into the store."""

    def __init__(self, store: TrajectoryStore, split: str, keep_outputs: bool) -> None:
        self.store = store
        self.split = split
        self.keep_outputs = keep_outputs

    def __call__(self, component: str, inputs: dict, output: np.ndarray) -> None:
        self.store.add(self.split, component, inputs, output if self.keep_outputs else None)


def spread(items: Sequence, count: int) -> list:
    """Up to ``count`` items evenly spread over ``items`` (early, middle and late steps alike)."""
    if count <= 0 or not items:
        return []
    if len(items) <= count:
        return list(items)
    picks = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[i] for i in dict.fromkeys(picks.tolist())]


def record_trajectories(
    pipe,
    prompts: Sequence[str],
    store: TrajectoryStore,
    split: str,
    settings: CalibrationSettings,
    keep_outputs: bool = False,
    keep_images: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Generate one image per prompt (seed ``settings.seed + i``) and record every model call.

    The pipeline's prompt-embedding cache is cleared before each prompt so the text encoder
    is seen for the negative prompt as well, as a user's first request would run it.
    """
    recorder = _Recorder(store, split, keep_outputs)
    total = len(prompts) * settings.steps
    pipe.observers.append(recorder)
    try:
        for index, prompt in enumerate(prompts):
            pipe.clear_caches()

            def step(done: int, _total: int, base: int = index * settings.steps) -> None:
                if progress is not None:
                    progress(base + done, total)

            images = pipe.generate(
                prompt, negative_prompt=settings.negative_prompt, size=settings.size, steps=settings.steps,
                guidance=settings.guidance, seed=settings.seed + index, scheduler=settings.scheduler, progress=step,
            )
            if keep_images:
                store.add_image(split, np.asarray(images[0].convert("RGB"), dtype=np.uint8))
            log.debug("recorded %s prompt %d/%d: %.50s", split, index + 1, len(prompts), prompt)
    finally:
        pipe.observers.remove(recorder)
        pipe.clear_caches()

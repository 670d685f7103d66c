"""The three onnxruntime sessions of one package (:class:`SessionSet`), resident or per stage.

Each session is made by :func:`nanoedge.targets.session.create_session`, which knows the
target's providers and options; this module only decides when each one is loaded and freed.

Why a class: memory on an edge box is mostly (weights of every model) + (activations of the
largest stage). A resident pipeline (the default, and what a server wants) keeps all three
models loaded and, at the end of each stage, gives the stage's unused arena memory back to
the system, so the UNet's activation buffers do not sit under the VAE decoder's. A
``reduce_memory`` pipeline loads each model right before its stage and drops it after, so the
peak is the largest single stage (the VAE decoder's activations at 512 px and up).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Mapping
from typing import Any

from nanoedge.core.manifest import COMPONENTS, Manifest
from nanoedge.targets import create_session
from nanoedge.targets.profiles import TargetProfile

#: onnxruntime run option that frees arena chunks the run no longer uses (CPU arena only).
_SHRINK_CPU_ARENA = ("memory.enable_memory_arena_shrinkage", "cpu:0")


class SessionSet(Mapping):
    """``name -> onnxruntime.InferenceSession``, created on first use unless resident."""

    def __init__(self, manifest: Manifest, profile: TargetProfile, threads: int | None, resident: bool = True) -> None:
        self._manifest = manifest
        self._profile = profile
        self._threads = threads
        self.resident = resident
        self._loaded: dict[str, Any] = {}
        self._shrink_options = None
        if resident:  # load everything now: a broken file fails at load time, not mid-request
            for name in COMPONENTS:
                self[name]

    def __getitem__(self, name: str):
        if name not in COMPONENTS:
            raise KeyError(name)
        if name not in self._loaded:
            self._loaded[name] = create_session(self._manifest.component_path(name), self._profile, self._threads)
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(name for name in COMPONENTS if name in self._loaded)

    def __len__(self) -> int:
        return len(self._loaded)

    def end_of_stage_options(self):
        """RunOptions for a stage's last call: return its freed arena memory to the system.

        Only CPU-first profiles: there the arena holds the activations. ``None`` elsewhere.
        """
        if list(self._profile.providers[:1]) != ["CPUExecutionProvider"]:
            return None
        if self._shrink_options is None:
            import onnxruntime as ort

            options = ort.RunOptions()
            options.add_run_config_entry(*_SHRINK_CPU_ARENA)
            self._shrink_options = options
        return self._shrink_options

    def end_stage(self, name: str) -> None:
        """A stage is over: drop its session if the pipeline is not resident."""
        if not self.resident and self._loaded.pop(name, None) is not None:
            gc.collect()

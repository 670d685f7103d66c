"""Stage-by-stage loading (``reduce_memory``) and the end-of-stage arena release."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
from conftest import run_cli

from nanoedge.core.manifest import COMPONENTS
from nanoedge.runtime import Pipeline
from nanoedge.runtime.session_set import SessionSet
from nanoedge.targets import get_profile


def _pixels(pipe: Pipeline, **kwargs) -> np.ndarray:
    return np.stack([np.asarray(image) for image in pipe.generate("a red circle", steps=3, seed=7, **kwargs)])


def test_reduce_memory_loads_per_stage_and_keeps_the_image(tiny_package):
    resident = Pipeline.load(tiny_package)
    lean = Pipeline.load(tiny_package, reduce_memory=True)
    assert list(resident.sessions) == list(COMPONENTS)
    assert len(lean.sessions) == 0, "nothing should be loaded before the first stage"

    seen: list[str] = []
    lean.observers.append(lambda component, feeds, result: seen.append(component))
    for kwargs in ({}, {"guidance": 1.0}, {"n": 2}):
        assert np.array_equal(_pixels(lean, **kwargs), _pixels(resident, **kwargs))
        assert len(lean.sessions) == 0, "every stage's model is released after it"
    assert set(seen) == set(COMPONENTS)
    assert list(resident.sessions) == list(COMPONENTS)


def test_end_of_stage_release_is_cpu_only(tiny_package):
    from nanoedge.core.manifest import Manifest

    manifest = Manifest.load(tiny_package)
    cpu = SessionSet(manifest, get_profile("cpu"), threads=1, resident=False)
    options = cpu.end_of_stage_options()
    assert options is not None and options.get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0"
    npu = dataclasses.replace(get_profile("cpu"), providers=("QNNExecutionProvider", "CPUExecutionProvider"))
    assert SessionSet(manifest, npu, threads=1, resident=False).end_of_stage_options() is None


def test_cli_generate_reduces_memory_by_default(tiny_package, tmp_path):
    for flag, expected in (([], True), (["--resident"], False)):
        out = tmp_path / f"img{expected}.png"
        result = run_cli("generate", "a cat", "-m", str(tiny_package), "--steps", "2", "--seed", "1", "-o", str(out), "--json", *flag)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["reduce_memory"] is expected
    from PIL import Image

    first, second = (np.asarray(Image.open(tmp_path / f"img{v}.png")) for v in (True, False))
    assert np.array_equal(first, second)

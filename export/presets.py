"""Built-in presets: real architectures (random weights) by name, for tests and benchmarks.

Each preset is a JSON file in ``presets/`` holding diffusers/transformers configs copied from
the published models, so ``preset:bk-sdm-tiny`` has exactly BK-SDM-Tiny's shapes and operator
mix without needing the hub. Weights are drawn from a fixed seed, so a preset exports the same
model every time.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from nanoedge.core.errors import InvalidRequestError


def preset_names() -> list[str]:
    folder = resources.files("nanoedge.export") / "presets"
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def load_preset(name: str) -> dict[str, Any]:
    names = preset_names()
    if name not in names:
        raise InvalidRequestError(f"unknown preset '{name}'", hint=f"known presets: {', '.join('preset:' + n for n in names)}")
    text = (resources.files("nanoedge.export") / "presets" / f"{name}.json").read_text(encoding="utf-8")
    return json.loads(text)


def clip_vocab_files() -> tuple[str, str]:
    """Paths of the CLIP BPE vocab.json and merges.txt shipped with the exporter."""
    folder = resources.files("nanoedge.export") / "assets"
    return str(folder / "vocab.json"), str(folder / "merges.txt")

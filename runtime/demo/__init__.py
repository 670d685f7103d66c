"""The demo world that nanoedge's built-in model was trained on, and a judge for it.
May import numpy, Pillow and nanoedge.core; never torch (the lean runtime evaluates with it).

Scenes are one flat shape on a flat background, described by captions. The same module
renders training images (``world``), parses prompts back into attributes and scores
generated images against them (``judge``), and runs the fixed evaluation (``evaluate``).
Everything here is numpy + Pillow so the lean runtime can evaluate a package without torch.
"""

from .judge import Judgement, judge_image
from .world import (
    COLOURS,
    HELD_OUT,
    POSITIONS,
    SHAPES,
    Scene,
    caption_for,
    is_held_out,
    parse_prompt,
    render_scene,
    sample_scene,
    sample_scenes,
)

__all__ = [
    "COLOURS",
    "HELD_OUT",
    "POSITIONS",
    "SHAPES",
    "Judgement",
    "Scene",
    "caption_for",
    "is_held_out",
    "judge_image",
    "parse_prompt",
    "render_scene",
    "sample_scene",
    "sample_scenes",
]

"""The judge: right on ground-truth renders, wrong on wrong prompts, blind to nothing drawn."""

from __future__ import annotations

import numpy as np
from PIL import Image

from nanoedge.runtime.demo.judge import judge_image
from nanoedge.runtime.demo.world import COLOURS, POSITIONS, SHAPES, canonical_caption, caption_for, render_scene, sample_scenes

SCENES = list(sample_scenes(11, 600, allow_held_out=True))


def _accuracy(prompts_for) -> dict[str, float]:
    marks: dict[str, list[bool]] = {}
    for scene in SCENES:
        judgement = judge_image(render_scene(scene), prompts_for(scene))
        for attribute, ok in judgement.correct.items():
            marks.setdefault(attribute, []).append(ok)
    return {k: float(np.mean(v)) for k, v in marks.items()}


def test_ground_truth_scenes_score_full_marks_with_varied_captions():
    rng = np.random.default_rng(0)
    accuracy = _accuracy(lambda s: caption_for(s, rng))
    assert set(accuracy) == {"colour", "shape", "position"}
    assert min(accuracy.values()) >= 0.99, accuracy


def test_wrong_prompts_score_near_zero():
    def other(options, value, scene):
        options = [o for o in options if o != value]
        return options[(scene.cx + scene.cy) % len(options)]

    accuracy = _accuracy(
        lambda s: canonical_caption(
            other(list(COLOURS), s.colour, s), other(list(SHAPES), s.shape, s), other(list(POSITIONS), s.position, s)
        )
    )
    assert max(accuracy.values()) <= 0.01, accuracy


def test_an_empty_image_gets_nothing_right():
    blank = Image.new("RGB", (64, 64), (128, 128, 128))
    judgement = judge_image(blank, "a red circle on the left")
    assert judgement.found == {"colour": None, "shape": None, "position": None}
    assert judgement.correct == {"colour": False, "shape": False, "position": False}


def test_served_sizes_are_judged_like_the_native_image():
    for scene in SCENES[:30]:
        native = render_scene(scene)
        big = native.resize((512, 512), Image.Resampling.BICUBIC)
        prompt = canonical_caption(scene.colour, scene.shape, scene.position)
        assert judge_image(big, prompt).found == judge_image(native, prompt).found


def test_prompt_attributes_it_does_not_name_are_not_scored():
    scene = SCENES[0]
    judgement = judge_image(render_scene(scene), f"a {scene.shape}")
    assert set(judgement.correct) == {"shape"}

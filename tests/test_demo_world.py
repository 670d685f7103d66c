"""The demo world: seeded, reproducible, and held-out combinations never reach training."""

from __future__ import annotations

import numpy as np
import pytest

from nanoedge.runtime.demo.world import (
    COLOURS,
    HELD_OUT,
    POSITIONS,
    SHAPES,
    caption_for,
    evaluation_prompts,
    is_held_out,
    parse_prompt,
    render_scene,
    sample_scene,
    sample_scenes,
)


def test_same_seed_same_scenes_and_pixels():
    first = list(sample_scenes(7, 40))
    second = list(sample_scenes(7, 40))
    assert first == second
    assert all(np.array_equal(np.asarray(render_scene(a)), np.asarray(render_scene(b))) for a, b in zip(first, second))
    assert list(sample_scenes(8, 40)) != first


def test_training_draws_never_hold_a_held_out_combination():
    rng = np.random.default_rng(3)
    seen = set()
    for scene in sample_scenes(0, 6000):
        assert not is_held_out(scene.colour, scene.shape, scene.position)
        seen.add((scene.colour, scene.shape, scene.position))
        parsed = parse_prompt(caption_for(scene, rng))
        assert (parsed["colour"], parsed["shape"], parsed["position"]) == (scene.colour, scene.shape, scene.position)
    # every other combination does occur, so held-out ones are the only gaps
    assert len(seen) == len(COLOURS) * len(SHAPES) * len(POSITIONS) - len(HELD_OUT)


def test_trainer_dataset_has_no_held_out_scene():
    pytest.importorskip("torch")
    from nanoedge.export.training.data import render_scene_set

    data = render_scene_set(0, 3000)
    assert not any(is_held_out(s.colour, s.shape, s.position) for s in data.scenes)
    assert tuple(data.images.shape) == (3000, 3, 64, 64)


def test_pinning_a_held_out_combination_is_refused():
    colour, shape, position = HELD_OUT[0]
    with pytest.raises(ValueError, match="held-out"):
        sample_scene(np.random.default_rng(0), colour=colour, shape=shape, position=position)
    scene = sample_scene(np.random.default_rng(0), allow_held_out=True, colour=colour, shape=shape, position=position)
    assert (scene.colour, scene.shape, scene.position) == HELD_OUT[0]


def test_background_is_never_the_shape_colour():
    assert all(s.background != s.colour for s in sample_scenes(1, 2000, allow_held_out=True))


def test_prompt_parser_keeps_background_apart_from_shape_colour():
    assert parse_prompt("a small red circle on the left on a blue background") == {
        "colour": "red", "shape": "circle", "position": "left", "size": "small", "background": "blue",
    }
    assert parse_prompt("a violet wedge at the top on a grey background") == {
        "colour": "purple", "shape": "triangle", "position": "top", "size": None, "background": "gray",
    }


def test_evaluation_set_covers_every_held_out_combination_in_two_phrasings():
    prompts = evaluation_prompts()
    held = [p for p in prompts if p.held_out]
    assert {(p.colour, p.shape, p.position) for p in held} == set(HELD_OUT)
    assert len(held) == 2 * len(HELD_OUT)
    assert all(not is_held_out(p.colour, p.shape, p.position) for p in prompts if not p.held_out)


def test_tokenizer_knows_every_caption_word():
    pytest.importorskip("tokenizers")
    from nanoedge.export.training.tokenizer import UNK, build_tokenizer

    tok = build_tokenizer(24)
    unk = tok.token_to_id(UNK)
    rng = np.random.default_rng(0)
    for scene in sample_scenes(2, 500):
        encoding = tok.encode(caption_for(scene, rng))
        assert unk not in encoding.ids
        assert not encoding.overflowing

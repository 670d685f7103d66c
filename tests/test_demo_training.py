"""Trainer pieces that decide what the shipped model learned (CI never trains the model)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nanoedge.export.training.tokenizer import PAD, build_tokenizer, save_tokenizer  # noqa: E402
from nanoedge.runtime.demo.world import training_captions  # noqa: E402


def test_training_and_runtime_tokenize_prompts_identically(tmp_path):
    """The model is trained on the ``tokenizers`` ids; the runtime must feed the same ones."""
    from transformers import PreTrainedTokenizerFast

    from nanoedge.runtime.tokenizer import PromptTokenizer

    tok = build_tokenizer(24)
    save_tokenizer(tok, tmp_path, 24)
    runtime = PromptTokenizer(tmp_path / "tokenizer.json", 24, tok.token_to_id(PAD))
    loaded = PreTrainedTokenizerFast.from_pretrained(str(tmp_path))
    prompts = ["", "A Red circle, on the LEFT", *training_captions(4, 50)]
    trained = np.asarray([e.ids for e in tok.encode_batch(prompts)])
    assert np.array_equal(runtime(prompts), trained)
    assert loaded.model_max_length == 24 and loaded.pad_token_id == tok.token_to_id(PAD)
    assert loaded(prompts[1])["input_ids"] == [i for i in trained[1] if i != tok.token_to_id(PAD)]


def test_vae_crops_hold_the_shape():
    from nanoedge.export.training.data import render_scene_set
    from nanoedge.export.training.train import _object_crops

    data = render_scene_set(0, 200)
    crops = _object_crops(data, np.arange(200), 32, np.random.default_rng(0))
    assert tuple(crops.shape) == (200, 3, 32, 32)
    # every crop shows more than one colour: the shape is in it, not just background
    spread = (crops.amax(dim=(2, 3)) - crops.amin(dim=(2, 3))).amax(dim=1)
    assert bool((spread > 0.3).all())


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    from nanoedge.export.training.train import _lr_factor

    assert _lr_factor(0, 1000, 100) == pytest.approx(0.01)
    assert _lr_factor(99, 1000, 100) == pytest.approx(1.0)
    assert _lr_factor(1000, 1000, 100) == pytest.approx(0.1)

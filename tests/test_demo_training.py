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
    from nanoedge.export.training.data import _object_crops, render_scene_set

    data = render_scene_set(0, 200)
    crops = _object_crops(data, np.arange(200), 32, np.random.default_rng(0))
    assert tuple(crops.shape) == (200, 3, 32, 32)
    # every crop shows more than one colour: the shape is in it, not just background
    spread = (crops.amax(dim=(2, 3)) - crops.amin(dim=(2, 3))).amax(dim=1)
    assert bool((spread > 0.3).all())


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    from nanoedge.export.training.objective import _lr_factor

    assert _lr_factor(0, 1000, 100) == pytest.approx(0.01)
    assert _lr_factor(99, 1000, 100) == pytest.approx(1.0)
    assert _lr_factor(1000, 1000, 100) == pytest.approx(0.1)


def test_v_prediction_target_matches_diffusers_velocity():
    from diffusers import DDPMScheduler

    from nanoedge.export.training.configs import scheduler_config
    from nanoedge.export.training.objective import training_target

    schedule = DDPMScheduler.from_config(scheduler_config("v_prediction", True, "trailing"))
    g = torch.Generator().manual_seed(0)
    z0, noise = torch.randn(4, 4, 16, 16, generator=g), torch.randn(4, 4, 16, 16, generator=g)
    t = torch.tensor([0, 300, 800, 999])
    a = schedule.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    assert torch.allclose(training_target(z0, noise, a, "v_prediction"), schedule.get_velocity(z0, noise, t), atol=1e-6)
    assert torch.equal(training_target(z0, noise, a, "epsilon"), noise)
    # at the pure-noise step v is -z0: the model must draw the whole layout from the prompt
    assert torch.allclose(training_target(z0, noise, a, "v_prediction")[3], -z0[3], atol=1e-6)


def test_zero_terminal_snr_schedule_ends_in_pure_noise_and_the_runtime_samples_it_like_diffusers():
    from diffusers import DDIMScheduler as TorchDDIM

    from nanoedge.export.training.configs import SCHEDULER_CONFIG, scheduler_config
    from nanoedge.runtime.schedulers import make_scheduler

    config = scheduler_config("v_prediction", True, "trailing")
    assert SCHEDULER_CONFIG["prediction_type"] == "epsilon" and "rescale_betas_zero_snr" not in SCHEDULER_CONFIG
    reference = TorchDDIM.from_config(config)
    assert float(reference.alphas_cumprod[-1]) == pytest.approx(0.0, abs=1e-12)
    assert float(TorchDDIM.from_config(SCHEDULER_CONFIG).alphas_cumprod[-1]) > 0.004  # SD's schedule leaks the image
    ours = make_scheduler(None, config)
    reference.set_timesteps(20)
    ours.set_timesteps(20)
    assert list(ours.timesteps) == [int(t) for t in reference.timesteps] and int(ours.timesteps[0]) == 999
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 16, 16)).astype(np.float32)
    for t in ours.timesteps[:3]:
        out = rng.standard_normal(x.shape).astype(np.float32)
        expected = reference.step(torch.from_numpy(out), int(t), torch.from_numpy(x)).prev_sample.numpy()
        x_ours = ours.step(out, t, x)
        assert np.allclose(x_ours, expected, atol=1e-5)
        x = expected
    with pytest.raises(ValueError):
        scheduler_config("sample")


def test_loss_weights_cap_easy_steps_and_keep_the_pure_noise_step():
    from nanoedge.export.training.objective import loss_weights

    snr = torch.tensor([0.0, 0.5, 4.0, 100.0])
    v = loss_weights(snr, 5.0, "v_prediction")
    assert torch.allclose(v, torch.tensor([1.0, 1.0, 1.0, 5.0 / 101.0]))
    eps = loss_weights(snr[1:], 5.0, "epsilon")
    assert torch.allclose(eps, torch.tensor([1.0, 1.0, 0.05]))
    assert torch.equal(loss_weights(snr, 0.0, "v_prediction"), torch.ones(4))


def test_v_weighting_epsilon_weights_the_clean_image_error_as_the_epsilon_objective_does():
    """Squared v error = (snr + 1) x squared clean-image error, epsilon's = snr x it: so the
    two objectives weight the clean-image error alike (min(snr, gamma))."""
    from nanoedge.export.training.objective import loss_weights

    snr = torch.tensor([0.0, 0.5, 4.0, 100.0])
    v = loss_weights(snr, 5.0, "v_prediction", "epsilon") * (snr + 1)
    eps = loss_weights(snr[1:], 5.0, "epsilon") * snr[1:]
    assert v[0] == 0 and torch.allclose(v[1:], eps)
    with pytest.raises(ValueError, match="v_weighting"):
        loss_weights(snr, 5.0, "v_prediction", "bogus")


def test_training_command_line_sets_boolean_and_schedule_options():
    from nanoedge.export.training.__main__ import parse_args
    from nanoedge.export.training.recipe import TrainConfig

    _, default = parse_args(["-o", "x"])
    assert default == TrainConfig()
    _, on = parse_args(["-o", "x", "--zero-terminal-snr", "--prediction-type", "v_prediction", "--unet-steps", "7"])
    assert on.zero_terminal_snr is True and on.prediction_type == "v_prediction" and on.unet_steps == 7
    _, off = parse_args(["-o", "x", "--no-zero-terminal-snr"])
    assert off.zero_terminal_snr is False


def test_timestep_power_one_is_the_uniform_draw_and_above_one_favours_noise():
    from nanoedge.export.training.objective import sample_timesteps

    uniform = sample_timesteps(64, 1000, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(uniform, torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(3)))
    biased = sample_timesteps(20000, 1000, 2.0, torch.Generator().manual_seed(3))
    assert biased.min() >= 0 and biased.max() <= 999
    # t >= T/2 when (1 - u)^2 <= 1/2: a share of 1 - 1/sqrt(2) = 0.707 of the draws (0.5 uniform)
    assert abs(float((biased >= 500).float().mean()) - 0.707) < 0.02


def test_global_prompt_path_reaches_the_unet_output_and_keeps_three_inputs():
    from diffusers import UNet2DConditionModel

    from nanoedge.export.training.configs import UNET_CONFIG, unet_config

    assert unet_config() == UNET_CONFIG
    config = unet_config(global_text=True, scale_shift=True)
    assert config["addition_embed_type"] == "text" and config["resnet_time_scale_shift"] == "scale_shift"
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**config).eval()
    x = torch.randn(1, 4, 16, 16)
    states = torch.randn(2, 24, UNET_CONFIG["cross_attention_dim"])
    with torch.no_grad():
        a = unet(x, 999, states[:1]).sample
        b = unet(x, 999, states[1:]).sample
        pooled = unet.add_embedding(states)
    assert (a - b).abs().max() > 1e-3
    # the prompt enters the time embedding every ResNet block gets (one vector per prompt)
    assert pooled.shape == (2, 4 * UNET_CONFIG["block_out_channels"][0]) and (pooled[0] - pooled[1]).abs().max() > 1e-2
    assert getattr(UNet2DConditionModel(**UNET_CONFIG), "add_embedding", None) is None


def test_training_command_line_sets_the_global_prompt_path():
    from nanoedge.export.training.__main__ import parse_args

    _, cfg = parse_args(["-o", "x", "--unet-global-text", "--unet-scale-shift", "--timestep-power", "2"])
    assert cfg.unet_global_text and cfg.unet_scale_shift and cfg.timestep_power == 2.0


def test_training_command_line_sets_coordinate_planes_on_by_default_as_shipped():
    from nanoedge.export.training.__main__ import parse_args
    from nanoedge.export.training.configs import unet_config

    assert parse_args(["-o", "x"])[1].unet_coordinates
    assert not parse_args(["-o", "x", "--no-unet-coordinates"])[1].unet_coordinates
    assert unet_config(coordinates=True)["in_channels"] == unet_config()["out_channels"] + 2


def test_position_response_measures_what_the_prompt_moves_in_the_shipped_model():
    """The diagnostic behind docs/demo-model.md's position figures runs on the shipped checkpoint."""
    from pathlib import Path

    position_response = _diagnose_demo().position_response

    checkpoint = Path(__file__).resolve().parents[1] / "models" / "demo-checkpoint"
    (row,) = position_response(checkpoint, noises=8, timesteps=(951,))
    assert set(row) == {"timestep", "position_spread", "colour_spread", "position_right"}
    # the shipped model reads the colour word (docs: colour 100% held-out): its estimate moves by tenths
    assert row["colour_spread"] > 0.05
    assert 0.0 <= row["position_right"] <= 1.0 and row["position_spread"] >= 0.0


def test_init_from_continues_a_checkpoint_and_records_the_whole_chain(tmp_path):
    """A second stage starts from the earlier weights (not fresh ones) and counts its time."""
    import dataclasses
    import json
    from pathlib import Path

    from diffusers import UNet2DConditionModel

    from nanoedge.export.training.recipe import TrainConfig
    from nanoedge.export.training.train import train_demo

    shipped = Path(__file__).resolve().parents[1] / "models" / "demo-checkpoint"
    earlier = json.loads((shipped / "training.json").read_text())
    recipe = TrainConfig.from_record(earlier["recipe"])
    # a learning rate of ~0: two steps must leave the continued weights where they were
    cfg = dataclasses.replace(recipe, scenes=64, unet_steps=2, unet_batch=2, unet_lr=1e-12, threads=1, later_phases="")
    out = train_demo(tmp_path / "continued", cfg, report=lambda *_: None, previews=False, init_from=shipped)
    before = UNet2DConditionModel.from_pretrained(shipped / "unet").state_dict()
    after = UNet2DConditionModel.from_pretrained(out / "unet").state_dict()
    assert max(float((before[k] - after[k]).abs().max()) for k in before) < 1e-6
    record = json.loads((out / "training.json").read_text())
    assert record["continued_from"]["recipe"] == earlier["recipe"] and recipe.unet_steps == earlier["recipe"]["unet_steps"]
    assert record["seconds"]["total"] > earlier["seconds"]["total"]


def test_init_from_refuses_a_checkpoint_the_flags_do_not_describe(tmp_path):
    import dataclasses
    import json
    from pathlib import Path

    from nanoedge.export.training.checkpoint import load_for_fine_tuning
    from nanoedge.export.training.recipe import TrainConfig
    from nanoedge.export.training.tokenizer import build_tokenizer

    shipped = Path(__file__).resolve().parents[1] / "models" / "demo-checkpoint"
    recipe = TrainConfig.from_record(json.loads((shipped / "training.json").read_text())["recipe"])
    tokenizer = build_tokenizer(24)
    load_for_fine_tuning(shipped, recipe, tokenizer)  # the flags it was trained with: accepted
    with pytest.raises(ValueError, match="in_channels"):
        load_for_fine_tuning(shipped, dataclasses.replace(recipe, unet_coordinates=not recipe.unet_coordinates), tokenizer)
    other = ("epsilon", False) if recipe.prediction_type == "v_prediction" else ("v_prediction", True)
    with pytest.raises(ValueError, match="prediction_type"):
        load_for_fine_tuning(shipped, dataclasses.replace(recipe, prediction_type=other[0], zero_terminal_snr=other[1]), tokenizer)
    with pytest.raises(FileNotFoundError, match="not a demo checkpoint"):
        load_for_fine_tuning(tmp_path, recipe, tokenizer)


def test_later_phases_in_one_run_equal_a_chain_of_init_from_runs(tmp_path):
    """The shipped recipe's phases are one command; it must train what the chain of
    ``--init-from`` runs the phases were found with trained (same weights)."""
    import dataclasses
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    from nanoedge.export.training.recipe import TrainConfig
    from nanoedge.export.training.train import train_demo

    shipped = Path(__file__).resolve().parents[1] / "models" / "demo-checkpoint"
    base = dataclasses.replace(
        TrainConfig.from_record(json.loads((shipped / "training.json").read_text())["recipe"]),
        scenes=64, unet_batch=2, unet_steps=2, unet_lr=1e-3, warmup_steps=1, threads=1, later_phases="",
    )
    quiet = {"report": lambda *_: None, "previews": False}
    one_run = train_demo(tmp_path / "one", dataclasses.replace(base, later_phases="2:5e-4:1:epsilon"), vae_from=shipped, **quiet)
    first = train_demo(tmp_path / "first", base, vae_from=shipped, **quiet)
    second = train_demo(
        tmp_path / "second", dataclasses.replace(base, unet_lr=5e-4, timestep_power=1.0, v_weighting="epsilon"), init_from=first, **quiet
    )
    straight = train_demo(tmp_path / "straight", dataclasses.replace(base, unet_steps=4), vae_from=shipped, **quiet)
    weights = {name: load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors")) for name, folder in
               {"one": one_run, "chain": second, "straight": straight}.items()}
    gap = lambda a, b: max(float((weights[a][k] - weights[b][k]).abs().max()) for k in weights[a])  # noqa: E731
    assert gap("one", "chain") < 1e-6
    assert gap("one", "straight") > 1e-4  # the phase boundary changes the result: the check can fail
    assert json.loads((one_run / "training.json").read_text())["recipe"]["later_phases"] == "2:5e-4:1:epsilon"


def test_later_phases_parse_and_refuse_malformed_items():
    from nanoedge.export.training.recipe import Phase, TrainConfig, training_phases

    phases = training_phases(
        TrainConfig(
            unet_steps=7, unet_lr=1e-3, timestep_power=2.0, v_weighting="keep-noise", later_phases="3:3e-4:1:keep-noise, 5:3e-4:1:epsilon"
        )
    )
    assert phases == [Phase(7, 1e-3, 2.0, "keep-noise"), Phase(3, 3e-4, 1.0, "keep-noise"), Phase(5, 3e-4, 1.0, "epsilon")]
    for bad in ("3:3e-4:1", "x:1e-3:1:epsilon", "3:3e-4:1:bogus", "0:3e-4:1:epsilon"):
        with pytest.raises(ValueError, match="later phase"):
            training_phases(TrainConfig(later_phases=bad))


def test_attribute_dropout_leaves_words_out_and_changes_nothing_when_off():
    from nanoedge.export.training.data import draw_captions
    from nanoedge.runtime.demo.world import caption_for, parse_prompt, sample_scenes

    scenes = list(sample_scenes(3, 400))
    index = np.arange(len(scenes))
    # off: the same captions (and random draws) as the plain loop the shipped recipes used
    plain_rng = np.random.default_rng(9)
    plain = ["" if plain_rng.random() < 0.1 else caption_for(scenes[i], plain_rng) for i in index]
    rng = np.random.default_rng(9)
    assert draw_captions(scenes, index, rng, 0.1) == plain and rng.random() == plain_rng.random()
    # on: each attribute missing in about a third of the captions, never all three
    captions = draw_captions(scenes, index, np.random.default_rng(9), 0.0, attribute_drop=1 / 3)
    parsed = [parse_prompt(c) for c in captions]
    missing = {a: np.mean([p[a] is None for p in parsed]) for a in ("colour", "shape", "position")}
    assert all(0.2 < m < 0.45 for m in missing.values()), missing
    assert not any(all(p[a] is None for a in missing) for p in parsed)
    for scene, p in zip(scenes, parsed):  # what is left is right
        assert p["colour"] in (None, scene.colour) and p["shape"] in (None, scene.shape) and p["position"] in (None, scene.position)


def test_word_separation_measures_the_shipped_text_encoder():
    """The diagnostic behind docs/demo-model.md's shape finding runs on the shipped checkpoint."""
    from pathlib import Path

    word_separation = _diagnose_demo().word_separation

    checkpoint = Path(__file__).resolve().parents[1] / "models" / "demo-checkpoint"
    result = word_separation(checkpoint)
    assert set(result) == {"shape circle-square", "shape circle-triangle", "shape square-triangle", "colour pairs (mean)"}
    assert all(v > 0 for v in result.values())
    # the shipped model draws the asked colour (held-out colour >= 90%): its encoder keeps colours apart
    assert result["colour pairs (mean)"] > 5


def test_default_recipe_is_the_one_the_shipped_checkpoint_was_trained_with():
    """``python -m nanoedge.export.training -o DIR`` (no flags) must retrain the shipped model:
    its phases are those of the checkpoint's recorded runs (a chain of --init-from runs, or
    one run with --later-phases), and every other knob is the same."""
    import dataclasses
    import json
    from pathlib import Path

    from nanoedge.export.training.recipe import TrainConfig, training_phases

    shipped = Path(__file__).resolve().parents[1] / "models" / "demo-checkpoint"
    record = json.loads((shipped / "training.json").read_text())
    chain = []
    while record is not None:
        chain.insert(0, TrainConfig.from_record(record["recipe"]))
        record = record.get("continued_from")
    recorded = [phase for stage in chain for phase in training_phases(stage)]
    assert recorded == training_phases(TrainConfig())
    per_phase = {"unet_steps", "unet_lr", "timestep_power", "v_weighting", "attribute_dropout", "later_phases"}
    # knobs that do not change the weights: previews and threads
    ignored = per_phase | {"preview_every", "preview_steps", "preview_guidance", "threads"}
    for stage in chain:
        for f in dataclasses.fields(TrainConfig):
            if f.name not in ignored:
                assert getattr(stage, f.name) == getattr(TrainConfig(), f.name), f.name


def test_a_recorded_recipe_without_later_fields_means_what_the_trainer_then_did():
    from nanoedge.export.training.recipe import TrainConfig, training_phases

    old = {"unet_steps": 5, "unet_lr": 1e-3, "timestep_power": 2.0}  # written before phases existed
    (phase,) = training_phases(TrainConfig.from_record(old))
    assert (phase.steps, phase.v_weighting, phase.attribute_dropout) == (5, "keep-noise", 0.0)
    # today's defaults would add the shipped recipe's later phases
    assert len(training_phases(TrainConfig(**old))) == len(training_phases(TrainConfig())) > 1


def _diagnose_demo():
    """bench/diagnose_demo.py: research probes kept out of the installed package (a script)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "diagnose_demo.py"
    spec = importlib.util.spec_from_file_location("diagnose_demo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

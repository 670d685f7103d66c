"""Demo checkpoints on disk: building a fresh UNet, loading one to continue, writing one.

The folder is a diffusers pipeline (safetensors) that ``nanoedge export`` reads; loading
refuses a checkpoint the recipe could not continue.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nanoedge.export.coordinates import CONFIG_KEY as COORDINATES_KEY

from .configs import TEXT_MAX_LENGTH, unet_config
from .recipe import TrainConfig, _schedule
from .tokenizer import save_tokenizer


def build_unet(global_text: bool, scale_shift: bool, coordinates: bool):
    """A fresh UNet of the demo configs; a coordinate UNet records so in its config (for export)."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(**unet_config(global_text, scale_shift, coordinates))
    if coordinates:
        unet.register_to_config(**{COORDINATES_KEY: 2})
    return unet


def load_for_fine_tuning(folder: Path, cfg: TrainConfig, tokenizer) -> tuple[Any, Any]:
    """The text encoder and UNet of a demo checkpoint, to continue training from.

    Refuses a checkpoint the recipe ``cfg`` could not continue: another architecture, another
    prediction target or noise schedule, or another vocabulary would silently train a
    different model than the one the flags describe.
    """
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    folder = Path(folder)
    if not (folder / "unet" / "config.json").exists():
        raise FileNotFoundError(f"{folder} is not a demo checkpoint (no unet/config.json): pass a folder this trainer wrote")
    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    # the config build_unet would give (without building a UNet to read it)
    wanted = {
        **unet_config(cfg.unet_global_text, cfg.unet_scale_shift, cfg.unet_coordinates),
        COORDINATES_KEY: 2 if cfg.unet_coordinates else None,
    }
    different = [
        k
        for k in ("in_channels", "block_out_channels", "addition_embed_type", "resnet_time_scale_shift", COORDINATES_KEY)
        if unet.config.get(k) != wanted.get(k)
    ]
    if different:
        raise ValueError(
            f"{folder}'s UNet differs from the recipe's in {', '.join(different)}: pass the same architecture flags it was trained with"
        )
    saved = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    schedule = _schedule(cfg)
    for key in ("prediction_type", "rescale_betas_zero_snr", "beta_schedule"):
        if saved.get(key, False) != schedule.get(key, False):
            raise ValueError(
                f"{folder} was trained with {key}={saved.get(key, False)!r}, the recipe "
                f"asks {schedule.get(key, False)!r}: pass the same schedule flags"
            )
    saved_vocab = json.loads((folder / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"]
    if saved_vocab != tokenizer.get_vocab():
        raise ValueError(f"{folder}'s tokenizer has another vocabulary than this world's: it cannot be continued here")
    return CLIPTextModel.from_pretrained(folder / "text_encoder"), unet


def save_demo_checkpoint(folder: Path, text_encoder, unet, vae, tokenizer, extra: dict[str, Any], schedule: dict[str, Any]) -> Path:
    """Write a diffusers pipeline folder (safetensors) that ``nanoedge export`` reads."""
    folder.mkdir(parents=True, exist_ok=True)
    text_encoder.save_pretrained(folder / "text_encoder")
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    save_tokenizer(tokenizer, folder / "tokenizer", TEXT_MAX_LENGTH)
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(schedule, indent=2) + "\n")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "scheduler": ["diffusers", schedule["_class_name"]],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    (folder / "training.json").write_text(json.dumps(extra, indent=2) + "\n")
    return folder

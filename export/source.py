"""Loading what to export: a local diffusers folder, a hub id, or ``preset:NAME``.

All three produce the same :class:`SourceModel`: torch modules in eval mode, a fast CLIP
tokenizer, the scheduler config and provenance. Hub loading is the ordinary diffusers /
transformers ``from_pretrained`` path (it honours ``HF_HUB_OFFLINE`` and the local cache);
failures become an ExportError that says what to try.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nanoedge.runtime.errors import ExportError, InvalidRequestError, require

from .presets import clip_vocab_files, load_preset

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class SourceModel:
    model_id: str
    text_encoder: Any
    unet: Any
    vae: Any
    tokenizer: Any  # transformers CLIPTokenizerFast
    scheduler_config: dict[str, Any]
    defaults: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def unet_size_multiple(self) -> int:
        """Pixel multiple the UNet accepts without its upsample-size special case."""
        downsamplers = len(self.unet.config.down_block_types) - 1
        return self.vae_scale_factor * 2**downsamplers

    @property
    def native_size(self) -> int:
        return int(self.unet.config.sample_size) * self.vae_scale_factor


def load_source(source: str, seed: int = 0) -> SourceModel:
    """Load ``source`` (``preset:NAME``, a diffusers folder or a hub id) for export."""
    if source.startswith("preset:"):
        return _load_preset(source[len("preset:") :], seed)
    path = Path(source).expanduser()
    if path.exists():
        if not (path / "model_index.json").exists() and not (path / "unet").is_dir():
            raise InvalidRequestError(
                f"'{path}' is not a diffusers pipeline folder (no model_index.json or unet/)",
                hint="give the folder that diffusers' save_pretrained wrote, a hub id, or preset:NAME",
            )
        return _load_pretrained(str(path), model_id=path.resolve().name, origin={"kind": "folder", "path": str(path.resolve())})
    if _HUB_ID.match(source):
        return _load_pretrained(source, model_id=source.split("/")[-1], origin={"kind": "hub", "repo_id": source})
    raise InvalidRequestError(
        f"source '{source}' is not a folder, a hub id (owner/name) or a preset",
        hint="for example: nanoedge export preset:tiny-random -o my-package",
    )


def _quiet_libraries() -> None:
    """diffusers/transformers warn at import about things users cannot act on; -v shows them."""
    if not logging.getLogger("nanoedge").isEnabledFor(logging.DEBUG):
        os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _load_pretrained(location: str, model_id: str, origin: dict[str, Any]) -> SourceModel:
    _quiet_libraries()
    diffusers = require("diffusers", "export")
    transformers = require("transformers", "export")
    torch = require("torch", "export")
    log.info("loading %s", location)
    try:
        text_encoder = transformers.CLIPTextModel.from_pretrained(location, subfolder="text_encoder", torch_dtype=torch.float32)
        unet = diffusers.UNet2DConditionModel.from_pretrained(location, subfolder="unet", torch_dtype=torch.float32)
        vae = diffusers.AutoencoderKL.from_pretrained(location, subfolder="vae", torch_dtype=torch.float32)
        tokenizer = _load_tokenizer(transformers, location)
        scheduler_config = dict(diffusers.PNDMScheduler.load_config(location, subfolder="scheduler"))
    except OSError as exc:
        hint = (
            "check the folder has text_encoder/, unet/, vae/, tokenizer/ and scheduler/"
            if origin["kind"] == "folder"
            else "the hub could not be reached or the repo lacks these files; download it where there is network and pass the local folder"
        )
        raise ExportError(f"could not load '{location}': {str(exc).splitlines()[0]}", hint=hint) from exc
    scheduler_config = {k: v for k, v in scheduler_config.items() if not k.startswith("_") or k == "_class_name"}
    return SourceModel(
        model_id=model_id,
        text_encoder=text_encoder.eval(),
        unet=unet.eval(),
        vae=vae.eval(),
        tokenizer=tokenizer,
        scheduler_config=scheduler_config,
        defaults={"steps": 25, "guidance": 7.5},
        provenance={"source": origin},
    )


def _load_tokenizer(transformers, location: str):
    """CLIP's fast tokenizer, or a plain fast tokenizer when the folder says it is one.

    SD checkpoints ship a CLIP BPE tokenizer; small checkpoints trained here (the demo model)
    ship a word-level ``tokenizer.json`` whose ``tokenizer_config.json`` names
    ``PreTrainedTokenizerFast``, which CLIPTokenizerFast refuses to load.
    """
    config_file = None
    folder = Path(location) / "tokenizer"
    if folder.is_dir():
        config_file = folder / "tokenizer_config.json"
    if config_file is not None and config_file.is_file():
        tokenizer_class = json.loads(config_file.read_text()).get("tokenizer_class")
        if tokenizer_class == "PreTrainedTokenizerFast":
            return transformers.PreTrainedTokenizerFast.from_pretrained(location, subfolder="tokenizer")
    return transformers.CLIPTokenizerFast.from_pretrained(location, subfolder="tokenizer")


def _load_preset(name: str, seed: int) -> SourceModel:
    preset = load_preset(name)
    _quiet_libraries()
    diffusers = require("diffusers", "export")
    transformers = require("transformers", "export")
    torch = require("torch", "export")
    torch.manual_seed(seed)
    text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(**preset["text_encoder"]))
    unet = diffusers.UNet2DConditionModel.from_config(preset["unet"])
    vae = diffusers.AutoencoderKL.from_config(preset["vae"])
    vocab, merges = clip_vocab_files()
    tok = preset["tokenizer"]
    tokenizer = transformers.CLIPTokenizerFast(
        vocab_file=vocab, merges_file=merges, pad_token=tok["pad_token"], model_max_length=int(tok["max_length"])
    )
    return SourceModel(
        model_id=name,
        text_encoder=text_encoder.eval(),
        unet=unet.eval(),
        vae=vae.eval(),
        tokenizer=tokenizer,
        scheduler_config=dict(preset["scheduler"]),
        defaults=dict(preset["defaults"]),
        provenance={"source": {"kind": "preset", "name": name, "seed": seed, "architecture_of": preset.get("reference")}},
    )


def save_checkpoint(model: SourceModel, folder: "str | Path") -> Path:
    """Write ``model`` as a diffusers pipeline folder (e.g. to reuse a preset's random weights)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.text_encoder.save_pretrained(folder / "text_encoder")
    model.unet.save_pretrained(folder / "unet")
    model.vae.save_pretrained(folder / "vae")
    model.tokenizer.save_pretrained(folder / "tokenizer")
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(model.scheduler_config, indent=2))
    index = {
        "_class_name": "StableDiffusionPipeline",
        "scheduler": ["diffusers", model.scheduler_config.get("_class_name", "PNDMScheduler")],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder

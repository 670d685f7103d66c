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

from nanoedge.core.errors import ExportError, InvalidRequestError, require

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
    # A decoder exported in place of ``vae``'s (``--vae-decoder``), e.g. TAESD; None: the VAE's own.
    decoder: "DecoderSource | None" = None

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def decoder_vae(self) -> Any:
        """The module whose ``decode`` becomes the package's vae_decoder graph."""
        return self.decoder.vae if self.decoder is not None else self.vae

    def decoder_description(self) -> dict[str, Any]:
        """What the manifest records about the decoder: class, latent scaling, output range."""
        if self.decoder is not None:
            return self.decoder.description()
        config = self.vae.config
        return {
            "family": "kl",
            "class": type(self.vae).__name__,
            "scaling_factor": float(config.scaling_factor),
            "shift_factor": getattr(config, "shift_factor", None),
            "output_range": [-1.0, 1.0],
            "source": "the model's own VAE",
        }

    @property
    def unet_size_multiple(self) -> int:
        """Pixel multiple the UNet accepts without its upsample-size special case."""
        downsamplers = len(self.unet.config.down_block_types) - 1
        return self.vae_scale_factor * 2**downsamplers

    @property
    def native_size(self) -> int:
        return int(self.unet.config.sample_size) * self.vae_scale_factor


@dataclass
class DecoderSource:
    """A replacement VAE decoder (``nanoedge export ... --vae-decoder SOURCE``).

    ``scaling_factor``/``shift_factor`` say how the UNet's latents are turned into the decoder's
    input (``latents / scaling_factor + shift_factor``): AutoencoderTiny (TAESD) decodes the
    UNet's latents as they are (1.0 / 0.0), a KL VAE divides by e.g. 0.18215.
    """

    vae: Any
    family: str  # "taesd" (AutoencoderTiny) or "kl" (AutoencoderKL)
    provenance: dict[str, Any]

    def description(self) -> dict[str, Any]:
        config = self.vae.config
        shift = getattr(config, "shift_factor", None)
        return {
            "family": self.family,
            "class": type(self.vae).__name__,
            "scaling_factor": float(config.scaling_factor),
            "shift_factor": float(shift) if shift else None,
            # diffusers' AutoencoderTiny.decode maps its [0, 1] image to [-1, 1] like AutoencoderKL
            "output_range": [-1.0, 1.0],
            "source": self.provenance,
        }


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


_DECODER_CLASSES = {"AutoencoderTiny": "taesd", "AutoencoderKL": "kl"}


def load_decoder(source: str, seed: int = 0) -> DecoderSource:
    """Load a replacement VAE decoder: ``preset:taesd``, a diffusers folder, or a hub id.

    A folder may be the autoencoder's own (config.json naming AutoencoderTiny or AutoencoderKL)
    or a pipeline folder whose ``vae/`` holds one. Hub ids go through diffusers'
    ``from_pretrained`` (e.g. ``madebyollin/taesd``).
    """
    _quiet_libraries()
    diffusers = require("diffusers", "export")
    torch = require("torch", "export")
    if source.startswith("preset:"):
        name = source[len("preset:") :]
        preset = load_preset(name)
        if preset.get("kind") != "decoder":
            raise InvalidRequestError(f"preset:{name} is a whole model, not a decoder", hint="use --vae-decoder preset:taesd")
        cls_name = preset["vae"].get("_class_name", "AutoencoderTiny")
        torch.manual_seed(seed)
        vae = getattr(diffusers, cls_name).from_config(preset["vae"])
        origin = {"kind": "preset", "name": name, "seed": seed, "architecture_of": preset.get("reference")}
        return DecoderSource(vae.eval(), _DECODER_CLASSES[cls_name], origin)
    path = Path(source).expanduser()
    if path.exists():
        subfolder = None
        config_file = path / "config.json"
        if not config_file.is_file() and (path / "vae" / "config.json").is_file():
            subfolder, config_file = "vae", path / "vae" / "config.json"
        if not config_file.is_file():
            raise InvalidRequestError(
                f"'{path}' holds no autoencoder (no config.json, nor vae/config.json)",
                hint="give the folder AutoencoderTiny.save_pretrained wrote, a pipeline folder with vae/, a hub id, or preset:taesd",
            )
        cls_name = json.loads(config_file.read_text()).get("_class_name", "")
        origin = {"kind": "folder", "path": str(path.resolve()), **({"subfolder": subfolder} if subfolder else {})}
        location, kwargs = str(path), ({"subfolder": subfolder} if subfolder else {})
    elif _HUB_ID.match(source):
        location, kwargs, origin = source, {}, {"kind": "hub", "repo_id": source}
        try:
            cls_name = dict(diffusers.AutoencoderTiny.load_config(source)).get("_class_name", "")
        except OSError as exc:
            raise ExportError(
                f"could not load the decoder '{source}': {str(exc).splitlines()[0]}",
                hint="the hub could not be reached; download it where there is network and pass the local folder",
            ) from exc
    else:
        raise InvalidRequestError(
            f"decoder source '{source}' is not a folder, a hub id (owner/name) or a preset",
            hint="for example: --vae-decoder preset:taesd or --vae-decoder madebyollin/taesd",
        )
    if cls_name not in _DECODER_CLASSES:
        raise InvalidRequestError(
            f"'{source}' is a {cls_name or 'model of unknown class'}, not an AutoencoderTiny or AutoencoderKL",
            hint="--vae-decoder takes a TAESD-family AutoencoderTiny (or a KL VAE)",
        )
    log.info("loading decoder %s", location)
    try:
        vae = getattr(diffusers, cls_name).from_pretrained(location, torch_dtype=torch.float32, **kwargs)
    except OSError as exc:
        raise ExportError(f"could not load the decoder '{source}': {str(exc).splitlines()[0]}",
                          hint="check the folder (config.json + weights) or download the hub repo locally") from exc
    return DecoderSource(vae.eval(), _DECODER_CLASSES[cls_name], origin)


def check_decoder_fits(model: "SourceModel", decoder: DecoderSource) -> None:
    """The decoder must take the UNet's latents (channels) and upscale them by the VAE's factor."""
    config = decoder.vae.config
    channels = int(config.latent_channels)
    if channels != int(model.unet.config.out_channels):
        raise InvalidRequestError(
            f"the decoder takes {channels}-channel latents but this UNet makes {int(model.unet.config.out_channels)}",
            hint="use a decoder trained for this model family's latent space (TAESD for SD 1.x/2.x, TAESDXL for SDXL)",
        )
    if decoder.family == "taesd":
        factor = int(config.upsampling_scaling_factor) ** (len(config.decoder_block_out_channels) - 1)
    else:
        factor = 2 ** (len(config.block_out_channels) - 1)
    if factor != model.vae_scale_factor:
        raise InvalidRequestError(
            f"the decoder upscales latents {factor}x but this model's VAE does {model.vae_scale_factor}x",
            hint="use a decoder with the same spatial factor as the model's VAE",
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
    if preset.get("kind") == "decoder":
        raise InvalidRequestError(
            f"preset:{name} is a VAE decoder, not a whole model",
            hint=f"export a model and swap its decoder: nanoedge export preset:bk-sdm-tiny --vae-decoder preset:{name} -o OUT",
        )
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

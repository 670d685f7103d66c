"""What each exported ONNX graph looks like: wrappers, input/output names, axes, sample inputs.

Names follow optimum-onnx's Stable Diffusion export (``input_ids`` -> ``last_hidden_state``;
``sample``/``timestep``/``encoder_hidden_states`` -> ``out_sample``; ``latent_sample`` ->
``sample``) so the ecosystem's tools can open our packages. Two deliberate choices:
``input_ids`` is int32 (NPUs have no int64) and ``timestep`` is a float32 vector ``[batch]``,
one value per sample, so a server can batch requests that are at different denoising steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from .coordinates import run_unet


class TextEncoderGraph(torch.nn.Module):
    def __init__(self, text_encoder: torch.nn.Module) -> None:
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids: torch.Tensor):
        out = self.text_encoder(input_ids.to(torch.int64), return_dict=False)
        return out[0], out[1]


class UNetGraph(torch.nn.Module):
    """The UNet; a checkpoint that asks for coordinate planes gets them inside the graph."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor):
        return run_unet(self.unet, sample, timestep, encoder_hidden_states)


class VaeDecoderGraph(torch.nn.Module):
    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latent_sample: torch.Tensor):
        return self.vae.decode(latent_sample, return_dict=False)[0]


@dataclass
class ComponentSpec:
    """How to export and check one component."""

    name: str
    module: torch.nn.Module
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]
    make_inputs: Callable[[int, int, int], tuple[torch.Tensor, ...]]  # (batch, latent_h, latent_w)
    parameters: int
    config: dict[str, Any]


def _count(module: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def component_specs(model, seed: int = 0) -> list[ComponentSpec]:
    """Specs for text encoder, UNet and VAE decoder of a loaded SourceModel."""
    te_cfg = model.text_encoder.config
    seq = int(model.tokenizer.model_max_length)
    vocab = int(te_cfg.vocab_size)
    # out_channels: the latents; in_channels can be more (inpainting masks, coordinate planes).
    latent_channels = int(model.unet.config.out_channels)
    cross_dim = int(model.unet.config.cross_attention_dim)

    def generator() -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    def text_inputs(batch: int, _h: int, _w: int):
        ids = torch.randint(0, vocab - 2, (batch, seq), generator=generator(), dtype=torch.int64)
        ids[:, 0] = vocab - 2  # start of text
        ids[:, seq // 2 :] = vocab - 1  # end of text + padding, as real prompts look
        return (ids.to(torch.int32),)

    def unet_inputs(batch: int, h: int, w: int):
        g = generator()
        sample = torch.randn(batch, latent_channels, h, w, generator=g)
        timestep = torch.linspace(981.0, 1.0, batch) if batch > 1 else torch.tensor([501.0])
        states = torch.randn(batch, seq, cross_dim, generator=g)
        return sample, timestep.to(torch.float32), states

    decoder_vae = model.decoder_vae  # the model's own VAE, or a --vae-decoder replacement (TAESD)

    def vae_inputs(batch: int, h: int, w: int):
        return (torch.randn(batch, int(decoder_vae.config.latent_channels), h, w, generator=generator()),)

    decoder_params = _count(decoder_vae.decoder)
    if getattr(decoder_vae, "post_quant_conv", None) is not None:
        decoder_params += _count(decoder_vae.post_quant_conv)
    return [
        ComponentSpec(
            "text_encoder",
            TextEncoderGraph(model.text_encoder).eval(),
            ["input_ids"],
            ["last_hidden_state", "pooler_output"],
            {"input_ids": {0: "batch"}, "last_hidden_state": {0: "batch"}, "pooler_output": {0: "batch"}},
            text_inputs,
            _count(model.text_encoder),
            model.text_encoder.config.to_dict(),
        ),
        ComponentSpec(
            "unet",
            UNetGraph(model.unet).eval(),
            ["sample", "timestep", "encoder_hidden_states"],
            ["out_sample"],
            {
                "sample": {0: "batch", 2: "height", 3: "width"},
                "timestep": {0: "batch"},
                "encoder_hidden_states": {0: "batch"},
                "out_sample": {0: "batch", 2: "height", 3: "width"},
            },
            unet_inputs,
            _count(model.unet),
            dict(model.unet.config),
        ),
        ComponentSpec(
            "vae_decoder",
            VaeDecoderGraph(decoder_vae).eval(),
            ["latent_sample"],
            ["sample"],
            {"latent_sample": {0: "batch", 2: "height", 3: "width"}, "sample": {0: "batch", 2: "height", 3: "width"}},
            vae_inputs,
            decoder_params,
            dict(decoder_vae.config),
        ),
    ]

"""Coordinate channels: a UNet that can tell where it is, so "on the left" can mean the left.

Why: a convolutional UNet learns where a cell is only through zero padding, too weak a signal
to map a prompt's "on the left" to an object on the left when the input is pure noise (the
CoordConv finding: Liu et al. 2018, "An intriguing failing of convolutional neural networks
and the CoordConv solution"). Our demo models drew the asked colour and shape wherever the
noise put them and ignored the position word; with two constant planes, x and y in [-1, 1],
appended to the input, a run learned to place the object (docs/demo-model.md, run D). The
planes are made inside the UNet's graph from the latents' height and width, so an exported
UNet keeps Stable Diffusion's three inputs and the runtime, the quantizer and every target
need nothing new.

A checkpoint says it wants them with one key in ``unet/config.json``
(``"_nanoedge_coordinate_channels": 2``; diffusers keeps keys that start with ``_`` and passes
them to no constructor); its ``in_channels`` is then the latent channels + 2. Plain diffusers
pipelines cannot run such a UNet (they would feed it 4 channels): ``nanoedge export`` can.
"""

from __future__ import annotations

from typing import Any

import torch

#: The unet/config.json key that asks for coordinate planes (its value: how many, 0 or 2).
CONFIG_KEY = "_nanoedge_coordinate_channels"


def coordinate_channels(unet: Any) -> int:
    """How many coordinate planes ``unet`` expects after its latents (0 for every ordinary UNet)."""
    count = int(dict(unet.config).get(CONFIG_KEY) or 0)
    if count not in (0, 2):
        raise ValueError(f"{CONFIG_KEY} must be 0 or 2 (x and y planes), not {count}")
    if count and int(unet.config.in_channels) != int(unet.config.out_channels) + count:
        raise ValueError(
            f"this UNet asks for {count} coordinate channels, so it should take {int(unet.config.out_channels) + count} input "
            f"channels (latents + planes), but its in_channels is {int(unet.config.in_channels)}"
        )
    return count


def append_coordinates(sample: torch.Tensor) -> torch.Tensor:
    """``sample`` [B, C, H, W] with x and y planes (each -1 at the first column/row, +1 at the last) appended."""
    batch, _, height, width = sample.shape
    ys = torch.linspace(-1.0, 1.0, height, dtype=sample.dtype, device=sample.device)
    xs = torch.linspace(-1.0, 1.0, width, dtype=sample.dtype, device=sample.device)
    x_plane = xs.view(1, 1, 1, width).expand(batch, 1, height, width)
    y_plane = ys.view(1, 1, height, 1).expand(batch, 1, height, width)
    return torch.cat([sample, x_plane, y_plane], dim=1)


def run_unet(unet: Any, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
    """``unet``'s prediction for latents ``sample``, with coordinate planes when its config asks."""
    if coordinate_channels(unet):
        sample = append_coordinates(sample)
    return unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]

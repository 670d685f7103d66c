"""Turning decoder output into images, the way diffusers does, so parity is byte-for-byte."""

from __future__ import annotations

import numpy as np
from PIL import Image

from nanoedge.core.sizes import Size


def decoded_to_pil(decoded: np.ndarray, output_size: Size | None = None) -> list[Image.Image]:
    """``[B, 3, H, W]`` in [-1, 1] -> RGB PIL images (rounded like diffusers' numpy_to_pil)."""
    pixels = np.clip(decoded.astype(np.float32) / 2 + 0.5, 0.0, 1.0)
    pixels = (pixels.transpose(0, 2, 3, 1) * 255).round().astype(np.uint8)
    images = [Image.fromarray(p) for p in pixels]
    if output_size is not None:
        images = [
            img
            if img.size == (output_size.width, output_size.height)
            else img.resize((output_size.width, output_size.height), Image.Resampling.LANCZOS)
            for img in images
        ]
    return images

"""Training data: rendered scenes of the demo world, as tensors, plus fresh captions per step.

Images are rendered once (a seeded, held-out-free draw); captions are re-drawn every time a
scene is used, so the text encoder sees many phrasings of the same picture. The batch helpers
(VAE crops, cached latents, token ids) live here too, beside the data they cut.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nanoedge.runtime.demo.world import Scene, caption_for, render_scene, sample_scenes


@dataclass
class SceneSet:
    scenes: list[Scene]
    images: torch.Tensor  # [N, 3, 64, 64] in [-1, 1]

    def __len__(self) -> int:
        return len(self.scenes)


def render_scene_set(seed: int, count: int) -> SceneSet:
    """``count`` training scenes (never a held-out combination) rendered to a [-1, 1] tensor."""
    scenes = list(sample_scenes(seed, count, allow_held_out=False))
    pixels = np.stack([np.asarray(render_scene(s), dtype=np.uint8) for s in scenes])
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    return SceneSet(scenes, images.contiguous())


ATTRIBUTES = ("colour", "shape", "position")


def draw_captions(
    scenes: list[Scene], indices: np.ndarray, rng: np.random.Generator, drop: float, attribute_drop: float = 0.0
) -> list[str]:
    """A fresh caption per chosen scene; with probability ``drop`` the empty prompt (for CFG).

    ``attribute_drop``: each of the colour, shape and position words is left out with this
    probability (never all three at once), so each word has to carry its own attribute on its
    own; the model cannot tie a shape to the colour and place it was seen with. At 0 no extra
    random numbers are drawn (the captions are those of a run without it).
    """
    captions = []
    for i in indices:
        if rng.random() < drop:
            captions.append("")
            continue
        omit: set[str] = set()
        if attribute_drop > 0:
            omit = {a for a, u in zip(ATTRIBUTES, rng.random(3)) if u < attribute_drop}
            if len(omit) == len(ATTRIBUTES):
                omit = set()
        captions.append(caption_for(scenes[i], rng, frozenset(omit)))
    return captions


def _object_crops(data: SceneSet, index: np.ndarray, crop: int, rng: np.random.Generator) -> torch.Tensor:
    """Crops (at multiples of 4) that hold each scene's shape somewhere inside.

    The VAE has no attention, so crops train it like whole images at a quarter of the cost;
    centring them on the shape spends that effort on edges and corners, not flat background.
    """
    side = data.images.shape[-1]
    crops = []
    for i in index:
        scene = data.scenes[int(i)]
        top = int(np.clip(scene.cy - crop // 2 + rng.integers(-8, 9), 0, side - crop)) // 4 * 4
        left = int(np.clip(scene.cx - crop // 2 + rng.integers(-8, 9), 0, side - crop)) // 4 * 4
        crops.append(data.images[int(i), :, top : top + crop, left : left + crop])
    return torch.stack(crops)


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Posterior means of every image (the cached training latents, before scaling)."""
    return torch.cat([vae.encode(images[i : i + batch]).latent_dist.mean for i in range(0, len(images), batch)])


def _token_ids(tokenizer, texts: list[str]) -> torch.Tensor:
    return torch.tensor([e.ids for e in tokenizer.encode_batch(texts)], dtype=torch.long)

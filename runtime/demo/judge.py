"""A deterministic judge: does an image show the colour, shape and position its prompt asks for?

The idea of GenEval in a world we control, with pixel statistics instead of a detector, so a
score never depends on another learned model (and cannot drift with one):

1. background = the median colour of the image border;
2. the object = pixels far from the background colour, cleaned of speckles (an opening);
3. colour = the palette entry nearest the median colour of the object's interior;
4. position = the anchor nearest the object's centroid;
5. shape = the circle / square / triangle template (fitted to the object's bounding box) with
   the highest intersection-over-union with the object mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .world import COLOURS, IMAGE_SIZE, POSITIONS, SHAPES, parse_prompt, shape_polygon

#: RGB distance from the background above which a pixel belongs to the object. The closest
#: shape/background pair of the world (purple on gray) is ~110 apart; half of it separates them.
FOREGROUND_DISTANCE = 55.0
#: Fewer object pixels than this (of 4096) means "no object drawn".
MIN_OBJECT_PIXELS = 12
ATTRIBUTES: tuple[str, ...] = ("colour", "shape", "position")


@dataclass(frozen=True)
class Judgement:
    """What the judge saw versus what the prompt asked, per attribute."""

    expected: dict[str, str | None]
    found: dict[str, str | None]
    object_pixels: int
    details: dict[str, float] = field(default_factory=dict)

    @property
    def correct(self) -> dict[str, bool]:
        """Per attribute the prompt names: whether the image shows it."""
        return {a: self.found.get(a) == self.expected[a] for a in ATTRIBUTES if self.expected.get(a) is not None}

    @property
    def all_correct(self) -> bool:
        return all(self.correct.values())


def _as_array(image: "Image.Image | np.ndarray") -> np.ndarray:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.asarray(image, dtype=np.uint8))
    image = image.convert("RGB")
    if image.size != (IMAGE_SIZE, IMAGE_SIZE):  # served sizes are upscaled natives: judge at native
        image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
    return np.asarray(image, dtype=np.float32)


def _open(mask: np.ndarray, size: int = 3) -> np.ndarray:
    img = Image.fromarray(mask.astype(np.uint8) * 255)
    img = img.filter(ImageFilter.MinFilter(size)).filter(ImageFilter.MaxFilter(size))
    return np.asarray(img) > 127


def _dilate(mask: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(3))) > 127


def _erode(mask: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MinFilter(3))) > 127


def _template(shape: str, box: tuple[int, int, int, int]) -> np.ndarray:
    """Mask of ``shape`` filling the pixel box (x0, y0, x1, y1 inclusive), at 4x then reduced."""
    s = 4
    x0, y0, x1, y1 = box
    canvas = Image.new("L", (IMAGE_SIZE * s, IMAGE_SIZE * s), 0)
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = x0 * s, y0 * s, (x1 + 1) * s, (y1 + 1) * s
    if shape == "circle":
        draw.ellipse([left, top, right, bottom], fill=255)
    else:
        cx, cy = (left + right) / 2, (top + bottom) / 2
        outline = shape_polygon(shape, cx, cy, 1.0)
        assert outline is not None
        hx, hy = (right - left) / 2, (bottom - top) / 2
        draw.polygon([(cx + (x - cx) * hx, cy + (y - cy) * hy) for x, y in outline], fill=255)
    return np.asarray(canvas.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)) > 127


def analyse(image: "Image.Image | np.ndarray") -> tuple[dict[str, str | None], int, dict[str, float]]:
    """The colour, shape and position the image shows (None where no object is found)."""
    pixels = _as_array(image)
    border = np.concatenate(
        [pixels[:2].reshape(-1, 3), pixels[-2:].reshape(-1, 3), pixels[:, :2].reshape(-1, 3), pixels[:, -2:].reshape(-1, 3)]
    )
    background = np.median(border, axis=0)
    distance = np.linalg.norm(pixels - background, axis=-1)
    raw = distance > FOREGROUND_DISTANCE
    # The opening removes speckles but also blunts a small triangle's apex: keep the raw pixels
    # that lie next to the opened object, so noise goes and thin corners stay.
    mask = raw & _dilate(_open(raw))
    count = int(mask.sum())
    if count < MIN_OBJECT_PIXELS:
        return {"colour": None, "shape": None, "position": None}, count, {}

    core = _erode(mask)
    sample = pixels[core] if core.sum() >= MIN_OBJECT_PIXELS else pixels[mask]
    colour_rgb = np.median(sample, axis=0)
    names = list(COLOURS)
    palette = np.asarray([COLOURS[n] for n in names], dtype=np.float32)
    colour = names[int(np.argmin(np.linalg.norm(palette - colour_rgb, axis=-1)))]

    ys, xs = np.nonzero(mask)
    cx, cy = float(xs.mean()), float(ys.mean())
    anchors = list(POSITIONS)
    position = anchors[int(np.argmin([np.hypot(cx - POSITIONS[a][0], cy - POSITIONS[a][1]) for a in anchors]))]

    box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
    ious = {}
    for shape in SHAPES:
        template = _template(shape, box)
        ious[shape] = float((template & mask).sum() / max(1, (template | mask).sum()))
    shape = max(ious, key=lambda k: ious[k])
    details = {"cx": cx, "cy": cy, **{f"iou_{k}": v for k, v in ious.items()}}
    return {"colour": colour, "shape": shape, "position": position}, count, details


def judge_image(image: "Image.Image | np.ndarray", prompt: str) -> Judgement:
    """Score ``image`` against what ``prompt`` asks for (see the module docstring for how)."""
    expected = parse_prompt(prompt)
    found, count, details = analyse(image)
    return Judgement(expected={a: expected[a] for a in ATTRIBUTES}, found=found, object_pixels=count, details=details)

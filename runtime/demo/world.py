"""The synthetic scene world: one flat shape on a flat background, and its captions.

Why a world of our own: with no model hub reachable, a model trained here is the only way
to show real images, and a world we control lets a simple deterministic judge say whether
an image matches its prompt. Attributes are chosen to stay far apart in pixel space
(saturated hues 60 degrees apart, five well-separated anchor positions, three shapes with
clearly different silhouettes) so both the tiny model and the judge can tell them apart.

Some colour x shape x position combinations (``HELD_OUT``) never appear in training scenes;
evaluating on them measures composition rather than memorisation.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64
_SUPERSAMPLE = 4

#: Shape colours (saturated, hues ~60 degrees apart).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "yellow": (235, 215, 30),
    "green": (30, 170, 50),
    "cyan": (30, 200, 210),
    "blue": (30, 60, 220),
    "purple": (160, 50, 200),
}
#: Background colours: three neutrals plus every shape colour (never the shape's own).
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
    **COLOURS,
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
#: Anchor centres in pixels (x, y) of a 64x64 image.
POSITIONS: dict[str, tuple[int, int]] = {
    "left": (16, 32),
    "right": (48, 32),
    "top": (32, 16),
    "bottom": (32, 48),
    "centre": (32, 32),
}
#: Half-extent of the shape in pixels, per size word (a range: drawn uniformly).
SIZES: dict[str, tuple[int, int]] = {"small": (6, 8), "large": (11, 13)}
_JITTER = 3

#: colour x shape x position combinations that training never shows (used by eval).
HELD_OUT: tuple[tuple[str, str, str], ...] = (
    ("red", "triangle", "right"),
    ("yellow", "square", "left"),
    ("green", "circle", "bottom"),
    ("cyan", "square", "top"),
    ("blue", "triangle", "centre"),
    ("purple", "circle", "right"),
    ("blue", "circle", "top"),
    ("green", "triangle", "left"),
    ("red", "square", "centre"),
)
_HELD_OUT_SET = frozenset(HELD_OUT)
#: Training combinations the evaluation checks too (each colour twice or so, every shape and position).
EVAL_SEEN: tuple[tuple[str, str, str], ...] = (
    ("red", "circle", "left"),
    ("yellow", "triangle", "top"),
    ("green", "square", "right"),
    ("cyan", "circle", "centre"),
    ("blue", "square", "bottom"),
    ("purple", "triangle", "left"),
    ("red", "triangle", "bottom"),
    ("yellow", "circle", "right"),
    ("purple", "square", "centre"),
)

# Caption vocabulary: synonyms the training captions use and the prompt parser accepts.
_SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc", "dot", "round shape"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle", "triangular shape", "wedge"),
}
_COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red",),
    "yellow": ("yellow",),
    "green": ("green",),
    "cyan": ("cyan", "turquoise"),
    "blue": ("blue",),
    "purple": ("purple", "violet"),
}
_BACKGROUND_WORDS: dict[str, tuple[str, ...]] = {
    **_COLOUR_WORDS,
    "white": ("white",),
    "black": ("black",),
    "gray": ("gray", "grey"),
}
_POSITION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("on the left", "at the left", "to the left", "on the left side"),
    "right": ("on the right", "at the right", "to the right", "on the right side"),
    "top": ("at the top", "on top", "near the top", "at the top edge"),
    "bottom": ("at the bottom", "near the bottom", "at the bottom edge", "down at the bottom"),
    "centre": ("in the centre", "in the center", "in the middle", "at the centre"),
}
_SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
# Templates; {obj} is "[size] colour shape", {pos} a position phrase, {bg} a background clause.
_TEMPLATES: tuple[str, ...] = (
    "a {obj} {pos}{bg}",
    "{pos}, a {obj}{bg}",
    "a {obj}{bg} {pos}",
    "{obj} {pos}",
    "there is a {obj} {pos}{bg}",
    "a picture of a {obj} {pos}{bg}",
)


@dataclass(frozen=True)
class Scene:
    """Everything that decides an image: attributes plus the exact drawn geometry."""

    colour: str
    shape: str
    position: str
    size: str
    background: str
    cx: int
    cy: int
    radius: int

    def as_dict(self) -> dict:
        return asdict(self)


def is_held_out(colour: str, shape: str, position: str) -> bool:
    """Whether a colour x shape x position combination is kept out of training."""
    return (colour, shape, position) in _HELD_OUT_SET


def sample_scene(rng: np.random.Generator, *, allow_held_out: bool = False, **fixed: str) -> Scene:
    """Draw one scene; ``fixed`` pins attributes (colour=, shape=, position=, size=, background=).

    Training draws with ``allow_held_out=False`` and so never produces a held-out combination.
    """
    unknown = set(fixed) - {"colour", "shape", "position", "size", "background"}
    if unknown:
        raise ValueError(f"unknown scene attributes: {sorted(unknown)}")
    while True:
        colour = fixed.get("colour") or str(rng.choice(list(COLOURS)))
        shape = fixed.get("shape") or str(rng.choice(SHAPES))
        position = fixed.get("position") or str(rng.choice(list(POSITIONS)))
        size = fixed.get("size") or str(rng.choice(list(SIZES)))
        backgrounds = [b for b in BACKGROUNDS if b != colour]
        background = fixed.get("background") or str(rng.choice(backgrounds))
        if background == colour:
            raise ValueError(f"the background cannot be the shape's colour ({colour})")
        if allow_held_out or not is_held_out(colour, shape, position):
            break
        if {"colour", "shape", "position"} <= set(fixed):
            raise ValueError(f"{colour} {shape} {position} is a held-out combination")
    ax, ay = POSITIONS[position]
    lo, hi = SIZES[size]
    radius = int(rng.integers(lo, hi + 1))
    cx = ax + int(rng.integers(-_JITTER, _JITTER + 1))
    cy = ay + int(rng.integers(-_JITTER, _JITTER + 1))
    return Scene(colour, shape, position, size, background, cx, cy, radius)


def sample_scenes(seed: int, count: int, *, allow_held_out: bool = False) -> Iterator[Scene]:
    """``count`` scenes from ``seed``: the same seed always gives the same scenes."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield sample_scene(rng, allow_held_out=allow_held_out)


def shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    """Outline of a square or an upright triangle (apex up) inside the box cx±r, cy±r."""
    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    return None


def render_scene(scene: Scene) -> Image.Image:
    """The 64x64 RGB image of ``scene`` (drawn 4x larger and downsampled for smooth edges)."""
    s = _SUPERSAMPLE
    image = Image.new("RGB", (IMAGE_SIZE * s, IMAGE_SIZE * s), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)
    fill = COLOURS[scene.colour]
    # Pixel centres sit at +0.5: scale the continuous geometry, not the pixel indices.
    cx, cy, r = (scene.cx + 0.5) * s, (scene.cy + 0.5) * s, scene.radius * s
    polygon = shape_polygon(scene.shape, cx, cy, r)
    if polygon is None:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon(polygon, fill=fill)
    return image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)


def caption_for(scene: Scene, rng: np.random.Generator, omit: "frozenset[str] | set[str]" = frozenset()) -> str:
    """A random caption of ``scene``: synonyms, optional size and background, varied word order.

    ``omit`` leaves out the colour, shape and/or position words (a partial caption: "a circle
    on the left", "a red square"); the random draws are the same either way, so a caption
    without omissions is exactly what it always was.
    """
    words = []
    if rng.random() < 0.5:
        words.append(str(rng.choice(_SIZE_WORDS[scene.size])))
    colour = str(rng.choice(_COLOUR_WORDS[scene.colour]))
    shape = str(rng.choice(_SHAPE_WORDS[scene.shape]))
    words += [w for w, attribute in ((colour, "colour"), (shape, "shape")) if attribute not in omit]
    bg = ""
    if rng.random() < 0.5:
        bg = f" on a {rng.choice(_BACKGROUND_WORDS[scene.background])} background"
    template = str(rng.choice(_TEMPLATES))
    pos = str(rng.choice(_POSITION_PHRASES[scene.position]))
    text = template.format(obj=" ".join(words), pos="" if "position" in omit else pos, bg=bg)
    return re.sub(r"\s+", " ", text).strip(" ,") if omit else text


def canonical_caption(colour: str, shape: str, position: str, variant: int = 0) -> str:
    """Plain prompts for evaluation: variant 0 "a red circle on the left", 1 "on the left, a red circle"."""
    pos = _POSITION_PHRASES[position][0]
    if variant == 0:
        return f"a {colour} {shape} {pos}"
    return f"{pos}, a {colour} {shape}"


@dataclass(frozen=True)
class EvalPrompt:
    prompt: str
    colour: str
    shape: str
    position: str
    held_out: bool


def evaluation_prompts() -> list[EvalPrompt]:
    """The fixed prompt set of ``nanoedge eval``: held-out combinations in two phrasings, then seen ones."""
    prompts = [EvalPrompt(canonical_caption(c, s, p, v), c, s, p, True) for c, s, p in HELD_OUT for v in (0, 1)]
    prompts += [EvalPrompt(canonical_caption(c, s, p), c, s, p, False) for c, s, p in EVAL_SEEN]
    return prompts


def training_captions(seed: int, count: int) -> list[str]:
    """``count`` captions of training scenes (no held-out combination): e.g. calibration prompts."""
    rng = np.random.default_rng(seed)
    return [caption_for(scene, rng) for scene in sample_scenes(seed, count)]


def vocabulary() -> list[str]:
    """Every word any caption can contain (the tokenizer's vocabulary, special tokens aside)."""
    words: set[str] = set()
    phrases = [
        *_SIZE_WORDS.values(),
        *_COLOUR_WORDS.values(),
        *_SHAPE_WORDS.values(),
        *_BACKGROUND_WORDS.values(),
        *_POSITION_PHRASES.values(),
    ]
    for group in phrases:
        for phrase in group:
            words.update(phrase.split())
    for template in _TEMPLATES:
        words.update(w for w in re.findall(r"[a-z]+", re.sub(r"\{\w+\}", " ", template)))
    words.update(["a", "on", "background", ","])
    return sorted(words)


_BG_CLAUSE = re.compile(r"\bon (?:a|an) (\w+) background\b")


def parse_prompt(prompt: str) -> dict[str, str | None]:
    """Attributes a prompt asks for: colour, shape, position, size, background (None if absent).

    The background clause ("on a blue background") is read first and removed, so its colour is
    not mistaken for the shape's. Unknown words are ignored.
    """
    text = " " + re.sub(r"[^a-z ]+", " ", prompt.lower().replace(",", " ")) + " "
    text = re.sub(r"\s+", " ", text)
    background = None
    match = _BG_CLAUSE.search(text)
    if match:
        background = next((name for name, syns in _BACKGROUND_WORDS.items() if match.group(1) in syns), None)
        text = text[: match.start()] + " " + text[match.end() :]

    def find(table: dict[str, tuple[str, ...]]) -> str | None:
        best: tuple[int, str] | None = None
        for name, synonyms in table.items():
            for phrase in synonyms:
                at = text.find(f" {phrase} ")
                if at >= 0 and (best is None or at < best[0]):
                    best = (at, name)
        return best[1] if best else None

    position_words = {
        "left": ("left",),
        "right": ("right",),
        "top": ("top", "upper"),
        "bottom": ("bottom", "lower"),
        "centre": ("centre", "center", "middle"),
    }
    return {
        "colour": find(_COLOUR_WORDS),
        "shape": find(_SHAPE_WORDS),
        "position": find(position_words),
        "size": find(_SIZE_WORDS),
        "background": background,
    }

"""``style`` -> prompt templates, and the ``revised_prompt`` clients get back.

Hosted APIs take a style word (``vivid``, ``natural``) and users also send their own labels
(``anime``, ``concept_art``, ``minimalist``, and Chinese ones such as ``动漫``). A diffusion
model has no style switch, so a style is a prompt template plus words for the negative
prompt. The package may add or override templates in ``nanoedge.json``'s ``styles`` section:
``{"name": {"prompt": "{prompt}, ...", "negative_prompt": "...", "aliases": [...]}}`` or just
``{"name": "{prompt}, ..."}``. The styled prompt is returned as ``revised_prompt``, as DALL-E
3 does, so callers see exactly what was generated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from nanoedge.core.manifest import Manifest


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str = "{prompt}"
    negative_prompt: str = ""

    def apply(self, prompt: str, negative: str | None) -> tuple[str, str | None]:
        """Return (styled prompt, combined negative prompt)."""
        styled = self.prompt.replace("{prompt}", prompt)
        if self.negative_prompt:
            negative = f"{negative}, {self.negative_prompt}" if negative else self.negative_prompt
        return styled, negative


BUILTIN_STYLES: dict[str, Style] = {
    s.name: s
    for s in (
        Style("vivid", "{prompt}, vivid colors, dramatic lighting, highly detailed, hyper-real", "dull, washed out, lowres"),
        Style("natural", "{prompt}, natural lighting, realistic, true-to-life colors", "oversaturated, cartoon, lowres"),
        Style(
            "realistic", "photo of {prompt}, photorealistic, natural lighting, sharp focus, detailed", "cartoon, drawing, painting, lowres"
        ),
        Style(
            "anime",
            "anime style illustration of {prompt}, cel shading, clean line art, vibrant colors",
            "photo, photorealistic, 3d render, lowres",
        ),
        Style("concept_art", "concept art of {prompt}, digital painting, cinematic composition, artstation", "photo, lowres, blurry"),
        Style(
            "minimalist",
            "minimalist design of {prompt}, simple shapes, flat colors, clean background",
            "cluttered, busy, detailed texture, lowres",
        ),
    )
}

#: Labels clients send for the built-in styles (lower-cased; Chinese as users write them).
BUILTIN_ALIASES: dict[str, str] = {
    "photorealistic": "realistic",
    "photo": "realistic",
    "concept-art": "concept_art",
    "concept art": "concept_art",
    "minimal": "minimalist",
    "写实风格": "realistic",
    "写实": "realistic",
    "真实": "realistic",
    "自然": "natural",
    "生动": "vivid",
    "鲜艳": "vivid",
    "动漫": "anime",
    "动漫风格": "anime",
    "二次元": "anime",
    "概念艺术": "concept_art",
    "概念艺术风格": "concept_art",
    "极简": "minimalist",
    "极简风格": "minimalist",
    "极简主义": "minimalist",
}


class StyleBook:
    """The styles one server offers: built-ins, overridden or extended by the package."""

    def __init__(self, declared: Mapping[str, Any] | None = None) -> None:
        self.styles: dict[str, Style] = dict(BUILTIN_STYLES)
        self.aliases: dict[str, str] = dict(BUILTIN_ALIASES)
        for name, spec in (declared or {}).items():
            key = str(name).strip().lower()
            if isinstance(spec, str):
                spec = {"prompt": spec}
            if not isinstance(spec, Mapping):
                continue
            template = str(spec.get("prompt") or "{prompt}")
            if "{prompt}" not in template:
                template = "{prompt}, " + template
            self.styles[key] = Style(key, template, str(spec.get("negative_prompt") or ""))
            for alias in spec.get("aliases") or ():
                self.aliases[str(alias).strip().lower()] = key

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> "StyleBook":
        return cls(manifest.styles)

    def lookup(self, label: str) -> Style | None:
        key = label.strip().lower()
        key = self.aliases.get(key, key)
        return self.styles.get(key)

    def names(self) -> list[str]:
        return sorted(self.styles)

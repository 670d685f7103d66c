"""Parsing a ``POST /v1/images/generations`` body into a checked :class:`ImageRequest`.

Validation is our own (not a framework's 422): every problem becomes a 400 in the OpenAI
envelope whose ``param`` names the field and whose message says what values are allowed.
JSON ``null`` means "not given" (the Python SDK sends ``null`` for arguments passed as
``None``). Fields of the official request schema that a local diffusion model cannot honour
(``stream``, a transparent ``background``) are refused with a clear message rather than
ignored; unknown fields are refused as OpenAI does, which also catches typos in our
extensions (``seed``, ``steps``, ``guidance_scale``, ``negative_prompt``, ``scheduler``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from nanoedge.core.limits import (
    MAX_API_IMAGES,
    MAX_GUIDANCE,
    MAX_PROMPT_CHARS,
    MAX_REQUEST_SEED,
    MAX_STEPS,
)

from .errors import APIError, invalid
from .quality import QUALITY_ALIASES, QualityTable
from .styles import StyleBook

RESPONSE_FORMATS = ("url", "b64_json")
OUTPUT_FORMATS = ("png", "jpeg", "webp")

#: Fields of the official schema (and of the current SDKs) that we accept but that change
#: nothing for a local model, when given their neutral values.
_NEUTRAL = {
    "moderation": ("low", "auto"),
    "background": ("auto", "opaque"),
    "stream": (False,),
    "partial_images": (0,),
}
_FREE_TEXT = ("user", "safety_identifier")


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    model: str | None = None
    n: int = 1
    size: str | None = None
    quality: str | None = None
    style: str | None = None
    response_format: str = "url"
    output_format: str = "png"
    output_compression: int | None = None
    user: str | None = None
    seed: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    negative_prompt: str | None = None
    scheduler: str | None = None


KNOWN_FIELDS = frozenset(ImageRequest.__dataclass_fields__) | frozenset(_NEUTRAL) | frozenset(_FREE_TEXT)


def parse_json_body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise invalid("The request body is empty: send a JSON object such as {\"prompt\": \"a red bicycle\"}.", None, "invalid_json")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise invalid(
            f"The request body is not valid JSON ({exc.msg if hasattr(exc, 'msg') else 'bad encoding'}); send a JSON object.",
            None,
            "invalid_json",
        ) from None
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object, such as {\"prompt\": \"a red bicycle\"}.", None, "invalid_json")
    return body


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array", dict: "an object"}.get(
        type(value), type(value).__name__
    )


def _string(body: dict, name: str, *, max_chars: int, allow_empty: bool = True) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(f"'{name}' must be a string, not {_type_name(value)}.", name, "invalid_type")
    if not allow_empty and not value.strip():
        raise invalid(f"'{name}' must not be empty.", name, "invalid_value")
    if len(value) > max_chars:
        raise invalid(f"'{name}' is {len(value)} characters long; the maximum is {max_chars}.", name, "string_above_max_length")
    return value


def _integer(body: dict, name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"'{name}' must be an integer, not {_type_name(value)}.", name, "invalid_type")
    if not low <= value <= high:
        raise invalid(f"'{name}' must be between {low} and {high}, got {value}.", name, "invalid_value")
    return value


def _number(body: dict, name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(f"'{name}' must be a number, not {_type_name(value)}.", name, "invalid_type")
    if not math.isfinite(value) or not low <= value <= high:
        raise invalid(f"'{name}' must be between {low:g} and {high:g}, got {value}.", name, "invalid_value")
    return float(value)


def _choice(body: dict, name: str, allowed: tuple[str, ...]) -> str | None:
    value = _string(body, name, max_chars=64)
    if value is None:
        return None
    if value not in allowed:
        raise invalid(f"'{name}' must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}.", name, "invalid_value")
    return value


def parse_image_request(body: dict[str, Any], styles: StyleBook) -> ImageRequest:
    """Check every field of ``body``; raise a 400 :class:`APIError` naming the first bad one."""
    unknown = sorted(set(body) - KNOWN_FIELDS)
    if unknown:
        raise invalid(f"Unrecognized request argument supplied: {unknown[0]}.", unknown[0], "unknown_parameter")
    for name, neutral in _NEUTRAL.items():
        value = body.get(name)
        if value is not None and (value not in neutral or type(value) is not type(neutral[0])):
            shown = ", ".join(json.dumps(v) for v in neutral)
            raise invalid(
                f"'{name}'={json.dumps(value)} is not supported by this server (accepted: {shown}, or leave it out).",
                name,
                "unsupported_value",
            )
    for name in _FREE_TEXT:
        _string(body, name, max_chars=512)

    if "prompt" not in body or body["prompt"] is None:
        raise invalid("'prompt' is required: describe the image to generate.", "prompt", "missing_required_parameter")
    prompt = _string(body, "prompt", max_chars=MAX_PROMPT_CHARS, allow_empty=False)
    assert prompt is not None

    quality = _string(body, "quality", max_chars=64)
    if quality is not None:
        canonical = QualityTable.canonical(quality)
        if canonical is None:
            allowed = ", ".join(repr(q) for q in QUALITY_ALIASES)
            raise invalid(f"'quality' must be one of {allowed}, got {quality!r}.", "quality", "invalid_value")
        quality = canonical

    style = _string(body, "style", max_chars=64)
    if style is not None and styles.lookup(style) is None:
        raise invalid(
            f"'style' {style!r} is not known; use one of {', '.join(styles.names())} (or a label such as 动漫, 写实风格).",
            "style",
            "invalid_value",
        )

    size = _string(body, "size", max_chars=32)
    return ImageRequest(
        prompt=prompt,
        model=_string(body, "model", max_chars=256),
        n=_integer(body, "n", 1, MAX_API_IMAGES) or 1,
        size=size,
        quality=quality,
        style=style,
        response_format=_choice(body, "response_format", RESPONSE_FORMATS) or "url",
        output_format=_choice(body, "output_format", OUTPUT_FORMATS) or "png",
        output_compression=_integer(body, "output_compression", 0, 100),
        user=_string(body, "user", max_chars=512),
        seed=_integer(body, "seed", 0, MAX_REQUEST_SEED),
        steps=_integer(body, "steps", 1, MAX_STEPS),
        guidance_scale=_number(body, "guidance_scale", 0.0, MAX_GUIDANCE),
        negative_prompt=_string(body, "negative_prompt", max_chars=MAX_PROMPT_CHARS),
        scheduler=_string(body, "scheduler", max_chars=64),
    )


__all__ = ["APIError", "ImageRequest", "parse_image_request", "parse_json_body"]

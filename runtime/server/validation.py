"""Parsing a ``POST /v1/images/generations`` body into a checked :class:`ImageRequest`.

Validation is our own (not a framework's 422): every problem becomes a 400 in the OpenAI
envelope whose ``param`` names the field and whose message says what values are allowed.
JSON ``null`` means "not given" (the Python SDK sends ``null`` for arguments passed as
``None``). Fields of the official request schema that a local diffusion model cannot honour
(a transparent ``background``) are refused with a clear message rather than ignored; unknown
fields are refused as OpenAI does, which also catches typos in our extensions (``seed``,
``steps``, ``guidance_scale``, ``negative_prompt``, ``scheduler``). ``stream: true`` with
``partial_images`` 0-3 answers server-sent events (``streaming.py``); ``partial_images``
without ``stream: true``, or ``response_format: "url"`` with it, are refused because they
would otherwise be silently ignored.

The rules live in one table, :data:`FIELDS`: the parser applies it and ``openapi.py`` turns it
into the JSON Schema of ``/openapi.json``, so the published document cannot drift from what
the server accepts. The edge rejects everything a later stage cannot take (lone UTF-16
surrogates, which the tokenizer and the UTF-8 encoder refuse; prompts with no visible
character; JSON nested deeper or numbers longer than the limits below), because an error
raised inside the inference worker would reach every request sharing the batch.

Numbers follow JSON Schema: an integer field accepts any JSON number with no fractional part
(``2`` and ``2.0`` alike), everywhere, including the neutral ``partial_images: 0``.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import numpy as np

from nanoedge.core.limits import MAX_API_IMAGES, MAX_GUIDANCE, MAX_PARTIAL_IMAGES, MAX_PROMPT_CHARS, MAX_REQUEST_SEED, MAX_STEPS

from .errors import APIError, invalid, printable
from .quality import QUALITY_ALIASES, QualityTable
from .styles import StyleBook

# -- limits of the body's shape (the request limits themselves are nanoedge.core.limits) ------
#: Deepest JSON nesting accepted in a body. A valid request is one object of scalars (depth 1);
#: the margin only lets a wrong value be reported as a wrong value. Checked before parsing, so
#: 100,000 levels cost one linear scan, not a RecursionError.
MAX_JSON_DEPTH = 32
#: Longest number literal (digits, sign, point and exponent included). Every numeric field fits
#: in 20 characters; without a bound a 4,301-digit integer trips Python's int-conversion limit.
MAX_NUMBER_CHARS = 100
MAX_NAME_CHARS = 64
MAX_MODEL_CHARS = 256
MAX_USER_CHARS = 512
RESPONSE_FORMATS = ("url", "b64_json")
OUTPUT_FORMATS = ("png", "jpeg", "webp")
#: ``auto``, ``WIDTHxHEIGHT`` (``x``, ``X`` or ``×``) or one number for a square, ASCII digits.
SIZE_PATTERN = r"^\s*(?:[Aa][Uu][Tt][Oo]|[0-9]{1,5}\s*[xX×]\s*[0-9]{1,5}|[0-9]{1,5})\s*$"


@dataclass(frozen=True)
class Field:
    """One request field: its JSON type and bounds (the parser and the OpenAPI schema read it).

    ``kind`` is ``string``, ``integer``, ``number`` or ``neutral`` (a field of the official
    schema we accept only with the values in ``choices``, which change nothing here).
    """

    name: str
    kind: str
    description: str
    max_chars: int | None = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] = ()
    pattern: str | None = None
    visible: bool = False  # must contain a letter, digit, punctuation or symbol
    fold_case: bool = False  # choices match after trimming and lower-casing
    required: bool = False
    extension: bool = False  # a nanoedge extension, not in the official schema


FIELDS: tuple[Field, ...] = (
    Field(
        "prompt",
        "string",
        "What to draw; the text encoder reads the first 77 tokens.",
        max_chars=MAX_PROMPT_CHARS,
        visible=True,
        required=True,
    ),
    Field("model", "string", "The package id or one of its aliases; omitted: the served model.", max_chars=MAX_MODEL_CHARS),
    Field("n", "integer", "Number of images.", minimum=1, maximum=MAX_API_IMAGES),
    Field("size", "string", "'auto' or WIDTHxHEIGHT within the package's bounds.", max_chars=32, pattern=SIZE_PATTERN),
    Field("quality", "string", "Mapped to denoising steps.", choices=tuple(QUALITY_ALIASES), max_chars=MAX_NAME_CHARS, fold_case=True),
    Field("style", "string", "A prompt template name or label.", max_chars=MAX_NAME_CHARS),
    Field("response_format", "string", "'url' (default) or 'b64_json'.", choices=RESPONSE_FORMATS, max_chars=MAX_NAME_CHARS),
    Field("output_format", "string", "Image encoding.", choices=OUTPUT_FORMATS, max_chars=MAX_NAME_CHARS),
    Field("output_compression", "integer", "JPEG/WebP quality (100 = best).", minimum=0, maximum=100),
    Field("user", "string", "Accepted and ignored.", max_chars=MAX_USER_CHARS),
    Field("safety_identifier", "string", "Accepted and ignored.", max_chars=MAX_USER_CHARS),
    Field("moderation", "neutral", "Accepted; changes nothing.", choices=("low", "auto")),
    Field("background", "neutral", "Only opaque images are made.", choices=("auto", "opaque")),
    Field("stream", "neutral", "true: server-sent events (image_generation.partial_image / .completed).", choices=(False, True)),
    Field("partial_images", "integer", "Previews per image in a stream (needs stream: true).", minimum=0, maximum=MAX_PARTIAL_IMAGES),
    Field("seed", "integer", "Noise seed; image i uses seed + i.", minimum=0, maximum=MAX_REQUEST_SEED, extension=True),
    Field("steps", "integer", "Denoising steps; overrides quality.", minimum=1, maximum=MAX_STEPS, extension=True),
    Field("guidance_scale", "number", "Classifier-free guidance scale.", minimum=0.0, maximum=MAX_GUIDANCE, extension=True),
    Field("negative_prompt", "string", "What to avoid.", max_chars=MAX_PROMPT_CHARS, extension=True),
    Field("scheduler", "string", "Sampler name (pndm, ddim, euler, euler_a, dpmpp_2m, lcm...).", max_chars=MAX_NAME_CHARS, extension=True),
)
FIELD_BY_NAME = {f.name: f for f in FIELDS}
KNOWN_FIELDS = frozenset(FIELD_BY_NAME)


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
    stream: bool = False
    partial_images: int = 0
    background: str = "auto"


# -- the body ----------------------------------------------------------------------------------
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NUMBER_RUN = re.compile(rb"[-+0-9.eE]{%d,}" % (MAX_NUMBER_CHARS + 1))


class _NumberTooLong(Exception):
    pass


def _nesting_depth(skeleton: bytes) -> int:
    """Deepest ``[``/``{`` nesting of a body whose strings were blanked, without recursion."""
    codes = np.frombuffer(skeleton, dtype=np.uint8)
    steps = (codes == ord("[")).astype(np.int32) + (codes == ord("{")) - (codes == ord("]")) - (codes == ord("}"))
    return int(np.cumsum(steps).max()) if steps.size else 0


def _bounded_number(text: str) -> Any:
    if len(text) > MAX_NUMBER_CHARS:
        raise _NumberTooLong(len(text))
    return float(text) if any(c in text for c in ".eE") else int(text)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """The body as a dict; 400 ``invalid_json`` for anything that is not one bounded JSON object."""
    if not raw.strip():
        raise invalid('The request body is empty: send a JSON object such as {"prompt": "a red bicycle"}.', None, "invalid_json")
    skeleton = _JSON_STRING.sub(b'""', raw)  # strings out: brackets and digits inside them do not count
    depth = _nesting_depth(skeleton)
    if depth > MAX_JSON_DEPTH:
        raise invalid(
            f"The request body nests JSON {depth} levels deep; at most {MAX_JSON_DEPTH} are accepted (a request is one flat object).",
            None,
            "invalid_json",
        )
    if _NUMBER_RUN.search(skeleton):
        raise invalid(
            f"The request body has a number literal longer than {MAX_NUMBER_CHARS} characters; no field takes such a number.",
            None,
            "invalid_value",
        )
    try:
        body = json.loads(raw, parse_int=_bounded_number, parse_float=_bounded_number, parse_constant=_no_constant)
    except _NumberTooLong:
        raise invalid(
            f"The request body has a number literal longer than {MAX_NUMBER_CHARS} characters; no field takes such a number.",
            None,
            "invalid_value",
        ) from None
    except json.JSONDecodeError as exc:
        raise invalid(
            f"The request body is not valid JSON ({exc.msg} at character {exc.pos}); send a JSON object.", None, "invalid_json"
        ) from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise invalid(
            "The request body is not valid JSON (bad encoding or a non-standard value such as NaN); send a UTF-8 JSON object.",
            None,
            "invalid_json",
        ) from None
    if not isinstance(body, dict):
        raise invalid('The request body must be a JSON object, such as {"prompt": "a red bicycle"}.', None, "invalid_json")
    return body


# -- field checks ------------------------------------------------------------------------------
_SURROGATE = re.compile("[\ud800-\udfff]")
_SIZE_RE = re.compile(SIZE_PATTERN)


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array", dict: "an object"}.get(
        type(value), type(value).__name__
    )


def has_visible_text(text: str) -> bool:
    """True if ``text`` has a letter, mark, number, punctuation or symbol: not only spaces,
    zero-width or other format/control characters (which encode to an empty prompt)."""
    return any(unicodedata.category(c)[0] in "LMNPS" for c in text)


def _check_text(value: str, name: str) -> None:
    bad = _SURROGATE.search(value)
    if bad:
        raise invalid(
            f"'{name}' contains a lone UTF-16 surrogate (U+{ord(bad.group()):04X} at character {bad.start()}), "
            "which is not valid Unicode text; "
            "send the text as valid UTF-8 (a JSON \\ud83d\\ude00 pair is fine, a lone \\ud800 is not).",
            name,
            "invalid_value",
        )


def _string(body: dict, spec: Field) -> str | None:
    name, value = spec.name, body.get(spec.name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(f"'{name}' must be a string, not {_type_name(value)}.", name, "invalid_type")
    _check_text(value, name)
    if spec.max_chars is not None and len(value) > spec.max_chars:
        raise invalid(f"'{name}' is {len(value)} characters long; the maximum is {spec.max_chars}.", name, "string_above_max_length")
    if spec.visible and not has_visible_text(value):
        raise invalid(
            f"'{name}' must contain visible text (letters, digits or symbols), not only spaces or invisible characters.",
            name,
            "invalid_value",
        )
    if spec.pattern is not None and not _SIZE_RE.match(value):
        raise invalid(
            f"'{name}' {printable(value)!r} is not understood: give WIDTHxHEIGHT such as 512x512, or 'auto'.", name, "invalid_value"
        )
    if spec.choices and value not in spec.choices and not (spec.fold_case and value.strip().lower() in spec.choices):
        raise invalid(
            f"'{name}' must be one of {', '.join(repr(c) for c in spec.choices)}, got {printable(value)!r}.", name, "invalid_value"
        )
    return value


def as_integer(value: Any) -> int | None:
    """``value`` as an int if it is a JSON integer (``2`` or ``2.0``), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _integer(body: dict, spec: Field) -> int | None:
    name, value = spec.name, body.get(spec.name)
    if value is None:
        return None
    number = as_integer(value)
    if number is None:
        raise invalid(
            f"'{name}' must be an integer, not {_type_name(value) if not isinstance(value, float) else 'a fractional number'}.",
            name,
            "invalid_type",
        )
    assert spec.minimum is not None and spec.maximum is not None
    if not spec.minimum <= number <= spec.maximum:
        raise invalid(f"'{name}' must be between {int(spec.minimum)} and {int(spec.maximum)}, got {value}.", name, "invalid_value")
    return number


def _number(body: dict, spec: Field) -> float | None:
    name, value = spec.name, body.get(spec.name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(f"'{name}' must be a number, not {_type_name(value)}.", name, "invalid_type")
    assert spec.minimum is not None and spec.maximum is not None
    if not math.isfinite(value) or not spec.minimum <= value <= spec.maximum:
        raise invalid(f"'{name}' must be between {spec.minimum:g} and {spec.maximum:g}, got {value}.", name, "invalid_value")
    return float(value)


def _neutral(body: dict, spec: Field) -> None:
    value = body.get(spec.name)
    if value is None:
        return
    for accepted in spec.choices:
        if isinstance(accepted, bool):
            if value is accepted:
                return
        elif isinstance(accepted, int):
            if as_integer(value) == accepted:
                return
        elif value == accepted:
            return
    shown = ", ".join(json.dumps(v) for v in spec.choices)
    got = printable(json.dumps(value)) if isinstance(value, (str, int, float, bool)) else _type_name(value)
    if len(got) > 80:
        got = got[:77] + "..."
    raise invalid(
        f"'{spec.name}'={got} is not supported by this server (accepted: {shown}, or leave it out).", spec.name, "unsupported_value"
    )


def parse_image_request(body: dict[str, Any], styles: StyleBook) -> ImageRequest:
    """Check every field of ``body``; raise a 400 :class:`APIError` naming the first bad one."""
    unknown = sorted((k for k in body if k not in KNOWN_FIELDS), key=printable)
    if unknown:
        shown = printable(unknown[0])
        if len(shown) > 80:
            shown = shown[:77] + "..."
        raise invalid(f"Unrecognized request argument supplied: {shown}.", shown, "unknown_parameter")
    for spec in FIELDS:
        if spec.kind == "neutral":
            _neutral(body, spec)
    if body.get("prompt") is None:
        raise invalid("'prompt' is required: describe the image to generate.", "prompt", "missing_required_parameter")
    values: dict[str, Any] = {}
    for spec in FIELDS:
        if spec.kind == "string":
            values[spec.name] = _string(body, spec)
        elif spec.kind == "integer":
            values[spec.name] = _integer(body, spec)
        elif spec.kind == "number":
            values[spec.name] = _number(body, spec)

    quality = values["quality"]
    if quality is not None:
        quality = QualityTable.canonical(quality)
        assert quality is not None  # the choices are the alias table's keys
    style = values["style"]
    if style is not None and styles.lookup(style) is None:
        raise invalid(
            f"'style' {printable(style)!r} is not known; use one of {', '.join(styles.names())} (or a label such as 动漫, 写实风格).",
            "style",
            "invalid_value",
        )
    stream = body.get("stream") is True
    partial_images = values["partial_images"] or 0
    if partial_images and not stream:
        message = "'partial_images' only applies to streamed requests: send \"stream\": true as well (or leave it out)."
        raise invalid(message, "partial_images", "invalid_value")
    if stream and values["response_format"] == "url":
        message = "Streamed images arrive as b64_json in the events; leave out 'response_format' (or use b64_json) with \"stream\": true."
        raise invalid(message, "response_format", "invalid_value")
    return ImageRequest(
        prompt=values["prompt"],
        model=values["model"],
        n=values["n"] or 1,
        size=values["size"],
        quality=quality,
        style=style,
        response_format=values["response_format"] or "url",
        output_format=values["output_format"] or "png",
        output_compression=values["output_compression"],
        user=values["user"],
        seed=values["seed"],
        steps=values["steps"],
        guidance_scale=values["guidance_scale"],
        negative_prompt=values["negative_prompt"],
        scheduler=values["scheduler"],
        stream=stream,
        partial_images=partial_images,
        background=str(body.get("background") or "auto"),
    )


__all__ = ["APIError", "FIELDS", "Field", "ImageRequest", "parse_image_request", "parse_json_body"]

"""Image sizes: parsing "WxH" strings and checking them against what a package supports.

Checks run before any inference so that an impossible request fails in milliseconds with a
message, not minutes later inside onnxruntime with a shape error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidRequestError

_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


@dataclass(frozen=True)
class Size:
    width: int
    height: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


def parse_size(value: "str | Size | tuple[int, int] | int") -> Size:
    """Accept "512x512", "512" (square), 512, (w, h) or a Size."""
    if isinstance(value, Size):
        return value
    if isinstance(value, int):
        return Size(value, value)
    if isinstance(value, tuple) and len(value) == 2:
        return Size(int(value[0]), int(value[1]))
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return Size(int(text), int(text))
        match = _SIZE_RE.match(text)
        if match:
            return Size(int(match.group(1)), int(match.group(2)))
    raise InvalidRequestError(
        f"size {value!r} is not understood", hint="give it as WIDTHxHEIGHT, for example 512x512", param="size"
    )


@dataclass(frozen=True)
class SizeRules:
    """What a package can produce, as written in its manifest's ``sizes`` section.

    ``multiple_of`` is the pixel step the UNet accepts (8 x 2**downsamplers); a static package
    accepts exactly ``static`` and nothing else; ``output`` lists extra sizes produced by
    resizing the native image (for models trained below the sizes clients ask for).
    """

    native: Size
    multiple_of: int
    minimum: int
    maximum: int
    static: Size | None = None
    output: tuple[Size, ...] = ()

    @classmethod
    def from_manifest(cls, sizes: dict) -> "SizeRules":
        static = sizes.get("static")
        return cls(
            native=parse_size(sizes["native"]),
            multiple_of=int(sizes.get("multiple_of", 8)),
            minimum=int(sizes.get("min", 64)),
            maximum=int(sizes.get("max", 2048)),
            static=parse_size(static) if static else None,
            output=tuple(parse_size(s) for s in sizes.get("output", [])),
        )

    def resolve(self, requested: "str | Size | tuple[int, int] | int | None") -> tuple[Size, Size]:
        """Return (size the model runs at, size the caller receives) or raise InvalidRequestError."""
        if requested is None or (isinstance(requested, str) and requested.strip().lower() == "auto"):
            return self.static or self.native, self.static or self.native
        size = parse_size(requested)
        if size in self.output:
            return self.static or self.native, size
        if self.static is not None:
            if size != self.static:
                raise InvalidRequestError(
                    f"size {size} is not available: this package was exported with the static shape {self.static}",
                    hint=f"ask for {self.static}, or export a dynamic-shape package",
                    param="size",
                )
            return size, size
        for side, name in ((size.width, "width"), (size.height, "height")):
            if side % 8:
                raise InvalidRequestError(
                    f"size {size}: {name} {side} is not a multiple of 8",
                    hint=f"use a multiple of {self.multiple_of}, for example {self.native}",
                    param="size",
                )
            if side % self.multiple_of:
                raise InvalidRequestError(
                    f"size {size}: {name} {side} is not a multiple of {self.multiple_of}, which this UNet needs",
                    hint=f"use a multiple of {self.multiple_of}, for example {self.native}",
                    param="size",
                )
            if not self.minimum <= side <= self.maximum:
                raise InvalidRequestError(
                    f"size {size}: {name} {side} is outside {self.minimum}..{self.maximum}",
                    hint=f"use a size between {self.minimum} and {self.maximum}, for example {self.native}",
                    param="size",
                )
        return size, size

    def describe(self) -> list[str]:
        """Human-readable list of what can be requested (for errors and `nanoedge info`)."""
        if self.static is not None:
            base = [str(self.static)]
        else:
            base = [f"any WxH, multiples of {self.multiple_of} in {self.minimum}..{self.maximum} (native {self.native})"]
        return base + [f"{s} (resized from {self.static or self.native})" for s in self.output]

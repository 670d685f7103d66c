"""Which size to run the model at for the size a client asks for.

Clients written for hosted APIs ask for 512x512 to 1792x1024, while an edge package is
trained (and fast) at its native size: a 64 px or 512 px model run at 1024 px is slow, needs
several times the memory (it can take the process down) and draws worse images. So a request
is generated directly only when its area is at most ``max_pixels`` (default: the package's
native area); a larger one is generated at the native area with the same aspect ratio and
resized, which is what the manifest's ``sizes.output`` list does for the sizes it names. A
static-shape package runs only its static shape and serves sizes of the same aspect ratio by
resizing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nanoedge.core.errors import InvalidRequestError
from nanoedge.core.sizes import Size, SizeRules, parse_size

from .errors import invalid, to_api_error

#: Sizes the official ImagesResponse schema allows us to echo back.
ECHOABLE_SIZES = frozenset({"1024x1024", "1024x1536", "1536x1024"})


@dataclass(frozen=True)
class SizePlan:
    run: Size
    output: Size


class SizePlanner:
    def __init__(self, rules: SizeRules, default: str | None = None, max_pixels: int | None = None) -> None:
        self.rules = rules
        native = rules.static or rules.native
        self.default = default
        self.max_pixels = max_pixels if max_pixels else native.width * native.height

    def plan(self, requested: str | None) -> SizePlan:
        """Raise a 400 APIError (param ``size``) for a size this server cannot produce."""
        if requested is None or requested.strip().lower() == "auto":
            requested = self.default
            if requested is None:
                native = self.rules.static or self.rules.native
                return SizePlan(native, native)
        try:
            size = parse_size(requested)
        except InvalidRequestError:
            raise invalid(f"size '{requested}' is not understood: give WIDTHxHEIGHT such as 512x512, or 'auto'", "size") from None
        self._check_bounds(size)
        if size in self.rules.output:
            return self._from_rules(size)
        if self.rules.static is not None:
            return self._plan_static(size, self.rules.static)
        return self._plan_dynamic(size)

    def _check_bounds(self, size: Size) -> None:
        low, high = self.rules.minimum, self.rules.maximum
        for side, name in ((size.width, "width"), (size.height, "height")):
            if not low <= side <= high:
                raise invalid(
                    f"size {size}: {name} {side} is outside {low}..{high} pixels; ask for a size such as {self._example()}", "size"
                )
            if side % 8:
                raise invalid(f"size {size}: {name} {side} is not a multiple of 8; ask for a size such as {self._example()}", "size")
        if max(size.width, size.height) > 4 * min(size.width, size.height):
            raise invalid(f"size {size}: the aspect ratio must be between 1:4 and 4:1", "size")

    def _example(self) -> str:
        return str(self.default or self.rules.static or self.rules.native)

    def _from_rules(self, size: Size) -> SizePlan:
        try:
            run, output = self.rules.resolve(size)
        except InvalidRequestError as exc:
            raise to_api_error(exc, "size") from None
        return SizePlan(run, output)

    def _plan_static(self, size: Size, static: Size) -> SizePlan:
        if size == static or size.width * static.height == size.height * static.width:
            return SizePlan(static, size)
        raise invalid(
            f"size {size} is not available: this package only makes {static} images (a static-shape export); "
            f"ask for {static} or another size with the same aspect ratio",
            "size",
        )

    def _plan_dynamic(self, size: Size) -> SizePlan:
        m = self.rules.multiple_of
        area = size.width * size.height
        if area <= self.max_pixels and size.width % m == 0 and size.height % m == 0:
            return self._from_rules(size)
        scale = min(1.0, math.sqrt(self.max_pixels / area))
        run = Size(self._snap(size.width * scale), self._snap(size.height * scale))
        return SizePlan(run, size)

    def _snap(self, side: float) -> int:
        """Largest multiple of ``multiple_of`` not above ``side``, within the package's bounds."""
        m = self.rules.multiple_of
        low = max(m, math.ceil(self.rules.minimum / m) * m)
        high = self.rules.maximum // m * m
        return max(low, min(high, int(side // m) * m))

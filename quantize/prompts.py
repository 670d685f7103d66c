"""Calibration and held-out prompts: the shipped default set, or the user's file.

The file is plain text, one prompt per line, ``#`` comments and blank lines ignored.
Calibration takes prompts from the top; the held-out prompts for the report come from the
bottom, so changing ``--calibration-prompts`` never changes what the report measures on.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from nanoedge.core.errors import InvalidRequestError

DEFAULT_FILE = "prompts.txt"


def parse_prompts(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def load_prompts(path: "str | Path | None" = None) -> list[str]:
    """Prompts from ``path``, or the default set shipped with nanoedge."""
    if path is None:
        text = resources.files("nanoedge.quantize").joinpath(DEFAULT_FILE).read_text(encoding="utf-8")
    else:
        file = Path(path)
        if not file.is_file():
            raise InvalidRequestError(f"prompt file '{file}' does not exist", hint="give a text file with one prompt per line")
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequestError(f"prompt file '{file}' is not UTF-8 text", hint="save it as UTF-8, one prompt per line") from exc
    prompts = parse_prompts(text)
    if not prompts:
        raise InvalidRequestError(f"prompt file '{path}' holds no prompts", hint="write one prompt per line")
    return prompts


def split_prompts(prompts: list[str], calibration: int, evaluation: int) -> tuple[list[str], list[str]]:
    """(calibration prompts from the top, held-out prompts from the bottom), never overlapping."""
    if calibration < 1 or evaluation < 1:
        raise InvalidRequestError(
            "at least one calibration prompt and one held-out prompt are needed",
            param="calibration_prompts" if calibration < 1 else "eval_prompts",
        )
    if calibration + evaluation > len(prompts):
        raise InvalidRequestError(
            f"{calibration} calibration + {evaluation} held-out prompts need "
            f"{calibration + evaluation} prompts, the file has {len(prompts)}",
            hint="ask for fewer calibration_prompts / eval_prompts, or give a longer prompts file",
            param="eval_prompts",
        )
    return prompts[:calibration], prompts[len(prompts) - evaluation :]

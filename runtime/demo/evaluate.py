"""``nanoedge eval``: generate the fixed prompt set with a package and score it with the judge.

Why a fixed set and fixed seeds: the figures must compare packages (FP32 vs INT8, one export
vs another), so every package sees exactly the same prompts and starting noise; only the
package differs. Seeds are ``seed + i`` for image ``i`` of a prompt, as in the pipeline.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Sequence

from PIL import Image, ImageDraw

from .judge import ATTRIBUTES, Judgement, judge_image
from .world import EvalPrompt, evaluation_prompts

log = logging.getLogger(__name__)

_TILE = 64
_LABEL = 22


@dataclass
class PromptResult:
    prompt: EvalPrompt
    images: list[Image.Image]
    judgements: list[Judgement]


@dataclass
class EvalReport:
    """Accuracy per attribute over all prompts and over held-out combinations alone."""

    results: list[PromptResult]
    settings: dict = field(default_factory=dict)

    def accuracy(self, held_out: bool | None = None) -> dict[str, float]:
        """Fraction of images with each attribute right (``held_out``: None = all prompts)."""
        chosen = [r for r in self.results if held_out is None or r.prompt.held_out == held_out]
        scores: dict[str, float] = {}
        for attribute in (*ATTRIBUTES, "all"):
            marks = [j.all_correct if attribute == "all" else j.correct[attribute] for r in chosen for j in r.judgements]
            scores[attribute] = sum(marks) / len(marks) if marks else float("nan")
        return scores

    def as_dict(self) -> dict:
        return {
            "settings": self.settings,
            "images": sum(len(r.images) for r in self.results),
            "accuracy": {"overall": self.accuracy(None), "held_out": self.accuracy(True), "seen": self.accuracy(False)},
            "prompts": [
                {
                    "prompt": r.prompt.prompt,
                    "held_out": r.prompt.held_out,
                    "found": [j.found for j in r.judgements],
                    "correct": [j.correct for j in r.judgements],
                }
                for r in self.results
            ],
        }


def select_prompts(limit: int | None = None) -> list[EvalPrompt]:
    """The fixed prompt set, or its first ``limit`` entries balanced between held-out and seen."""
    prompts = evaluation_prompts()
    if limit is None or limit >= len(prompts):
        return prompts
    held = [p for p in prompts if p.held_out]
    seen = [p for p in prompts if not p.held_out]
    first = held[: (limit + 1) // 2] + seen[: limit // 2]
    return first[:limit]


def evaluate(
    pipeline,
    prompts: Sequence[EvalPrompt] | None = None,
    images_per_prompt: int = 4,
    seed: int = 0,
    steps: int | None = None,
    guidance: float | None = None,
    scheduler: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EvalReport:
    """Generate ``images_per_prompt`` images per prompt with ``pipeline`` and judge each one."""
    prompts = list(prompts) if prompts is not None else evaluation_prompts()
    results = []
    for index, prompt in enumerate(prompts):
        images = pipeline.generate(prompt.prompt, n=images_per_prompt, seed=seed, steps=steps, guidance=guidance, scheduler=scheduler)
        results.append(PromptResult(prompt, images, [judge_image(image, prompt.prompt) for image in images]))
        log.debug("%s: %s", prompt.prompt, [j.found for j in results[-1].judgements])
        if progress is not None:
            progress(index + 1, len(prompts))
    defaults = pipeline.manifest.defaults
    settings = {
        "package": pipeline.id,
        "images_per_prompt": images_per_prompt,
        "seed": seed,
        "steps": steps or defaults.get("steps"),
        "guidance": guidance if guidance is not None else defaults.get("guidance"),
        "scheduler": scheduler or pipeline.manifest.default_scheduler or "package default",
    }
    return EvalReport(results, settings)


def contact_sheet(report: EvalReport, columns_label: str = "") -> Image.Image:
    """One row per prompt: its images side by side, each framed green (all right) or red."""
    rows = report.results
    per_row = max(len(r.images) for r in rows)
    pad = 4
    text_width = 190
    width = text_width + per_row * (_TILE + pad) + pad
    height = _LABEL + len(rows) * (_TILE + pad) + pad
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 4), columns_label or report.settings.get("package", ""), fill=(0, 0, 0))
    for row, result in enumerate(rows):
        top = _LABEL + row * (_TILE + pad) + pad
        label = ("[held out] " if result.prompt.held_out else "") + result.prompt.prompt
        for line, chunk in enumerate(_wrap(label, 30)):
            draw.text((pad, top + 4 + 12 * line), chunk, fill=(0, 0, 0))
        for col, (image, judgement) in enumerate(zip(result.images, result.judgements)):
            left = text_width + col * (_TILE + pad) + pad
            colour = (40, 170, 60) if judgement.all_correct else (210, 40, 40)
            draw.rectangle([left - 2, top - 2, left + _TILE + 1, top + _TILE + 1], outline=colour, width=2)
            sheet.paste(image.convert("RGB").resize((_TILE, _TILE), Image.Resampling.BOX), (left, top))
    return sheet


def _wrap(text: str, width: int) -> list[str]:
    lines, current = [], ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    return lines + [current] if current else lines

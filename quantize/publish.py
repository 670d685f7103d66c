"""Writing the passing candidate: its report, attempts and ranking go into the manifest, then the
folder is moved into place atomically (the output appears complete or not at all)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from nanoedge.core.atomic import staged_directory
from nanoedge.core.manifest import Manifest


def publish(
    candidate: Manifest,
    output: Path,
    report: dict[str, Any],
    attempts: list[dict[str, Any]],
    ranking: list,
    seconds: float,
    overwrite: bool,
) -> Manifest:
    assert candidate.root is not None
    candidate.update_quantization(report=report, attempts=attempts, seconds=round(seconds, 1))
    if ranking:
        candidate.update_quantization(
            sensitivity={
                "metric": "component output PSNR gained with the node's activations in float (teacher-forced, calibration calls)",
                "top": [r.as_dict() for r in ranking[:20]],
            }
        )
    candidate.write(candidate.root)
    with staged_directory(output, overwrite=overwrite) as stage:
        for entry in candidate.root.iterdir():
            shutil.move(str(entry), str(stage / entry.name))
    return Manifest.load(output)

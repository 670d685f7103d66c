"""The probe ``target="auto"`` times CPU targets with: a short image through the real pipeline.

Lives in the runtime because it runs a :class:`Pipeline`; the choice and its cache live in
``nanoedge.targets.autoselect``, which receives this function (targets never import the runtime).
"""

from __future__ import annotations

import gc
from pathlib import Path

#: UNet steps of the timed image (after a one-step warm-up that also pays compilation).
MEASURE_STEPS = 2


def time_image(package_root: Path, target: str, threads: int | None) -> float:
    """Predicted seconds for one default image of the package on ``target``.

    Text encoder + default steps x (UNet time per step of a ``MEASURE_STEPS``-step image) +
    VAE decoder, after a 1-step warm-up image that pays compilation and first allocations.
    """
    from .pipeline import GenerationRequest, Pipeline  # the pipeline calls us while resolving its target

    pipe = Pipeline.load(package_root, target=target, threads=threads, verify=False)
    try:
        default = pipe.resolve(GenerationRequest("auto target probe", seed=0))
        pipe.generate_batch([pipe.resolve(GenerationRequest("auto target probe", seed=0, steps=1))])
        pipe.clear_caches()
        timed = pipe.generate_batch([pipe.resolve(GenerationRequest("auto target probe", seed=0, steps=MEASURE_STEPS))])[0]
        t = timed.timings
        return t["text_encoder_s"] + default.steps * t["unet_s"] / MEASURE_STEPS + t["vae_decoder_s"]
    finally:
        del pipe
        gc.collect()

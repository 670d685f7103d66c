"""The peers' image calls for ``bench/compare_worker.py`` (kinds ``sdcpp`` and ``openvino-genai``).

Each runner loads its model once and returns ``run(latents, (width, height), steps) -> PIL image``
plus an info dict; ``run`` also fills ``info["stages"]`` with the last image's per-stage
seconds where the peer reports them, which docs/speed.md uses to say where a peer's time goes.

- OpenVINO GenAI takes our initial latents through a ``Generator`` subclass whose
  ``randn_tensor`` returns them, and the PNDM scheduler from the export's own scheduler
  config, so its image is comparable pixel by pixel with diffusers'.
- stable-diffusion.cpp draws its initial noise with its own RNG (the binding cannot take
  latents) and has no PNDM: it runs iPNDM on the discrete schedule. Its images are not
  comparable pixel by pixel; the report gives time and memory only for it.
"""

from __future__ import annotations

import time
from typing import Any, Callable

PROMPT = "a photo of a red fox in the snow, highly detailed"  # the same as compare_worker.PROMPT

Runner = Callable[[Any, tuple[int, int], int], Any]


def sdcpp_runner(path: str, guidance: float, options: dict[str, Any] | None = None) -> tuple[Runner, dict[str, Any]]:
    import stable_diffusion_cpp
    from stable_diffusion_cpp import StableDiffusion

    opts = dict(options or {})
    sample_method = opts.pop("sample_method", "ipndm")
    scheduler = opts.pop("scheduler", "discrete")
    seed = int(opts.pop("seed", 0))
    sd = StableDiffusion(model_path=path, vae_decode_only=True, verbose=bool(opts.pop("verbose", True)), **opts)
    info: dict[str, Any] = {
        "scheduler": f"{sample_method}/{scheduler} (sd.cpp has no PNDM)",
        "initial_noise": "sd.cpp's own RNG",
        "options": {**opts, "sample_method": sample_method, "scheduler": scheduler, "seed": seed},
        "binding": getattr(stable_diffusion_cpp, "__version__", "?"),
        "comparable_pixels": False,
    }

    def run(latents, size, steps):
        ticks: list[tuple[float, int, int]] = []
        t0 = time.perf_counter()
        images = sd.generate_image(
            prompt=PROMPT,
            width=size[0],
            height=size[1],
            cfg_scale=guidance,
            sample_steps=steps,
            sample_method=sample_method,
            scheduler=scheduler,
            seed=seed,
            progress_callback=lambda step, total, _t: ticks.append((time.perf_counter(), step, total)),
        )
        t_end = time.perf_counter()
        info["stages"] = _sdcpp_stages(t0, t_end, ticks, steps)
        return images[0]

    return run, info


def _sdcpp_stages(t0: float, t_end: float, ticks: list[tuple[float, int, int]], steps: int) -> dict[str, Any]:
    """Per-stage seconds from sd.cpp's step callbacks (its log lines hold the text encoder's own time).

    The first callback ends text encoding + step 1; step 1 can differ from the mean step, so the
    text encoder is not derived from it: ``until_first_step_s`` is reported as measured.
    """
    sampling = [t for t, _step, total in ticks if total == steps]
    if len(sampling) < 2:
        return {"total_s": round(t_end - t0, 3)}
    step_s = [b - a for a, b in zip(sampling, sampling[1:])]
    mean_step = sum(step_s) / len(step_s)
    return {
        "total_s": round(t_end - t0, 3),
        "unet_step_s": round(mean_step, 3),
        "until_first_step_s": round(sampling[0] - t0, 3),
        "vae_and_rest_s": round(t_end - sampling[-1], 3),
        "steps_seen": len(sampling),
    }


def openvino_genai_runner(path: str, guidance: float, options: dict[str, Any] | None = None) -> tuple[Runner, dict[str, Any]]:
    from pathlib import Path

    import numpy as np
    import openvino as ov
    import openvino_genai as genai

    opts = dict(options or {})
    scheduler_name = opts.pop("scheduler", "PNDM")
    device = opts.pop("device", "CPU")
    pipe = genai.Text2ImagePipeline(path, device, **opts)
    scheduler_type = getattr(genai.Scheduler.Type, scheduler_name)
    pipe.set_scheduler(genai.Scheduler.from_config(str(Path(path) / "scheduler" / "scheduler_config.json"), scheduler_type))
    info: dict[str, Any] = {
        "scheduler": scheduler_name,
        "device": device,
        "openvino": ov.__version__,
        "openvino_genai": getattr(genai, "__version__", "?"),
        "initial_noise": "shared latents",
        "comparable_pixels": True,
    }

    class SharedLatents(genai.Generator):
        """Hands the pipeline our initial latents instead of drawing its own."""

        def __init__(self, latents):
            genai.Generator.__init__(self)
            self.latents = np.ascontiguousarray(latents, dtype=np.float32)

        def next(self):
            return 0.0

        def randn_tensor(self, shape):
            if tuple(shape) != self.latents.shape:
                raise ValueError(f"pipeline asked for noise of shape {tuple(shape)}, the latents are {self.latents.shape}")
            return ov.Tensor(self.latents)

    def run(latents, size, steps):
        from PIL import Image

        tensor = pipe.generate(
            PROMPT, width=size[0], height=size[1], num_inference_steps=steps, guidance_scale=guidance, generator=SharedLatents(latents)
        )
        info["stages"] = _openvino_stages(pipe)
        return Image.fromarray(np.asarray(tensor.data)[0])

    return run, info


def _openvino_stages(pipe) -> dict[str, Any]:
    """GenAI's own per-model inference durations for the last generate (milliseconds -> seconds)."""
    stages: dict[str, Any] = {}
    try:
        metrics = pipe.get_performance_metrics()
    except Exception as exc:  # an older GenAI without metrics: time and memory are still measured
        return {"error": str(exc)[:200]}
    # generate: total ms; text encoder: {encoder: ms}; UNet: mean/std ms of one UNet call; VAE decoder: ms
    for name, getter in (
        ("total_s", "get_generate_duration"),
        ("text_encoder_s", "get_text_encoder_infer_duration"),
        ("unet_step_s", "get_unet_infer_duration"),
        ("vae_decoder_s", "get_vae_decoder_infer_duration"),
    ):
        fn = getattr(metrics, getter, None)
        if fn is None:
            continue
        try:
            value = fn()
        except Exception:  # a metric this pipeline does not record
            continue
        if isinstance(value, dict):
            value = sum(float(v) for v in value.values())
        elif hasattr(value, "mean"):
            value = value.mean
        stages[name] = round(float(value) / 1000.0, 3)
    return stages

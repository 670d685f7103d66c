"""One variant of ``bench/compare.py``, in a process of its own: load, generate, report.

    python bench/compare_worker.py KIND PATH --size 512x512 --steps 25 --guidance 7.5 \
        --latents LATENTS.npy --images 1 --image OUT.png --json OUT.json [--started EPOCH]

KIND is ``diffusers`` (a diffusers folder, PyTorch FP32 StableDiffusionPipeline), ``optimum``
(an optimum-onnx export folder, ORTStableDiffusionPipeline on the CPU provider) or
``nanoedge`` (a nanoedge package; ``nanoedge-reduce-memory``: the same, loaded with
``reduce_memory=True``, each model loaded for its stage and released after), or a peer
(``sdcpp``: stable-diffusion.cpp on a GGUF file; ``openvino-genai``: OpenVINO GenAI on an
optimum-intel export; bench/peers_runners.py says how close each gets to the rest). All three get the same prompt, the PNDM scheduler from
their folder, the same step count and guidance, and the same initial latents (read from
LATENTS.npy), so their images are comparable pixel by pixel.

The JSON holds wall-clock stamps (``time.time()``, comparable with the parent's) for the
process start, imports done, model loaded and each image done, plus each image's generation
seconds. ``--started`` is the parent's stamp taken just before it spawned this process, so
cold start includes interpreter start-up. Peak RSS is the kernel's high-water mark of this
process (``VmHWM`` in /proc/self/status, read last; the parent's ``wait4`` maximum is not used
because it can report the forking parent's size).
"""

from __future__ import annotations

import time

_PROCESS_T0 = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

PROMPT = "a photo of a red fox in the snow, highly detailed"


def _pndm_runner(pipe, guidance: float):
    """The image call shared by the diffusers and optimum pipelines: PNDM, our latents, one PIL image."""
    import torch
    from diffusers import PNDMScheduler

    pipe.scheduler = PNDMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)

    def run(latents, size, steps):
        with torch.inference_mode():
            return pipe(PROMPT, height=size[1], width=size[0], num_inference_steps=steps, guidance_scale=guidance,
                        latents=torch.from_numpy(latents.copy()), output_type="pil").images[0]

    return run


def _diffusers_runner(path: str, guidance: float):
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(path, torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False)
    run = _pndm_runner(pipe, guidance)
    return run, {"torch": torch.__version__, "torch_threads": torch.get_num_threads(), "scheduler": type(pipe.scheduler).__name__}


def _optimum_runner(path: str, guidance: float):
    from optimum.onnxruntime import ORTStableDiffusionPipeline

    pipe = ORTStableDiffusionPipeline.from_pretrained(path, provider="CPUExecutionProvider")
    run = _pndm_runner(pipe, guidance)
    return run, {"scheduler": type(pipe.scheduler).__name__}


def _nanoedge_runner(path: str, guidance: float, reduce_memory: bool = False, target: str = "cpu"):
    from nanoedge.runtime import Pipeline

    pipe = Pipeline.load(path, target=target, reduce_memory=reduce_memory)
    scheduler = pipe.manifest.scheduler.get("default")
    info = {"scheduler": scheduler, "precision": pipe.manifest.component("unet").get("precision"),
            "quantization": (pipe.manifest.quantization or {}).get("scheme"), "reduce_memory": reduce_memory,
            "target": pipe.profile.name}

    from nanoedge.runtime.pipeline import GenerationRequest

    def run(latents, size, steps):
        # generate() with the stage timings kept (docs/speed.md compares them with the peers')
        request = GenerationRequest(PROMPT, None, 1, 0, f"{size[0]}x{size[1]}", steps, guidance, None)
        result = pipe.generate_batch([request], latents=latents)[0]
        info["stages"] = {k: round(v, 3) for k, v in result.timings.items()}
        if "unet_s" in result.timings:
            info["stages"]["unet_step_s"] = round(result.timings["unet_s"] / steps, 3)
        return result.images[0]

    return run, info


def peak_rss_mib() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


RUNNERS = {"diffusers": _diffusers_runner, "optimum": _optimum_runner, "nanoedge": _nanoedge_runner,
           "nanoedge-reduce-memory": lambda path, guidance, **kw: _nanoedge_runner(path, guidance, reduce_memory=True, **kw),
           # the peers (bench/peers.py): imported only when run, so the worker needs neither installed
           "sdcpp": lambda path, guidance, **kw: __import__("peers_runners").sdcpp_runner(path, guidance, **kw),
           "openvino-genai": lambda path, guidance, **kw: __import__("peers_runners").openvino_genai_runner(path, guidance, **kw)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=sorted(RUNNERS))
    parser.add_argument("path")
    parser.add_argument("--size", required=True, help="WxH")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--guidance", type=float, required=True)
    parser.add_argument("--latents", required=True, help=".npy of shape [1, 4, H/8, W/8]")
    parser.add_argument("--images", type=int, default=1, help="images generated one after the other (the first is the cold one)")
    parser.add_argument("--image", required=True, help="where the last image is written (PNG)")
    parser.add_argument("--json", dest="json_out", required=True)
    parser.add_argument("--started", type=float, default=None, help="parent's time.time() just before spawning")
    parser.add_argument("--target", default=None, help="nanoedge kinds: the target profile (default cpu)")
    parser.add_argument("--options", default=None, help="peer kinds: JSON object of the peer's load/generate options")
    args = parser.parse_args(argv)
    if args.target and not args.kind.startswith("nanoedge"):
        parser.error("--target applies to nanoedge kinds only")
    if args.options and args.kind not in ("sdcpp", "openvino-genai"):
        parser.error("--options applies to the peer kinds (sdcpp, openvino-genai) only")

    import numpy as np

    width, height = (int(v) for v in args.size.lower().split("x"))
    latents = np.load(args.latents).astype(np.float32)
    t_args = time.time()
    extra = {"target": args.target} if args.target else {}
    if args.options:
        extra["options"] = json.loads(args.options)
    run, info = RUNNERS[args.kind](args.path, args.guidance, **extra)
    t_loaded = time.time()
    image_s, image_cpu_s, done = [], [], []
    image = None
    for _ in range(args.images):
        t0, c0 = time.perf_counter(), time.process_time()
        image = run(latents, (width, height), args.steps)
        image_s.append(time.perf_counter() - t0)
        image_cpu_s.append(time.process_time() - c0)  # CPU seconds of every thread of this process
        done.append(time.time())
    assert image is not None
    image.save(args.image)
    record = {
        "peak_rss_mib": peak_rss_mib(),
        "kind": args.kind,
        "path": args.path,
        "pid": os.getpid(),
        "python": sys.version.split()[0],
        "size": args.size,
        "steps": args.steps,
        "guidance": args.guidance,
        "spawned_at": args.started,
        "process_t0": _PROCESS_T0,
        "args_parsed": t_args,
        "loaded": t_loaded,
        "image_done": done,
        "image_s": image_s,
        "image_cpu_s": image_cpu_s,
        "info": info,
    }
    Path(args.json_out).write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

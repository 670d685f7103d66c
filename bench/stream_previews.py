"""How much do streamed previews slow the final image?  (issue 21: at most 10%)

    python bench/stream_previews.py [-m PACKAGE] [--size 512x512] [--steps 20] [--rounds 7] [--partial-images 3] [--max-pixels N]

Starts ``nanoedge serve``'s app in-process on 127.0.0.1 (no cache, no warm-up skipped) and times,
from the client, the wall time until the final image has arrived for the same seeded request
sent three ways, taking turns within every round so background load falls on all of them:

* ``plain``   - ``stream: false``, ``response_format: b64_json`` (the image in one JSON answer)
* ``stream0`` - ``stream: true, partial_images: 0`` (SSE framing only)
* ``streamN`` - ``stream: true, partial_images: N`` (N previews: clean-latent estimate, cheap
  decode, resize, encode and send, while the UNet goes on)

Prints per mode the median and fastest wall time and the median CPU seconds of the whole
process (server threads included: steadier than wall time on a shared machine), each as a
ratio to ``plain`` (the figure the issue asks for). Seeds
differ per round (so the result cache cannot answer) and are equal across modes within a round.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from server_support import serve  # noqa: E402

from nanoedge.runtime.pipeline import Pipeline  # noqa: E402
from nanoedge.targets.cpuinfo import cpu_info  # noqa: E402


def timed(client: httpx.Client, url: str, body: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this whole process: server, worker and client) for one request."""
    started, cpu = time.perf_counter(), time.process_time()
    if body.get("stream"):
        finals = 0
        with client.stream("POST", url, json=body) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if line == "event: image_generation.completed":
                    finals += 1
        assert finals == body.get("n", 1), "the stream ended without its final image"
    else:
        response = client.post(url, json=body)
        response.raise_for_status()
    return time.perf_counter() - started, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--model", default=None, help="package folder (default: the built-in model)")
    parser.add_argument("--size", default="512x512")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--partial-images", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-pixels", type=int, default=None,
                        help="as nanoedge serve's: e.g. 65536 runs the 64 px model at 256x256 (previews at full size)")
    args = parser.parse_args()

    pipeline = Pipeline.load(args.model, threads=args.threads)
    modes = {
        "plain": {"response_format": "b64_json"},
        "stream0": {"stream": True, "partial_images": 0},
        f"stream{args.partial_images}": {"stream": True, "partial_images": args.partial_images},
    }
    times: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
    with serve(pipeline, cache_dir=None, max_batch=1, max_pixels=args.max_pixels) as server, httpx.Client(timeout=600) as client:
        url = f"{server.api_url}/images/generations"
        base = {"prompt": "a lighthouse at dusk", "size": args.size, "steps": args.steps}
        for mode, extra in modes.items():  # warm every path once
            timed(client, url, {**base, "seed": 10_000, **extra})
        for round_ in range(args.rounds):
            order = list(modes) if round_ % 2 == 0 else list(reversed(modes))
            for mode in order:
                times[mode].append(timed(client, url, {**base, "seed": round_, **modes[mode]}))
    plain = statistics.median(t[0] for t in times["plain"])
    plain_cpu = statistics.median(t[1] for t in times["plain"])
    run = server.state.service.sizes.plan(args.size).run
    print(f"package: {pipeline.id} ({pipeline.manifest.root}), size {args.size} (generated at {run}), {args.steps} steps, "
          f"decoder {pipeline.decoder['family']}")
    print(f"CPU: {cpu_info().describe()}, {len(__import__('os').sched_getaffinity(0))} cores visible; {args.rounds} interleaved rounds")
    print(f"{'mode':<10} {'median s':>9} {'min s':>7} {'ratio':>7} {'ratio(min)':>10} {'CPU s':>7} {'CPU ratio':>9}")
    plain_min = min(t[0] for t in times["plain"])
    for mode, values in times.items():
        wall = [t[0] for t in values]
        cpu = statistics.median(t[1] for t in values)
        median = statistics.median(wall)
        ratios = f"{median / plain:7.3f} {min(wall) / plain_min:10.3f} {cpu:7.3f} {cpu / plain_cpu:9.3f}"
        print(f"{mode:<10} {median:9.3f} {min(wall):7.3f} {ratios}")


if __name__ == "__main__":
    main()

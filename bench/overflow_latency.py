"""What the overflow hop costs: a request sent to the upstream directly vs through a local server.

    python bench/overflow_latency.py [-m PACKAGE] [--rounds 200] [--size 512x512] [--json]

Starts two `nanoedge serve` processes on 127.0.0.1 with the same package: the *upstream*
(with ``--alias remote-model``) and the *local* one (``--upstream`` pointing at the first).
Requests name ``remote-model``, which the local server does not serve, so it forwards every
one (reason ``unserved-model``): the path is client -> local -> upstream -> local -> client.
The request is seeded and answered from the upstream's result cache (one warm-up request
fills it), so no generation happens and what is left is HTTP, JSON and the relay of a PNG in
``b64_json``. Each round sends the request once directly to the upstream and once through the
local server, in alternating order, on keep-alive connections (one httpx client per path), so
background load falls on both alike. Both answers must carry the same image.

Printed: the CPU and load average, median / p10 / p90 latency of each path, the median hop
(via - direct, per round) and the same for ``GET /healthz`` of each server (one round trip
with no work: the floor of any request on this machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import httpx
from serve_process import ServeProcess

from nanoedge.targets.cpuinfo import cpu_info

PROMPT = "a lighthouse on a cliff at dusk"


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"median_ms": statistics.median(values) * 1e3, "p10_ms": pick(0.1) * 1e3, "p90_ms": pick(0.9) * 1e3}


def timed(client: httpx.Client, method: str, url: str, **kwargs) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = client.request(method, url, **kwargs)
    return time.perf_counter() - started, response


def measure(package: str | None, rounds: int, size: str | None = None) -> dict:
    cache = tempfile.mkdtemp(prefix="overflow-cache-")
    model = ["-m", package] if package else []
    upstream = ServeProcess("upstream", [*model, "--alias", "remote-model", "--cache-dir", cache])
    local = None
    try:
        local = ServeProcess("local", [*model, "--upstream", upstream.api_url, "--cache-max-mb", "0"])
        body = {"model": "remote-model", "prompt": PROMPT, "seed": 1, "response_format": "b64_json"}
        if size:
            body["size"] = size
        direct_client, via_client = httpx.Client(timeout=300), httpx.Client(timeout=300)
        direct_url, via_url = f"{upstream.api_url}/images/generations", f"{local.api_url}/images/generations"
        first = direct_client.post(direct_url, json=body)  # generates once and fills the upstream's cache
        first.raise_for_status()
        image = first.json()["data"][0]["b64_json"]
        paths = {"direct": (direct_client, direct_url), "via_local": (via_client, via_url)}
        times: dict[str, list[float]] = {"direct": [], "via_local": []}
        health: dict[str, list[float]] = {"direct": [], "via_local": []}
        hops: list[float] = []
        for i in range(rounds + 3):  # 3 rounds of warm-up (connections, first relays), not counted
            order = ["direct", "via_local"] if i % 2 == 0 else ["via_local", "direct"]
            took = {}
            for name in order:
                client, url = paths[name]
                took[name], response = timed(client, "POST", url, json=body)
                response.raise_for_status()
                if response.headers.get("x-cache") != "hit" or response.json()["data"][0]["b64_json"] != image:
                    raise RuntimeError(f"{name}: not the cached image (X-Cache {response.headers.get('x-cache')})")
                if name == "via_local" and response.headers.get("x-nanoedge-served-by") != "upstream":
                    raise RuntimeError("the local server did not forward the request")
                base = upstream.base_url if name == "direct" else local.base_url
                seconds, _ = timed(client, "GET", f"{base}/healthz")
                if i >= 3:
                    health[name].append(seconds)
            if i >= 3:
                for name in order:
                    times[name].append(took[name])
                hops.append(took["via_local"] - took["direct"])
        direct_client.close()
        via_client.close()
        return {
            "cpu": cpu_info().describe(),
            "cores": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "rounds": rounds,
            "size": size or "the package default",
            "image_b64_bytes": len(image),
            "generation": {name: summary(values) for name, values in times.items()},
            "hop_median_ms": statistics.median(hops) * 1e3,
            "healthz_upstream": summary(health["direct"]),
            "healthz_local": summary(health["via_local"]),
        }
    finally:
        if local is not None:
            local.stop()
        upstream.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--model", default=None, help="package folder (default: the built-in model)")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--size", default=None, help="requested size (default: the package's); the PNG relayed grows with it")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    result = measure(args.model, args.rounds, args.size)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"CPU: {result['cpu']} ({result['cores']} cores), load average {result['load_average']}")
    print(f"{result['rounds']} rounds, size {result['size']}, cache hits, b64_json of {result['image_b64_bytes']} bytes")
    for name, row in result["generation"].items():
        print(f"  POST {name:10s} median {row['median_ms']:7.2f} ms  p10 {row['p10_ms']:7.2f}  p90 {row['p90_ms']:7.2f}")
    print(f"  overflow hop (via_local - direct, median per round): {result['hop_median_ms']:.2f} ms")
    for name in ("healthz_upstream", "healthz_local"):
        row = result[name]
        print(f"  GET /healthz {name[8:]:9s} median {row['median_ms']:7.2f} ms  p90 {row['p90_ms']:7.2f}")


if __name__ == "__main__":
    main()

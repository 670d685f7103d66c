"""Load test of `nanoedge serve`: throughput and latency with and without batching, side by side.

    python bench/serve_load.py -m PACKAGE [--concurrency 1,4,16] [--batch 1,4] [--requests 64] [--json]
    python bench/serve_load.py [-m PACKAGE] --setups local,ray1,ray2 --batch 4 --concurrency 1,16

Starts one `nanoedge serve` process per ``--max-batch`` value (1 = no batching) on 127.0.0.1,
then, for each concurrency level, sends ``--requests`` unseeded ``POST /v1/images/generations``
(``response_format=b64_json``, one image each, the package's default size and steps) from an
httpx AsyncClient limited by an ``asyncio.Semaphore`` (the pattern our users' batch clients
use). The servers are measured in turns (batch 1, batch 4, batch 1, batch 4...), ``--rounds``
times per level, so background load on a shared machine falls on both alike. Reported per
cell: images/s (images / wall time of the round, summed over rounds), p50 and p99 of request
latency (over all rounds), and the mean number of images per UNet batch read from the
server's own /metrics. The result cache is disabled so every request is generated.

``--setups`` compares hosting modes instead, all at the one ``--batch`` value: ``local`` is the
single-process server, ``rayN`` is ``--engine ray --replicas N`` on its own local Ray cluster,
each replica reserving ``cores / N`` CPUs with as many onnxruntime threads (so every setup has
the machine's cores: ``ray1`` differs from ``local`` only by the Ray hop). Without ``-m`` the
built-in model is served.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass, field

import httpx
from serve_process import ServeProcess

log = logging.getLogger("bench.serve_load")


class Server(ServeProcess):
    """A server under load at one ``--max-batch``; the result cache is off so every request generates."""

    def __init__(self, package: str | None, max_batch: int, extra: list[str], ready_timeout: float = 120) -> None:
        self.max_batch = max_batch
        model = ["-m", package] if package else []
        super().__init__(f"b{max_batch}", [*model, "--max-batch", str(max_batch), "--max-queue", "256", "--cache-max-mb", "0", *extra],
                         ready_timeout=ready_timeout)

    def batch_counts(self) -> tuple[float, float]:
        """(images, batches) so far, from the server's nanoedge_batch_images histogram."""
        text = httpx.get(f"{self.base_url}/metrics", timeout=10).text
        total = re.search(r"^nanoedge_batch_images_sum (\S+)$", text, re.M)
        count = re.search(r"^nanoedge_batch_images_count (\S+)$", text, re.M)
        return float(total.group(1)), float(count.group(1))


def setup_args(name: str, cores: int) -> list[str]:
    """Extra ``nanoedge serve`` flags of a ``--setups`` name: ``local`` or ``rayN``."""
    if name == "local":
        return []
    match = re.fullmatch(r"ray(\d+)", name)
    if not match or int(match.group(1)) < 1:
        raise SystemExit(f"unknown setup {name!r}: use local or rayN (N replicas), e.g. local,ray1,ray2")
    replicas = int(match.group(1))
    return ["--engine", "ray", "--replicas", str(replicas), "--replica-cpus", f"{cores / replicas:g}"]


@dataclass
class Cell:
    concurrency: int
    max_batch: int
    setup: str = ""
    latencies: list[float] = field(default_factory=list)
    images: int = 0
    wall: float = 0.0
    failures: int = 0
    batch_images: float = 0.0
    batches: float = 0.0

    def row(self) -> dict:
        lat = sorted(self.latencies)
        p99 = lat[min(len(lat) - 1, max(0, round(0.99 * len(lat)) - 1))] if lat else float("nan")
        return {
            "concurrency": self.concurrency,
            "setup": self.setup,
            "max_batch": self.max_batch,
            "images_per_s": self.images / self.wall if self.wall else 0.0,
            "p50_ms": statistics.median(lat) * 1000 if lat else float("nan"),
            "p99_ms": p99 * 1000,
            "mean_batch": self.batch_images / self.batches if self.batches else 0.0,
            "requests": len(lat),
            "failures": self.failures,
        }


async def run_round(base_url: str, concurrency: int, requests: int, cell: Cell) -> None:
    semaphore = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=600, limits=limits) as client:

        async def one(i: int) -> None:
            async with semaphore:
                started = time.perf_counter()
                response = await client.post(
                    "/v1/images/generations", json={"prompt": f"a lighthouse, variation {i}", "response_format": "b64_json"}
                )
                elapsed = time.perf_counter() - started
                if response.status_code == 200:
                    cell.latencies.append(elapsed)
                    cell.images += len(response.json()["data"])
                else:
                    cell.failures += 1

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(requests)))
        cell.wall += time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--model", default=None, help="package folder [default: the built-in model]")
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated client concurrency levels")
    parser.add_argument("--batch", default="1,4", help="comma-separated --max-batch values (1 = no batching)")
    parser.add_argument("--requests", type=int, default=48, help="requests per level and round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per level")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads per server")
    parser.add_argument("--setups", default=None,
                        help="compare hosting modes at one --batch: comma-separated local and rayN (N Ray replicas), e.g. local,ray1,ray2")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would drown the progress

    levels = [int(c) for c in args.concurrency.split(",")]
    batches = [int(b) for b in args.batch.split(",")]
    extra = ["--threads", str(args.threads)] if args.threads else []
    if args.setups:
        if len(batches) != 1:
            raise SystemExit("--setups compares hosting modes at one --batch value")
        cores = os.cpu_count() or 1
        plans = {name: (batches[0], extra + setup_args(name, cores)) for name in args.setups.split(",")}
    else:
        plans = {f"max-batch {b}": (b, extra) for b in batches}
    servers = {}
    cells: list[Cell] = []
    try:
        for name, (b, flags) in plans.items():
            log.info("starting %s: nanoedge serve --max-batch %d %s", name, b, " ".join(flags))
            servers[name] = Server(args.model, b, flags, ready_timeout=300)
        for level in levels:
            row = {name: Cell(level, plans[name][0], name) for name in plans}
            for round_index in range(args.rounds):
                for name, server in servers.items():
                    before = server.batch_counts()
                    asyncio.run(run_round(server.base_url, level, args.requests, row[name]))
                    after = server.batch_counts()
                    row[name].batch_images += after[0] - before[0]
                    row[name].batches += after[1] - before[1]
                    log.info("concurrency %d, %s, round %d: %.2f images/s so far", level, name, round_index + 1,
                             row[name].images / row[name].wall)
            cells += row.values()
    finally:
        for server in servers.values():
            server.stop()

    rows = [c.row() for c in cells]
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(
        f"{'concurrency':>11} {'setup':>12} {'max-batch':>9} {'images/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'mean batch':>10} "
        f"{'requests':>8} {'failed':>6}"
    )
    for r in rows:
        print(
            f"{r['concurrency']:>11} {r['setup']:>12} {r['max_batch']:>9} {r['images_per_s']:>9.2f} {r['p50_ms']:>8.0f} "
            f"{r['p99_ms']:>8.0f} {r['mean_batch']:>10.2f} {r['requests']:>8} {r['failures']:>6}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

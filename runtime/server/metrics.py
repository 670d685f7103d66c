"""Prometheus metrics, written by hand in the text exposition format.

Callers of hosted APIs record success rate, latency and error types themselves; a server
that exposes them lets a scraper do it once. The set is small and fixed (no client library
needed): requests by path and status, request latency, queue depth, images generated, batch
sizes, inference time and cache hits/misses. Path labels use route templates, so image file
names never become label values.
"""

from __future__ import annotations

import bisect
import threading
from typing import Callable

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def render(self, name: str, labels: str = "") -> list[str]:
        lines, running = [], 0
        sep = "," if labels else ""
        for bound, count in zip(self.buckets, self.counts):
            running += count
            lines.append(f'{name}_bucket{{{labels}{sep}le="{bound:g}"}} {running}')
        lines.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        suffix = f"{{{labels}}}" if labels else ""
        lines.append(f"{name}_sum{suffix} {self.total:.6f}")
        lines.append(f"{name}_count{suffix} {self.count}")
        return lines


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Counters and histograms for one server; every method is thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[str, Histogram] = {}
        self.images_generated = 0
        self.cache_hits = 0
        self.cache_misses = 0
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.inference_seconds = Histogram(LATENCY_BUCKETS)
        self.gauges: dict[str, Callable[[], float]] = {}
        self.counters: dict[str, tuple[str, Callable[[], float]]] = {}
        #: name -> (help, {sorted (label, value) pairs: count}), for counters kept here by label.
        self.labelled: dict[str, tuple[str, dict[tuple[tuple[str, str], ...], int]]] = {}
        self.collectors: list[Callable[[], list[str]]] = []

    def observe_request(self, method: str, path: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (method, path, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            self.latency.setdefault(path, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def observe_batch(self, images: int, seconds: float) -> None:
        with self._lock:
            self.images_generated += images
            self.batch_size.observe(images)
            self.inference_seconds.observe(seconds)

    def count_cache(self, hit: bool) -> None:
        with self._lock:
            if hit:
                self.cache_hits += 1
            else:
                self.cache_misses += 1

    def increment(self, name: str, help_text: str, **labels: str) -> None:
        """Add one to the counter ``name`` with these labels (e.g. served_by, status)."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            counts = self.labelled.setdefault(name, (help_text, {}))[1]
            counts[key] = counts.get(key, 0) + 1

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        """Register a value read at scrape time (queue depth, readiness...)."""
        self.gauges[name] = read

    def counter(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """Register a counter kept elsewhere (the worker's), read at scrape time."""
        self.counters[name] = (help_text, read)

    def collector(self, render: Callable[[], list[str]]) -> None:
        """Register lines (HELP/TYPE and labelled samples) written at scrape time by their
        owner, e.g. the per-replica series of ``ray_host.py``."""
        self.collectors.append(render)

    def render(self) -> str:
        with self._lock:
            out = [
                "# HELP nanoedge_requests_total HTTP requests by method, route and status.",
                "# TYPE nanoedge_requests_total counter",
            ]
            for (method, path, status), count in sorted(self.requests.items()):
                out.append(f'nanoedge_requests_total{{method="{method}",path="{_escape(path)}",status="{status}"}} {count}')
            out += [
                "# HELP nanoedge_request_duration_seconds Time to answer a request, by route.",
                "# TYPE nanoedge_request_duration_seconds histogram",
            ]
            for path, histogram in sorted(self.latency.items()):
                out += histogram.render("nanoedge_request_duration_seconds", f'path="{_escape(path)}"')
            out += [
                "# HELP nanoedge_images_generated_total Images produced by the model (cache hits excluded).",
                "# TYPE nanoedge_images_generated_total counter",
                f"nanoedge_images_generated_total {self.images_generated}",
                "# HELP nanoedge_cache_hits_total Seeded requests answered from the result cache.",
                "# TYPE nanoedge_cache_hits_total counter",
                f"nanoedge_cache_hits_total {self.cache_hits}",
                "# HELP nanoedge_cache_misses_total Seeded requests the result cache did not hold.",
                "# TYPE nanoedge_cache_misses_total counter",
                f"nanoedge_cache_misses_total {self.cache_misses}",
                "# HELP nanoedge_batch_images Images per UNet batch.",
                "# TYPE nanoedge_batch_images histogram",
                *self.batch_size.render("nanoedge_batch_images"),
                "# HELP nanoedge_inference_seconds Time per batch in the inference worker.",
                "# TYPE nanoedge_inference_seconds histogram",
                *self.inference_seconds.render("nanoedge_inference_seconds"),
            ]
            for name, (help_text, counts) in sorted(self.labelled.items()):
                out += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
                for key, count in sorted(counts.items()):
                    labels = ",".join(f'{label}="{_escape(value)}"' for label, value in key)
                    out.append(f"{name}{{{labels}}} {count}")
            gauges = dict(self.gauges)
            counters = dict(self.counters)
            collectors = list(self.collectors)
        for name, (help_text, read) in sorted(counters.items()):
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} counter", f"{name} {float(read()):g}"]
        for name, read in sorted(gauges.items()):
            out += [f"# TYPE {name} gauge", f"{name} {float(read()):g}"]
        for render in collectors:
            out += render()
        return "\n".join(out) + "\n"

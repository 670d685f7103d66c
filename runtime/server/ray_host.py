"""Ray Serve replicas as the executor of ``nanoedge serve --engine ray`` (the ``[ray]`` extra).

The only module that imports Ray, and only inside functions, so the lean runtime and the
single-process server never need it. The HTTP ingress stays the server's own app (same routes,
envelopes, keys, cache, queue and micro-batching); Ray does what a home-made balancer would do
badly: placing replicas on the cluster's nodes (``replica_cpus`` each), restarting a replica
whose process dies (Serve's health checks), routing each batch to a free replica.

* :class:`ReplicaRunner` is the Serve deployment: each replica loads the package once, warms
  up, then runs one batch at a time (``max_ongoing_requests=1``). A batch is a streaming call:
  it yields the previews a streamed request asked for (rendered in the replica, where the
  latents are) and finally the results (PIL images, encoded by the ingress like in-process
  ones, so a PNG is byte-identical to the single-process server's).
* :class:`RayRunner` is the worker's :class:`~.worker.BatchGenerator` on the ingress side,
  called by one lane per replica. A replica that dies mid-batch costs one retry on another
  replica, then a 503 ``replica_unavailable``; with no replica running, ``no_replicas``.
  Cancelling (client gone, timeout) cancels the Serve request; the replica stops at the next
  denoising step.
* :class:`ReplicaBook` watches Serve's replica states (readiness, /healthz) and keeps the
  per-replica series of /metrics, labelled ``{replica, pid, node}``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from nanoedge.core.errors import InvalidRequestError
from nanoedge.runtime.pipeline import Pipeline
from nanoedge.runtime.preview import DenoiseStep, preview_steps
from nanoedge.runtime.requests import CancelCheck, GenerationCancelled, GenerationResult, ResolvedRequest

from .hosting import RenderedStep, no_replicas, replica_unavailable, warm_up_pipeline
from .metrics import Metrics
from .settings import ServerSettings
from .worker import StepFanout

log = logging.getLogger(__name__)

# Read by Ray when it is imported: without it, Ray 2.60 ignores _node_ip_address="127.0.0.1" and
# the local cluster's servers listen on the machine's public address. Import this module before
# Ray (the CLI does).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# Ray's C++ failure-signal handler takes SIGTERM before the server's drain (lifecycle.py) and
# aborts the process when Ray shuts down afterwards (exit 134 instead of a clean 0).
os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
# An edge server works offline: no usage reports from a cluster this process starts.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

DEPLOYMENT = "NanoedgeReplica"
_apps = itertools.count(1)

#: (start, stop, previews wanted) of the rows of a batch whose request streams previews.
PreviewPlan = list[tuple[int, int, int]]


@dataclass(frozen=True)
class RayOptions:
    """How to host the replicas; the CLI maps ``--replicas``, ``--ray-address``, ``--replica-cpus``."""

    package: str
    replicas: int = 1
    #: ``None``: start a local Ray (loopback only, no dashboard); else joined ("auto" or host:port).
    address: str | None = None
    #: CPUs Ray reserves for each replica (placement); onnxruntime gets that many threads unless ``threads``.
    replica_cpus: float = 1.0
    target: str = "cpu"
    threads: int | None = None
    two_pass: bool = False
    #: Serve's health check of each replica (a dead process is noticed within about this).
    health_check_period_s: float = 1.0

    @property
    def replica_threads(self) -> int:
        return self.threads or max(1, int(self.replica_cpus))


# -- the replica (runs in a Ray worker process) ----------------------------------------------------
class ReplicaRunner:
    """One replica: the package loaded once, one batch at a time."""

    def __init__(self, package: str, target: str, threads: int | None, two_pass: bool) -> None:
        self.pipeline = Pipeline.load(package, target=target, threads=threads, two_pass=two_pass)
        warm_up_pipeline(self.pipeline)
        self.identity = _identity()
        log.info("replica %s ready (pid %s on %s)", self.identity["replica"], self.identity["pid"], self.identity["node"])

    async def run(self, requests: Sequence[ResolvedRequest], plan: PreviewPlan):
        """Yield ``("start", identity)``, then ``("step", index, total, pixels)`` per rendered
        preview step, then ``("result", results, identity, seconds)``. Cancelled (the ingress
        cancels the Serve request), the generation stops at its next denoising step.

        The first event tells the ingress which replica runs the batch (``/metrics`` shows it
        busy). Serve itself resends a request whose replica dies before the first event; after
        it, the ingress retries (``RayRunner``)."""
        yield ("start", self.identity)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple] = asyncio.Queue()
        cancelled = threading.Event()

        def on_step(step: DenoiseStep) -> None:
            pixels = {}
            for start, stop, wanted in plan:
                if step.index in preview_steps(step.total, wanted):
                    pixels[(start, stop)] = self.pipeline.preview(step, slice(start, stop))
            if pixels:
                loop.call_soon_threadsafe(events.put_nowait, ("step", step.index, step.total, pixels))

        def work() -> tuple[list[GenerationResult], float]:
            started = time.perf_counter()
            results = self.pipeline.generate_batch(list(requests), cancel=cancelled.is_set, on_step=on_step if plan else None)
            return results, time.perf_counter() - started

        future = loop.run_in_executor(None, work)
        try:
            while True:
                getter = asyncio.ensure_future(events.get())
                done, _ = await asyncio.wait({future, getter}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield getter.result()
                    continue
                getter.cancel()
                while not events.empty():
                    yield events.get_nowait()
                results, seconds = future.result()
                yield ("result", results, self.identity, seconds)
                return
        finally:
            cancelled.set()  # finished, or the caller cancelled / went away: stop at the next step

    def identify(self) -> dict[str, str]:
        return dict(self.identity)


def _identity() -> dict[str, str]:
    import ray
    from ray import serve

    try:
        replica = serve.get_replica_context().replica_id.unique_id
    except Exception:  # outside Serve (a plain actor in a test): the actor id
        replica = (ray.get_runtime_context().get_actor_id() or "local")[:12]
    return {"replica": str(replica), "pid": str(os.getpid()), "node": str(ray.util.get_node_ip_address())}


# -- the ingress side -----------------------------------------------------------------------------
class ReplicaBook:
    """Serve's count of running replicas (polled) and what each replica has done (from results)."""

    def __init__(self, app: str, target: int, poll_s: float = 0.5) -> None:
        self.app = app
        self.target = target
        self.poll_s = poll_s
        self._lock = threading.Lock()
        self._states: dict[str, int] = {}
        self._done: dict[tuple[str, str, str], list[float]] = {}  # identity -> [batches, images, seconds]
        self._busy: dict[tuple[str, str, str], int] = {}  # identity -> batches running there now
        self.lost_batches = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="nanoedge-ray-replicas", daemon=True)

    def start(self) -> None:
        self.refresh()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.refresh()
            except Exception as exc:  # the controller restarting: keep the last view, try again
                log.debug("could not read Serve's status: %s", exc)

    def refresh(self) -> None:
        from ray import serve

        app = serve.status().applications.get(self.app)
        deployment = app.deployments.get(DEPLOYMENT) if app is not None else None
        states = dict(deployment.replica_states) if deployment is not None else {}
        with self._lock:
            self._states = {str(getattr(k, "value", k)): int(v) for k, v in states.items()}

    def running(self) -> int:
        with self._lock:
            return self._states.get("RUNNING", 0)

    def states(self) -> dict[str, int]:
        with self._lock:
            return dict(self._states)

    def begin(self, identity: dict[str, str]) -> None:
        """A replica started a batch."""
        key = _key(identity)
        with self._lock:
            self._done.setdefault(key, [0, 0, 0.0])
            self._busy[key] = self._busy.get(key, 0) + 1

    def end(self, identity: dict[str, str], images: int = 0, seconds: float = 0.0) -> None:
        """The batch ``begin`` announced finished (``images`` > 0) or was lost or cancelled."""
        key = _key(identity)
        with self._lock:
            self._busy[key] = max(0, self._busy.get(key, 0) - 1)
            if images:
                done = self._done.setdefault(key, [0, 0, 0.0])
                done[0] += 1
                done[1] += images
                done[2] += seconds

    def count_lost(self) -> None:
        with self._lock:
            self.lost_batches += 1

    def replicas_seen(self) -> list[dict[str, str]]:
        with self._lock:
            return [{"replica": r, "pid": p, "node": n} for r, p, n in self._done]

    def render(self) -> list[str]:
        """Prometheus lines: replica states, then per-replica counters labelled {replica,pid,node}."""
        with self._lock:
            states, done, busy, lost = dict(self._states), dict(self._done), dict(self._busy), self.lost_batches
        out = ["# HELP nanoedge_replicas Model replicas by state (Ray Serve's view) and the target count.",
               "# TYPE nanoedge_replicas gauge", f'nanoedge_replicas{{state="target"}} {self.target}']
        out += [f'nanoedge_replicas{{state="{state.lower()}"}} {count}' for state, count in sorted(states.items())]
        if "RUNNING" not in states:
            out.append('nanoedge_replicas{state="running"} 0')
        out += ["# HELP nanoedge_replica_busy Batches each replica is generating now (0 or 1).", "# TYPE nanoedge_replica_busy gauge"]
        for (replica, pid, node) in sorted(done):
            out.append(f'nanoedge_replica_busy{{replica="{replica}",pid="{pid}",node="{node}"}} {busy.get((replica, pid, node), 0)}')
        series = (("batches_total", "Batches each replica generated.", 0),
                  ("images_total", "Images each replica generated.", 1),
                  ("inference_seconds_total", "Seconds each replica spent generating.", 2))
        for suffix, help_text, index in series:
            name = f"nanoedge_replica_{suffix}"
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
            for (replica, pid, node), values in sorted(done.items()):
                out.append(f'{name}{{replica="{replica}",pid="{pid}",node="{node}"}} {values[index]:g}')
        out += ["# HELP nanoedge_replica_lost_batches_total Batches whose replica stopped while running them (each retried once).",
                "# TYPE nanoedge_replica_lost_batches_total counter", f"nanoedge_replica_lost_batches_total {lost}"]
        return out


def _key(identity: dict[str, str]) -> tuple[str, str, str]:
    return (identity["replica"], identity["pid"], identity["node"])


def _replica_lost_errors() -> tuple[type[BaseException], ...]:
    """Ray's ways of saying the replica (its process or node) went away."""
    import ray.exceptions as rex
    from ray.serve import exceptions as sex

    return (rex.RayActorError, rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError, sex.ReplicaUnavailableError)


class RayRunner:
    """The worker's batch runner on the ingress: a batch is one streaming call to a replica."""

    def __init__(self, handle: Any, book: ReplicaBook, retry_after_s: float, cancel_poll_s: float = 0.05) -> None:
        self.handle = handle.options(stream=True)
        self.book = book
        self.retry_after_s = retry_after_s
        self.cancel_poll_s = cancel_poll_s
        self._lost = _replica_lost_errors()

    def generate_batch(
        self, requests: Sequence[ResolvedRequest], *, cancel: CancelCheck | None = None, on_step: Any = None
    ) -> list[GenerationResult]:
        if not all(isinstance(r, ResolvedRequest) for r in requests):
            raise InvalidRequestError("a Ray replica takes resolved requests (the ingress resolves them)")
        plan: PreviewPlan = []
        if isinstance(on_step, StepFanout):
            plan = [(rows.start or 0, rows.stop, wanted) for rows, wanted in on_step.plan]
        for attempt in (1, 2):
            if self.book.running() == 0:
                raise no_replicas(self.retry_after_s)
            try:
                return self._once(list(requests), plan, cancel, on_step)
            except self._lost as exc:
                self.book.count_lost()
                log.warning("a replica stopped while running a batch of %d request(s) (%s)%s", len(requests), type(exc).__name__,
                            "; retrying it on another replica" if attempt == 1 else "; answering 503")
        raise replica_unavailable(self.retry_after_s)

    def _once(self, requests: list[ResolvedRequest], plan: PreviewPlan, cancel: CancelCheck | None, on_step: Any) -> list[GenerationResult]:
        from ray.exceptions import TaskCancelledError

        stream = self.handle.run.remote(requests, plan)
        done = threading.Event()
        cancelled = threading.Event()

        def watch() -> None:
            while not done.wait(self.cancel_poll_s):
                if cancel is not None and cancel():
                    cancelled.set()
                    stream.cancel()
                    return

        watcher = threading.Thread(target=watch, name="nanoedge-ray-cancel", daemon=True) if cancel is not None else None
        if watcher is not None:
            watcher.start()
        replica: dict[str, str] | None = None
        try:
            for event in stream:
                if event[0] == "start":
                    self.book.begin(event[1])
                    replica = event[1]
                elif event[0] == "step":
                    if on_step is not None:
                        on_step(RenderedStep(event[1], event[2], event[3]))
                else:
                    _, results, identity, seconds = event
                    self.book.end(identity, sum(r.request.n for r in results), seconds)
                    replica = None
                    return results
            raise RuntimeError("the replica ended the batch without a result")
        except TaskCancelledError:
            if cancelled.is_set():
                raise GenerationCancelled("cancelled in the replica (every client left or timed out)") from None
            raise
        finally:
            done.set()
            if replica is not None:
                self.book.end(replica)


class RayExecutor:
    """Replicas of one package on a Ray cluster, behind this process's HTTP app."""

    engine = "ray"

    def __init__(self, options: RayOptions, settings: ServerSettings) -> None:
        if options.replicas < 1:
            raise InvalidRequestError("--replicas must be at least 1")
        self.options = options
        self.lanes = options.replicas
        self._connection = connect(options.address, options.replicas * options.replica_cpus)
        self.app = f"nanoedge-{os.getpid()}-{next(_apps)}"
        self.book = ReplicaBook(self.app, options.replicas)
        handle = deploy(self.app, options)
        self.book.start()
        self.runner = RayRunner(handle, self.book, settings.unavailable_retry_after_s)
        self._retry_after_s = settings.unavailable_retry_after_s

    def warm_up(self) -> float:
        return 0.0  # each replica warmed up before Serve counted it as running

    def preview(self, step: DenoiseStep | RenderedStep, rows: slice) -> np.ndarray:
        if not isinstance(step, RenderedStep):
            raise TypeError("with Ray replicas previews are rendered in the replica")
        return step.rows(rows)

    def check_live(self) -> None:
        if self.book.running() == 0:
            raise no_replicas(self._retry_after_s)

    def health(self) -> dict[str, Any]:
        return {"engine": "ray", "replicas": {"target": self.options.replicas, **{k.lower(): v for k, v in self.book.states().items()}}}

    def register_metrics(self, metrics: Metrics) -> None:
        metrics.collector(self.book.render)

    def close(self) -> None:
        from ray import serve

        self.book.stop()
        log.info("stopping the replicas")
        if self._connection != "local":  # a local cluster goes as a whole, below
            try:
                serve.delete(self.app)
            except Exception as exc:
                log.warning("could not remove the Serve application %s: %s", self.app, exc)
        if self._connection != "reused":
            disconnect(self._connection == "local")
        log.info("replicas stopped")


def connect(address: str | None, cpus_needed: float) -> str:
    """Join ``address`` (``"joined"``) or start a local, loopback-only Ray (``"local"``; closing
    the executor shuts it down). A process already connected is used as it is (``"reused"``)."""
    import ray
    from ray import serve

    if ray.is_initialized():
        connection = "reused"
    elif address is None:
        cpus = os.cpu_count() or 1
        if cpus_needed > cpus:
            raise InvalidRequestError(
                f"{cpus_needed:g} CPUs asked for the replicas, this machine has {cpus}",
                hint="lower --replicas or --replica-cpus (fractions such as 0.5 are allowed), or join a bigger cluster with --ray-address",
            )
        # address="local": a new cluster, never one that happens to run on this machine already
        _init_in_keeper(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=cpus, namespace="nanoedge",
                        log_to_driver=False)
        connection = "local"
    else:
        _init_in_keeper(address=address, namespace="nanoedge", log_to_driver=False)
        connection = "joined"
    serve.start(proxy_location="Disabled")  # no Serve HTTP proxy: this process is the ingress
    return connection


_keeper_stop = threading.Event()


def _init_in_keeper(**kwargs: Any) -> None:
    """``ray.init`` in a thread that lives until :func:`disconnect`.

    Ray starts its local processes (GCS, raylet) with a parent-death signal, which Linux
    sends when the *thread* that started them ends: called from the server's loader thread,
    the cluster died as soon as the model was loaded. This thread outlives the loading."""
    import ray

    done = threading.Event()
    failure: list[BaseException] = []

    def keep() -> None:
        try:
            ray.init(**kwargs)
        except BaseException as exc:
            failure.append(exc)
            return
        finally:
            done.set()
        _keeper_stop.wait()

    _keeper_stop.clear()
    threading.Thread(target=keep, name="nanoedge-ray", daemon=True).start()
    done.wait()
    if failure:
        raise failure[0]


def disconnect(stop_serve: bool) -> None:
    """Leave the cluster; ``stop_serve`` also stops Serve (only for a cluster this process started)."""
    import ray
    from ray import serve

    try:
        if stop_serve:
            serve.shutdown()
    finally:
        ray.shutdown()
        _keeper_stop.set()


def deploy(app: str, options: RayOptions) -> Any:
    """Start ``options.replicas`` replicas as the Serve application ``app``; returns its handle
    once every replica has loaded the package and warmed up."""
    from ray import serve

    deployment = serve.deployment(
        name=DEPLOYMENT,
        num_replicas=options.replicas,
        max_ongoing_requests=1,
        ray_actor_options={"num_cpus": options.replica_cpus},
        health_check_period_s=options.health_check_period_s,
        health_check_timeout_s=max(10.0, 5 * options.health_check_period_s),
        graceful_shutdown_timeout_s=5,
    )(ReplicaRunner)
    bound = deployment.bind(str(options.package), options.target, options.replica_threads, options.two_pass)
    return serve.run(bound, name=app, route_prefix=None)

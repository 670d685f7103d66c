"""``nanoedge serve --engine ray``: the options that host the batches on Ray Serve replicas.

Kept apart from ``serve_cmd.py`` so the single-process command reads the same as before: this
module adds ``--engine``, ``--replicas``, ``--ray-address`` and ``--replica-cpus``, checks them
together, and turns them into the app's ``host`` factory (``runtime/server/ray_host.py``) and
the ingress's pipeline loader. Ray is imported only when ``--engine ray`` is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

ENGINES = ("local", "ray")


def scale_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The four options, in the order ``--help`` shows them."""
    options = [
        click.option(
            "--engine",
            type=click.Choice(ENGINES),
            default="local",
            show_default=True,
            help="Where batches run: local (this process) or ray (Ray Serve replicas behind this endpoint; needs nanoedge[ray]).",
        ),
        click.option(
            "--replicas",
            type=click.IntRange(1),
            default=None,
            help="With --engine ray: replicas of the model (each loads it once) [default: 1].",
        ),
        click.option(
            "--ray-address",
            default=None,
            help="With --engine ray: join this Ray cluster ('auto' or HOST:PORT of `ray start --head`) "
            "[default: start a local one, loopback only].",
        ),
        click.option(
            "--replica-cpus",
            type=click.FloatRange(min=0.01),
            default=None,
            help="With --engine ray: CPUs Ray reserves per replica; onnxruntime gets that many threads unless --threads [default: 1].",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def ray_host(engine: str, replicas: int | None, ray_address: str | None, replica_cpus: float | None, *,
             package: Path, target: str, threads: int | None, two_pass: bool) -> Callable[..., Any] | None:
    """The app's ``host`` factory for ``--engine ray``; ``None`` for the local engine (after
    refusing Ray options given without it)."""
    from nanoedge.core.errors import InvalidRequestError, require

    if engine != "ray":
        given = [name for name, value in (("--replicas", replicas), ("--ray-address", ray_address), ("--replica-cpus", replica_cpus))
                 if value is not None]
        if given:
            raise InvalidRequestError(f"{', '.join(given)} only apply with --engine ray", hint="add --engine ray, or drop them")
        return None
    from nanoedge.runtime.server.ray_host import RayExecutor, RayOptions  # before Ray itself: it sets Ray's environment

    require("ray", "ray")

    options = RayOptions(
        package=str(package.resolve()),
        replicas=replicas or 1,
        address=ray_address,
        replica_cpus=replica_cpus or 1.0,
        target=target,
        threads=threads,
        two_pass=two_pass,
    )
    return lambda pipeline, settings: RayExecutor(options, settings)


def describe(engine: str, replicas: int | None, ray_address: str | None) -> str:
    """The start-up line's note on where batches run."""
    if engine != "ray":
        return ""
    return f"; {replicas or 1} Ray replica(s) on {ray_address or 'a local Ray cluster'}"

"""``nanoedge serve [-m PKG]``: the local OpenAI-compatible image server.

Client code written for hosted image APIs works against it by changing only ``base_url``.
The process binds its socket first (so a busy port fails at once, with a hint), then answers
``/healthz`` immediately while the model loads and warms in the background; ``/readyz`` turns
200 when generation can start. SIGTERM or Ctrl-C drains visibly: /readyz and new work answer
503 + Retry-After for --drain-grace seconds and until accepted work is done, then the
connections close and the process exits 0 (see runtime/server/lifecycle.py).
"""

from __future__ import annotations

import logging
import re
import socket
from pathlib import Path

import click

from .common import handle_errors
from .serve_scale import describe, ray_host, scale_options
from .serve_upstream import upstream_options

log = logging.getLogger("nanoedge.serve")


def read_api_keys(flag_keys: tuple[str, ...], key_file: str | None) -> tuple[str, ...]:
    """Keys from --api-key, NANOEDGE_API_KEYS (comma-separated) and --api-key-file (one per
    line, ``#`` comments), in that order, without duplicates or blanks."""
    from nanoedge.core import settings
    from nanoedge.core.errors import InvalidRequestError

    keys = [k.strip() for k in flag_keys]
    keys += settings.api_keys()
    if key_file:
        try:
            text = Path(key_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidRequestError(
                f"cannot read --api-key-file {key_file}: {exc.strerror}", hint="give a readable file with one key per line"
            ) from None
        keys += [line.split("#", 1)[0].strip() for line in text.splitlines()]
    for key in keys:
        if key and any(c.isspace() for c in key):
            raise InvalidRequestError(
                "an API key contains whitespace", hint="keys are sent as 'Authorization: Bearer KEY'; remove spaces from them"
            )
    return tuple(dict.fromkeys(k for k in keys if k))


def bind_socket(host: str, port: int) -> socket.socket:
    from nanoedge.core.errors import NanoedgeError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY on accepted connections only
    # when the socket says it is TCP. Without it Nagle's algorithm holds back the end of every
    # answer until the client's delayed ACK (~40 ms per request on Linux).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise NanoedgeError(
            f"cannot listen on {host}:{port}: {exc.strerror}", hint="pick another --port (0 picks a free one), or stop what uses it"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@click.command()
@click.option("-m", "--model", "package", default=None, help="Package folder (default: the built-in model).")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; anything but loopback needs an API key or --allow-unauthenticated-remote.",
)
@click.option("--port", type=int, default=8000, show_default=True, help="Port (0 picks a free one and prints it).")
@click.option("--target", default="cpu", show_default=True, help="Execution target (cpu, cuda, auto...).")
@click.option("--alias", "aliases", multiple=True, help="Another model name clients may send, e.g. nano-banana-2 (repeatable).")
@click.option(
    "--api-key", "api_keys", multiple=True, help="Accepted bearer key (repeatable; also NANOEDGE_API_KEYS=k1,k2 and --api-key-file)."
)
@click.option("--api-key-file", type=click.Path(dir_okay=False), default=None, help="File with one accepted key per line.")
@click.option(
    "--allow-unauthenticated-remote",
    is_flag=True,
    help="Allow a non-loopback --host without API keys (anyone who reaches the port can use it).",
)
@click.option("--max-queue", type=click.IntRange(1), default=32, show_default=True, help="Waiting requests before answering 429.")
@click.option(
    "--max-batch",
    type=click.IntRange(1),
    default=4,
    show_default=True,
    help="Images generated together in one UNet batch (1 disables batching).",
)
@click.option(
    "--request-timeout", type=click.FloatRange(min=1), default=600.0, show_default=True, help="Seconds before a request is answered 504."
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Seeded-result cache folder [default: NANOEDGE_CACHE_DIR or ~/.cache/nanoedge, /server-images].",
)
@click.option(
    "--cache-max-mb", type=click.FloatRange(min=0), default=512.0, show_default=True, help="Cache size bound; 0 disables the cache."
)
@click.option(
    "--files-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where response_format=url images are kept [default: a temporary folder].",
)
@click.option("--files-ttl", type=click.FloatRange(min=1), default=3600.0, show_default=True, help="Seconds an image URL stays valid.")
@click.option(
    "--files-max-mb", type=click.FloatRange(min=1), default=1024.0, show_default=True, help="Size bound of the image files folder."
)
@click.option(
    "--max-pixels",
    type=click.IntRange(1),
    default=None,
    help="Largest area generated directly; larger sizes are generated at the native area and resized [default: the package's native area].",
)
@click.option(
    "--public-url",
    default=None,
    help="URL prefix for image URLs when behind a proxy, e.g. https://box.local "
    "[default: the address the connection came in on; never the Host header].",
)
@click.option(
    "--drain-grace",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="After SIGTERM/SIGINT, seconds /readyz and new requests answer 503 before the listener closes "
    "(set it above your load balancer's health-check interval).",
)
@click.option(
    "--drain-timeout",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    help="After SIGTERM/SIGINT, longest wait for accepted requests to finish.",
)
@click.option("--threads", type=click.IntRange(1), default=None, help="onnxruntime intra-op threads (default: all cores).")
@click.option("--two-pass", is_flag=True, help="Run guidance as two UNet passes (lower memory).")
@click.option("--playground", "playground", type=click.Choice(["open", "protected"]), default="open", show_default=True,
              help="The browser page on / and /playground: open (served without a key; its API calls still need one) "
                   "or protected (the page itself needs a key).")
@click.option("--no-playground", is_flag=True, help="Do not serve the browser page.")
@scale_options
@handle_errors
@upstream_options
def serve(package, host, port, target, aliases, api_keys, api_key_file, allow_unauthenticated_remote, max_queue, max_batch, request_timeout,
          cache_dir, cache_max_mb, files_dir, files_ttl, files_max_mb, max_pixels, public_url, drain_grace, drain_timeout,
          threads, two_pass, playground, no_playground, upstream, engine, replicas, ray_address, replica_cpus):
    """Serve a package over an OpenAI-compatible API (POST /v1/images/generations).

    \b
    nanoedge serve -m pkg --alias nano-banana-2
    client = OpenAI(api_key="any", base_url="http://127.0.0.1:8000/v1")
    """
    from nanoedge.core.errors import InvalidRequestError, NanoedgeError, require

    require("starlette", "serve")
    uvicorn = require("uvicorn", "serve")
    from nanoedge.core.manifest import Manifest
    from nanoedge.core.settings import cache_dir as nanoedge_cache_dir
    from nanoedge.runtime.default_model import default_package_path
    from nanoedge.runtime.pipeline import Pipeline
    from nanoedge.runtime.server import ServerSettings, create_app
    from nanoedge.runtime.server.lifecycle import DrainingServer
    from nanoedge.runtime.server.settings import is_loopback
    from nanoedge.targets import resolve_target

    keys = read_api_keys(api_keys, api_key_file)
    if public_url is not None and not re.match(r"^https?://[^/\s?#]+(/[^\s?#]*)?$", public_url):
        raise InvalidRequestError(f"--public-url {public_url!r} is not an absolute http(s) URL", hint="give it as https://box.local or http://10.0.0.5:8000/prefix")
    if not is_loopback(host) and not keys:
        if not allow_unauthenticated_remote:
            raise InvalidRequestError(
                f"refusing to serve on {host} without an API key: anyone who can reach this port could use the model",
                hint="pass --api-key KEY (or NANOEDGE_API_KEYS / --api-key-file), or --allow-unauthenticated-remote if that is intended",
            )
        log.warning("serving on %s WITHOUT authentication: anyone who can reach port %d can use it", host, port)

    path = Path(package) if package else default_package_path()
    manifest = Manifest.load(path)  # fail fast on a wrong path, before binding anything
    resolve_target(target)
    executor_host = ray_host(engine, replicas, ray_address, replica_cpus, package=path, target=target, threads=threads, two_pass=two_pass)
    settings = ServerSettings(
        host=host,
        port=port,
        aliases=tuple(aliases),
        api_keys=keys,
        max_queue=max_queue,
        max_batch=max_batch,
        request_timeout_s=request_timeout,
        cache_dir=Path(cache_dir) if cache_dir else nanoedge_cache_dir() / "server-images",
        cache_max_mb=cache_max_mb,
        files_dir=Path(files_dir) if files_dir else None,
        files_ttl_s=files_ttl,
        files_max_mb=files_max_mb,
        max_pixels=max_pixels,
        public_url=public_url,
        drain_grace_s=drain_grace,
        drain_timeout_s=drain_timeout,
        playground="off" if no_playground else playground,
        upstream=upstream,
    )
    failure: list[BaseException] = []

    def on_fatal(exc: BaseException) -> None:
        failure.append(exc)
        server.should_exit = True

    # With replicas elsewhere, this process needs the package's names, sizes and tokenizer only:
    # reduce_memory loads no model until one would run (and none runs here).
    def load() -> Pipeline:
        return Pipeline.load(path, target=target, threads=threads, two_pass=two_pass, reduce_memory=executor_host is not None)

    app = create_app(load, settings, on_fatal=on_fatal, host=executor_host)
    state = app.state.server

    verbose = logging.getLogger().isEnabledFor(logging.DEBUG)
    logging.getLogger("nanoedge").setLevel(logging.DEBUG if verbose else logging.INFO)
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level="debug" if verbose else "warning",
        access_log=verbose,
        timeout_graceful_shutdown=int(settings.drain_timeout_s),
    )
    server = DrainingServer(config, state)
    sock = bind_socket(host, port)
    bound_port = sock.getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    click.echo(
        f"nanoedge serve: {manifest.id} on http://{shown_host}:{bound_port}/v1 (names: "
        f"{', '.join(dict.fromkeys([manifest.id, *manifest.aliases, *aliases]))}; "
        f"{'API keys required' if keys else 'no API key needed'}{describe(engine, replicas, ray_address)}); loading...",
        err=True,
    )
    if settings.playground != "off":
        needs_key = " (needs a key)" if settings.playground == "protected" and keys else ""
        click.echo(f"playground: http://{shown_host}:{bound_port}/{needs_key}", err=True)
    if upstream is not None:
        click.echo(f"overflow: to {upstream.url} on {', '.join(upstream.overflow_on)}", err=True)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if failure:
        exc = failure[0]
        if isinstance(exc, NanoedgeError):
            raise exc
        raise NanoedgeError(f"the model could not be loaded: {type(exc).__name__}: {exc}", hint="run again with -v for details")

"""What every command shares: error reporting, logging set-up, progress output."""

from __future__ import annotations

import functools
import logging
import sys
from typing import Any, Callable

import click

from nanoedge.core.errors import NanoedgeError

log = logging.getLogger("nanoedge")


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s" if verbose else "%(levelname)s: %(message)s",
        stream=sys.stderr,
    )


def is_verbose() -> bool:
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        if ctx.obj and ctx.obj.get("verbose"):
            return True
        ctx = ctx.parent
    return False


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn NanoedgeError into one line + hint + exit code; other errors too, unless -v."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except NanoedgeError as err:
            if is_verbose():
                raise
            click.secho(f"error: {err.message}", fg="red", err=True)
            if err.hint:
                click.echo(f"hint: {err.hint}", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except Exception as err:  # an unexpected bug: one line unless -v asks for the traceback
            if is_verbose():
                raise
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            click.secho(f"error: {type(err).__name__}: {first}", fg="red", err=True)
            click.echo("hint: run again with -v for the full traceback, and report it if it looks like a bug", err=True)
            sys.exit(1)

    return wrapper


class StepProgress:
    """A progress bar on a terminal, silence in a pipe (``--json`` output stays clean)."""

    def __init__(self, label: str, enabled: bool | None = None) -> None:
        self.label = label
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bar = None
        self._done = 0

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            self._bar = click.progressbar(length=total, label=self.label, file=sys.stderr, show_pos=True, show_eta=True)
            self._bar.__enter__()
        self._bar.update(done - self._done)
        self._done = done
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None
            self._done = 0

"""One exception family for the whole toolkit.

The CLI turns a :class:`NanoedgeError` into one clear line, a hint and a stable exit code;
anything else is a bug and gets a traceback only with ``-v``. Library users catch
``NanoedgeError`` (or a subclass) and can show ``str(err)`` and ``err.hint`` as they are.
"""

from __future__ import annotations


class NanoedgeError(Exception):
    """Base of every error nanoedge raises on purpose.

    ``hint`` tells the user what to do next; ``exit_code`` is what the CLI exits with.
    """

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class InvalidRequestError(NanoedgeError, ValueError):
    """A parameter the caller passed cannot be honoured (bad size, steps, scheduler...).

    ``param`` names the offending field when there is one, so an API layer can report it.
    """

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None, param: str | None = None) -> None:
        super().__init__(message, hint)
        self.param = param


class PackageError(NanoedgeError):
    """A model package is missing, incomplete, corrupt or from an unsupported format."""

    exit_code = 3


class MissingDependencyError(NanoedgeError, ImportError):
    """An optional extra (torch, onnx, starlette, a provider package...) is not installed."""

    exit_code = 4


class ExportError(NanoedgeError):
    """Exporting a checkpoint failed, including when ONNX output drifted from PyTorch."""

    exit_code = 5


class QualityGateError(NanoedgeError):
    """A quantized package missed the requested accuracy gate; nothing was written.

    ``attempts`` holds the measured figures of every candidate that was tried.
    """

    exit_code = 6

    def __init__(self, message: str, hint: str | None = None, attempts: list | None = None) -> None:
        super().__init__(message, hint)
        self.attempts = list(attempts or [])


class TargetUnavailableError(NanoedgeError):
    """The requested execution target cannot run here (provider missing or unfit package)."""

    exit_code = 7


def require(module: str, extra: str):
    """Import an optional module or raise a MissingDependencyError naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise MissingDependencyError(
            f"this command needs the Python package '{module.split('.')[0]}', which is not installed",
            hint=f"install it with: pip install 'nanoedge[{extra}]'",
        ) from exc

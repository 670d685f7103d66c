"""Where the built-in default model lives.

The default is the trained demo model shipped inside the runtime (``models/default``, see
docs/demo-model.md), unless ``NANOEDGE_DEFAULT_MODEL`` names another package folder; when
neither exists (a trimmed install) the error says how to get one rather than failing on a
missing path.
"""

from __future__ import annotations

from pathlib import Path

from nanoedge.core import settings
from nanoedge.core.errors import PackageError
from nanoedge.core.manifest import MANIFEST_NAME

_BUNDLED = Path(__file__).resolve().parent / "models" / "default"


def default_package_path() -> Path:
    chosen = settings.default_model()
    if chosen is not None:
        return chosen
    if (_BUNDLED / MANIFEST_NAME).exists():
        return _BUNDLED
    raise PackageError(
        "no model given and no default model is installed",
        hint="pass -m PACKAGE, or set NANOEDGE_DEFAULT_MODEL to a package folder (nanoedge export preset:tiny-random -o PACKAGE makes one)",
    )

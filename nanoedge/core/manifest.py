"""``nanoedge.json``: the one file that says everything the runtime needs about a package.

Every stage reads a manifest and writes a new one; this module is the only place that knows
its layout, so format changes happen here. The manifest is plain JSON (a dict) wrapped in a
thin accessor class rather than a deep dataclass tree: stages add sections (quantization
report, target checks) without the runtime having to know them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

from .errors import PackageError

MANIFEST_NAME = "nanoedge.json"
FORMAT_NAME = "nanoedge-package"
FORMAT_VERSION = 1
COMPONENTS = ("text_encoder", "unet", "vae_decoder")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks so multi-GB weights stay out of memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class Manifest:
    """Accessor around the manifest dict; ``data`` is what gets written back."""

    def __init__(self, data: dict[str, Any], root: Path | None = None) -> None:
        self.data = data
        self.root = root

    # -- reading -----------------------------------------------------------------------------
    @classmethod
    def load(cls, package_dir: "str | os.PathLike[str]") -> "Manifest":
        root = Path(package_dir)
        if not root.exists():
            raise PackageError(
                f"package '{root}' does not exist",
                hint="give the folder written by `nanoedge export` (or run it first)",
            )
        if not root.is_dir():
            raise PackageError(f"'{root}' is a file, not a package folder", hint="give the folder that holds nanoedge.json")
        path = root / MANIFEST_NAME
        if not path.exists():
            raise PackageError(
                f"'{root}' has no {MANIFEST_NAME}, so it is not a complete nanoedge package",
                hint="re-run `nanoedge export` for it (an interrupted export never leaves this file)",
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PackageError(f"{path} is not valid JSON ({exc})", hint="re-export the package") from exc
        if data.get("format") != FORMAT_NAME:
            raise PackageError(f"{path} is not a nanoedge manifest", hint="re-export the package with `nanoedge export`")
        if int(data.get("format_version", 0)) > FORMAT_VERSION:
            raise PackageError(
                f"{path} uses package format {data.get('format_version')}, newer than this nanoedge understands ({FORMAT_VERSION})",
                hint="upgrade nanoedge: pip install -U nanoedge",
            )
        return cls(data, root)

    @property
    def id(self) -> str:
        return str(self.data.get("id", "model"))

    @property
    def aliases(self) -> list[str]:
        return list(self.data.get("aliases", []))

    @property
    def components(self) -> dict[str, dict[str, Any]]:
        return self.data["components"]

    def component(self, name: str) -> dict[str, Any]:
        try:
            return self.components[name]
        except KeyError:
            raise PackageError(f"package has no '{name}' component", hint="re-export the package") from None

    def component_path(self, name: str) -> Path:
        assert self.root is not None
        return self.root / self.component(name)["model"]

    def decoder(self) -> dict[str, Any]:
        """How to feed and read the VAE decoder: ``family``, ``scaling_factor``, ``shift_factor``, ``output_range``.

        Packages exported with ``--vae-decoder`` (e.g. TAESD) record their decoder's own latent
        scaling under ``components.vae_decoder.decoder``; older packages use the model's VAE,
        described by the ``latent`` section, with diffusers' [-1, 1] output.
        """
        latent = self.data.get("latent", {})
        described = self.components.get("vae_decoder", {}).get("decoder") or {}
        scaling = described.get("scaling_factor", latent.get("scaling_factor"))
        if scaling is None or not float(scaling) > 0:
            raise PackageError(f"the package's decoder scaling factor is {scaling!r}", hint="re-export the package")
        low, high = described.get("output_range") or [-1.0, 1.0]
        shift = described["shift_factor"] if "shift_factor" in described else latent.get("shift_factor")
        return {
            "family": described.get("family", "kl"),
            "class": described.get("class", "AutoencoderKL"),
            "scaling_factor": float(scaling),
            "shift_factor": float(shift or 0.0),
            "output_range": [float(low), float(high)],
        }

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        return self.data.get("files", {})

    @property
    def defaults(self) -> dict[str, Any]:
        return self.data.get("defaults", {})

    # -- writing -----------------------------------------------------------------------------
    def record_files(self, root: Path, paths: Iterable[str] | None = None) -> None:
        """Hash every file under ``root`` (except the manifest) into the ``files`` section."""
        if paths is None:
            paths = sorted(
                str(p.relative_to(root)).replace(os.sep, "/")
                for p in root.rglob("*")
                if p.is_file() and p.name != MANIFEST_NAME
            )
        self.data["files"] = {rel: {"bytes": (root / rel).stat().st_size, "sha256": sha256_file(root / rel)} for rel in paths}

    def write(self, root: Path) -> Path:
        path = root / MANIFEST_NAME
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path


def new_manifest(model_id: str) -> dict[str, Any]:
    """Skeleton of a fresh manifest; the exporter fills every section."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "id": model_id,
        "aliases": [],
        "family": "stable-diffusion",
        "components": {},
        "tokenizer": {},
        "latent": {},
        "sizes": {},
        "defaults": {},
        "styles": {},
        "quantization": None,
        "provenance": {},
        "targets": {},
        "files": {},
    }

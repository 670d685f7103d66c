"""``nanoedge.json``: the one file that says everything the runtime needs about a package.

Every stage reads a manifest and writes a new one; this module is the only place that knows
its layout, so format changes happen here. The manifest is plain JSON kept in a private dict:
readers use the section accessors, writers the named edits (:meth:`Manifest.set_component`,
:meth:`Manifest.record_quantization`, :meth:`Manifest.mark_compiled`, :meth:`Manifest.staged_copy`).
No module outside this one touches the dict, so a format change cannot miss a writer.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import PackageError
from .sizes import SizeRules

MANIFEST_NAME = "nanoedge.json"
FORMAT_NAME = "nanoedge-package"
FORMAT_VERSION = 1
#: The three models of a package, in the order the pipeline runs them.
COMPONENTS = ("text_encoder", "unet", "vae_decoder")
#: Sections a writer may set as a whole with :meth:`Manifest.set_section`.
SECTIONS = ("tokenizer", "scheduler", "latent", "sizes", "defaults", "provenance", "styles", "quality")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks so multi-GB weights stay out of memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class Manifest:
    """A package's ``nanoedge.json``: section accessors for readers, named edits for writers.

    ``root`` is the package folder the manifest describes (None for one not yet written).
    """

    def __init__(self, data: dict[str, Any], root: Path | None = None) -> None:
        self._data = data
        self.root = root

    @classmethod
    def new(cls, model_id: str, root: Path | None = None) -> "Manifest":
        """An empty manifest for a fresh export (every section present, see :func:`new_manifest`)."""
        return cls(new_manifest(model_id), root)

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

    def folder(self) -> Path:
        """The package folder; PackageError for a manifest not loaded from or written to one."""
        if self.root is None:
            raise PackageError(
                "this manifest describes no package folder yet", hint="write the package first (a nanoedge bug if you see this)"
            )
        return self.root

    # -- sections ----------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return str(self._data.get("id", "model"))

    @property
    def aliases(self) -> list[str]:
        return list(self._data.get("aliases", []))

    @property
    def family(self) -> str | None:
        return self._data.get("family")

    @property
    def components(self) -> dict[str, dict[str, Any]]:
        """Component name -> its entry (``model``, ``files``, ``precision``, ...); read only."""
        return self._data["components"]

    @property
    def tokenizer(self) -> dict[str, Any]:
        """``path``, ``max_length``, ``pad_id``, ``kind``."""
        return self._data.get("tokenizer") or {}

    @property
    def scheduler(self) -> dict[str, Any]:
        """``config`` (path of diffusers' scheduler_config.json) and ``default`` (short name)."""
        return self._data.get("scheduler") or {}

    def scheduler_config(self) -> dict[str, Any]:
        """The diffusers scheduler config stored in the package."""
        path = self.folder() / self.scheduler["config"]
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise PackageError(f"cannot read the package's scheduler config {path}: {exc}", hint="re-export the package") from exc

    @property
    def default_scheduler(self) -> str | None:
        """The scheduler a request gets when it names none: ``defaults.scheduler``, else the exported one."""
        return self.defaults.get("scheduler") or self.scheduler.get("default")

    @property
    def latent(self) -> dict[str, Any]:
        """``channels``, ``scale_factor``, ``scaling_factor``, ``shift_factor``."""
        return self._data.get("latent") or {}

    @property
    def sizes(self) -> dict[str, Any]:
        """The ``sizes`` section as written; :meth:`size_rules` is what checks a request."""
        return self._data.get("sizes") or {}

    def size_rules(self) -> SizeRules:
        return SizeRules.from_manifest(self.sizes)

    @property
    def quantization(self) -> dict[str, Any] | None:
        """The quantization report section, None for a float package."""
        return self._data.get("quantization")

    @property
    def provenance(self) -> dict[str, Any]:
        return self._data.get("provenance") or {}

    @property
    def styles(self) -> dict[str, Any]:
        return self._data.get("styles") or {}

    @property
    def quality(self) -> dict[str, Any]:
        return self._data.get("quality") or {}

    @property
    def targets(self) -> dict[str, Any]:
        return self._data.get("targets") or {}

    @property
    def compiled_for(self) -> str | None:
        """The target a precompiled package runs on only, None for a portable package."""
        return self._data.get("compiled_for")

    @property
    def precisions(self) -> set[str]:
        return {c.get("precision", "fp32") for c in self.components.values()}

    def as_dict(self) -> dict[str, Any]:
        """A deep copy of the whole manifest, for printing (``nanoedge info --json``) and tests."""
        return copy.deepcopy(self._data)

    def component(self, name: str) -> dict[str, Any]:
        try:
            return self.components[name]
        except KeyError:
            raise PackageError(f"package has no '{name}' component", hint="re-export the package") from None

    def component_path(self, name: str) -> Path:
        return self.folder() / self.component(name)["model"]

    def decoder(self) -> dict[str, Any]:
        """How to feed and read the VAE decoder: ``family``, ``scaling_factor``, ``shift_factor``, ``output_range``.

        Packages exported with ``--vae-decoder`` (e.g. TAESD) record their decoder's own latent
        scaling under ``components.vae_decoder.decoder``; older packages use the model's VAE,
        described by the ``latent`` section, with diffusers' [-1, 1] output.
        """
        latent = self.latent
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
        return self._data.get("files", {})

    @property
    def defaults(self) -> dict[str, Any]:
        return self._data.get("defaults") or {}

    # -- named edits -------------------------------------------------------------------------
    def set_section(self, name: str, value: Mapping[str, Any]) -> None:
        """Replace one of :data:`SECTIONS` as a whole (the exporter writes each once)."""
        if name not in SECTIONS:
            raise ValueError(f"'{name}' is not a manifest section a writer sets whole (known: {', '.join(SECTIONS)})")
        self._data[name] = dict(value)

    def set_component(self, name: str, entry: Mapping[str, Any]) -> None:
        """Add or replace a component's entry (``model``, ``files``, ``precision``, ...)."""
        if name not in COMPONENTS:
            raise ValueError(f"unknown component '{name}' (known: {', '.join(COMPONENTS)})")
        self._data["components"][name] = dict(entry)

    def replace_component_files(self, name: str, model: str, files: list[str], **fields: Any) -> None:
        """Point a component at new model files (quantized or compiled), updating ``fields`` too."""
        entry = self.component(name)
        entry["model"] = model
        entry["files"] = list(files)
        entry.update(fields)

    def record_quantization(self, section: Mapping[str, Any], precisions: Mapping[str, str]) -> None:
        """Mark the package quantized: each component's precision and the report ``section``."""
        for name, precision in precisions.items():
            self.component(name)["precision"] = precision
        self._data["quantization"] = dict(section)

    def update_quantization(self, **fields: Any) -> None:
        """Add entries (report, attempts, timing) to an already recorded quantization section."""
        if self._data.get("quantization") is None:
            raise PackageError(
                "this package has no quantization section to update", hint="record_quantization first (a nanoedge bug if you see this)"
            )
        self._data["quantization"].update(fields)

    def mark_compiled(self, target: str, plugin_version: str | None) -> None:
        """Mark the package as precompiled for ``target``: it then runs there only."""
        self._data["compiled_for"] = target
        self._data.setdefault("targets", {})[target] = {"compiled": True, "plugin_version": plugin_version}

    def staged_copy(self, root: Path | None = None) -> "Manifest":
        """An independent copy to edit for a new package written in ``root`` (the source is untouched)."""
        return Manifest(copy.deepcopy(self._data), root)

    def record_files(self, root: Path, paths: Iterable[str] | None = None) -> None:
        """Hash every file under ``root`` (except the manifest) into the ``files`` section."""
        if paths is None:
            paths = sorted(
                str(p.relative_to(root)).replace(os.sep, "/")
                for p in root.rglob("*")
                if p.is_file() and p.name != MANIFEST_NAME
            )
        self._data["files"] = {rel: {"bytes": (root / rel).stat().st_size, "sha256": sha256_file(root / rel)} for rel in paths}

    def write(self, root: Path) -> Path:
        path = root / MANIFEST_NAME
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self._data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path


def new_manifest(model_id: str) -> dict[str, Any]:
    """Skeleton of a fresh manifest with every key a writer fills in."""
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
        "scheduler": {},
        "quality": {},
        "quantization": None,
        "compiled_for": None,
        "provenance": {},
        "targets": {},
        "files": {},
    }

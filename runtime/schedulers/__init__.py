"""numpy diffusion schedulers, twins of diffusers' classes of the same names.
May import numpy and nanoedge.core only; never torch or diffusers.

``make_scheduler(name, config)`` builds one from a diffusers ``scheduler_config.json`` dict:
``name`` picks the sampler ("euler_a", "dpmpp_2m", ...) or, when None, the class the config
names in ``_class_name``. Like diffusers' ``from_config``, config keys the chosen class does not
use are ignored and missing keys take that class's defaults, so "euler" on an SD 1.5 (PNDM)
config means what ``EulerDiscreteScheduler.from_config(pipe.scheduler.config)`` means.

Nothing here imports torch: these run in the lean runtime.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .base import TIMESTEP_SPACINGS, Scheduler
from .ddim import DDIMScheduler
from .dpm_solver import DPMSolverMultistepScheduler
from .euler import EulerAncestralScheduler, EulerScheduler
from .lcm import LCMScheduler
from .pndm import PNDMScheduler

__all__ = [
    "SCHEDULER_NAMES",
    "name_for_config",
    "DDIMScheduler",
    "DPMSolverMultistepScheduler",
    "EulerAncestralScheduler",
    "EulerScheduler",
    "LCMScheduler",
    "PNDMScheduler",
    "Scheduler",
    "make_scheduler",
]

#: Canonical scheduler names (aliases such as "k_euler_a" or "DPM++ 2M" also work).
SCHEDULER_NAMES: tuple[str, ...] = ("pndm", "ddim", "euler", "euler_a", "dpmpp_2m", "lcm")

_CLASSES: dict[str, type[Scheduler]] = {
    "pndm": PNDMScheduler,
    "ddim": DDIMScheduler,
    "euler": EulerScheduler,
    "euler_a": EulerAncestralScheduler,
    "dpmpp_2m": DPMSolverMultistepScheduler,
    "lcm": LCMScheduler,
}

# diffusers class name -> our name; a config's _class_name picks the scheduler when name is None.
_DIFFUSERS_CLASSES: dict[str, str] = {
    "PNDMScheduler": "pndm",
    "DDIMScheduler": "ddim",
    "EulerDiscreteScheduler": "euler",
    "EulerAncestralDiscreteScheduler": "euler_a",
    "DPMSolverMultistepScheduler": "dpmpp_2m",
    "LCMScheduler": "lcm",
}

# Settings a name implies on top of the config ("DPM++ 2M" is second-order dpmsolver++).
_NAME_SETTINGS: dict[str, dict[str, Any]] = {
    "dpmpp_2m": {"algorithm_type": "dpmsolver++", "solver_order": 2},
}

# Spellings seen in web UIs and other toolkits, after _squash(), with the settings they imply.
_ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "pndm": ("pndm", {}),
    "plms": ("pndm", {}),
    "ddim": ("ddim", {}),
    "euler": ("euler", {}),
    "keuler": ("euler", {}),
    "eulera": ("euler_a", {}),
    "keulera": ("euler_a", {}),
    "eulerancestral": ("euler_a", {}),
    "keulerancestral": ("euler_a", {}),
    "dpmpp2m": ("dpmpp_2m", {}),
    "kdpmpp2m": ("dpmpp_2m", {}),
    "dpmsolverpp": ("dpmpp_2m", {}),
    "dpmsolvermultistep": ("dpmpp_2m", {}),
    "dpmpp2mkarras": ("dpmpp_2m", {"use_karras_sigmas": True}),
    "kdpmpp2mkarras": ("dpmpp_2m", {"use_karras_sigmas": True}),
    "lcm": ("lcm", {}),
    **{cls.lower(): (name, {}) for cls, name in _DIFFUSERS_CLASSES.items()},
}


def _squash(name: str) -> str:
    """Case-, space- and punctuation-insensitive key: "DPM++ 2M" -> "dpmpp2m"."""
    return re.sub(r"[^a-z0-9]", "", name.lower().replace("+", "p"))


def _known() -> str:
    return ", ".join(SCHEDULER_NAMES) + " (also dpmpp_2m_karras and diffusers class names)"


def name_for_config(config: Mapping[str, Any]) -> str:
    """Our name for the scheduler a diffusers config's ``_class_name`` names.

    "pndm" (SD 1.x's default) when the config names none or a class nanoedge does not run: the
    package then still has a working default, and ``make_scheduler(None, config)`` says why.
    """
    class_name = config.get("_class_name", "PNDMScheduler")
    return _DIFFUSERS_CLASSES.get(class_name, "pndm") if isinstance(class_name, str) else "pndm"


def make_scheduler(
    name: str | None, config: Mapping[str, Any], timestep_spacing: str | None = None
) -> Scheduler:
    """Build a fresh scheduler; call ``set_timesteps`` on it before the denoising loop.

    ``timestep_spacing`` ("leading", "trailing", "linspace") overrides the config's; "trailing"
    is what few-step turbo models need. Raises ValueError for an unknown name or class, or a
    config value the numpy schedulers do not implement.
    """
    if name is None:
        class_name = config.get("_class_name")
        if not isinstance(class_name, str) or class_name not in _DIFFUSERS_CLASSES:
            raise ValueError(
                f"scheduler config names class {class_name!r}, which nanoedge does not implement;"
                f" pick one of: {_known()}"
            )
        key, settings = _DIFFUSERS_CLASSES[class_name], {}
    else:
        found = _ALIASES.get(_squash(str(name)))
        if found is None:
            raise ValueError(f"unknown scheduler {name!r}; known schedulers: {_known()}")
        key, settings = found[0], {**_NAME_SETTINGS.get(found[0], {}), **found[1]}

    overrides = dict(settings)
    if timestep_spacing is not None:
        if timestep_spacing not in TIMESTEP_SPACINGS:
            known = ", ".join(TIMESTEP_SPACINGS)
            raise ValueError(f"timestep_spacing must be one of {known}, not {timestep_spacing!r}")
        overrides["timestep_spacing"] = timestep_spacing
    resolved = {**config, **overrides}
    if resolved.get("_use_default_values"):
        # A value we set must not be dropped as one of the writing class's defaults.
        resolved["_use_default_values"] = [k for k in resolved["_use_default_values"] if k not in overrides]
    return _CLASSES[key](resolved)

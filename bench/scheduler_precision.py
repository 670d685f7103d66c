"""How far our float32 schedulers and diffusers' are from a float64 run of the same formulas.

Prints, per case, the largest difference over all steps of (ours float32 − float64) and
(diffusers float32 − float64): the figures behind docs/targets.md "CPU vendors". The float64
run is our scheduler code with numpy's ``float32`` mapped to ``float64``. Needs the [export]
extra (torch, diffusers).

    python bench/scheduler_precision.py
"""

from __future__ import annotations

import importlib
import sys
import types

import diffusers
import numpy as np
import torch

from nanoedge.runtime.schedulers import make_scheduler
from nanoedge.targets.cpuinfo import cpu_info

SHAPE = (2, 4, 8, 8)
SD15 = {
    "_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "epsilon", "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
}
CASES = [
    ("euler_a", {**SD15, "prediction_type": "v_prediction"}, "linspace", 50),
    ("ddim", {**SD15, "beta_schedule": "squaredcos_cap_v2"}, "trailing", 1),
    ("ddim", {**SD15, "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02}, "trailing", 1),
    ("ddim", {**SD15, "beta_schedule": "squaredcos_cap_v2"}, "trailing", 20),
]
DIFFUSERS = {"ddim": diffusers.DDIMScheduler, "euler_a": diffusers.EulerAncestralDiscreteScheduler}
MODULES = ["base", "ddim", "euler", "dpm_solver", "pndm", "lcm"]


class Float64Numpy(types.ModuleType):
    def __getattr__(self, name: str):
        return np.float64 if name == "float32" else getattr(np, name)


def fake_unet(x, t):
    return 0.95 * x + 0.1 * np.sin(2.0 * x + t / 100.0)


def draws(count: int):
    rng = np.random.default_rng(0)
    start = rng.standard_normal(SHAPE, dtype=np.float32)
    return start, [rng.standard_normal(SHAPE, dtype=np.float32) for _ in range(count)]


def ours(name, config, spacing, steps, dtype):
    modules = [importlib.import_module(f"nanoedge.runtime.schedulers.{m}") for m in MODULES]
    saved = [m.np for m in modules]
    if dtype is np.float64:
        for m in modules:
            m.np = Float64Numpy("numpy64")
    try:
        sched = make_scheduler(name, config, timestep_spacing=spacing)
        sched.set_timesteps(steps)
        start, noises = draws(len(sched.timesteps))
        x, out = start.astype(dtype) * dtype(sched.init_noise_sigma), []
        for i, t in enumerate(sched.timesteps):
            x_in = sched.scale_model_input(x, t)
            noise = noises[i].astype(dtype) if sched.needs_noise else None
            x = sched.step(fake_unet(x_in, float(t)).astype(dtype), t, x, noise=noise)
            out.append(np.asarray(x, dtype=np.float64))
        return out
    finally:
        for m, n in zip(modules, saved):
            m.np = n


def theirs(name, config, spacing, steps):
    sched = DIFFUSERS[name].from_config({**config, "timestep_spacing": spacing})
    sched.set_timesteps(steps)
    start, noises = draws(len(sched.timesteps))
    module = sys.modules[type(sched).__module__]
    y, out = torch.from_numpy(start) * sched.init_noise_sigma, []
    for i, t in enumerate(sched.timesteps):
        module.randn_tensor = lambda *a, _n=noises[i], **k: torch.from_numpy(_n.copy())
        y_in = sched.scale_model_input(y, t)
        kwargs = {"eta": 0.0} if name == "ddim" else {}
        y = sched.step(torch.from_numpy(fake_unet(y_in.numpy(), float(t)).astype(np.float32)), t, y, **kwargs).prev_sample
        out.append(y.numpy().astype(np.float64))
    return out


def main() -> None:
    print(f"CPU: {cpu_info().describe()}")
    print("| case | ours - float64 | diffusers - float64 | largest |x| |")
    for name, config, spacing, steps in CASES:
        exact = ours(name, config, spacing, steps, np.float64)
        mine = ours(name, config, spacing, steps, np.float32)
        ref = theirs(name, config, spacing, steps)
        ours_err = max(float(np.abs(a - b).max()) for a, b in zip(mine, exact))
        ref_err = max(float(np.abs(a - b).max()) for a, b in zip(ref, exact))
        largest = max(float(np.abs(b).max()) for b in exact)
        label = f"{name}, {config['prediction_type']}, {config['beta_schedule']}, {spacing}, {steps} steps"
        print(f"| {label} | {ours_err:.3g} | {ref_err:.3g} | {largest:.4g} |")


if __name__ == "__main__":
    main()

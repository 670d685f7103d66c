"""The numpy schedulers against diffusers' own, on the same configs and inputs.

Every scheduler runs a full denoising loop next to its diffusers twin, both driven by the same
deterministic fake "UNet" (a smooth function of the scaled latents and the timestep, computed
in numpy from each side's own latents) and, for stochastic samplers, the same noise: diffusers
draws it through ``randn_tensor``, which we replace by a feed of the very arrays our scheduler
gets. After every step the latents must agree to float32 rounding of the values compared:
1e-5 for SD-like magnitudes, a few float32 ulps of the largest value the step computes where
that is larger (see :func:`step_tolerance`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from nanoedge.runtime.schedulers import SCHEDULER_NAMES, Scheduler, make_scheduler  # noqa: E402

diffusers.utils.logging.set_verbosity_error()
# diffusers' own numpy-2 deprecation noise (np.array on a torch tensor), not ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

TOL = 1e-5
EPS32 = float(np.finfo(np.float32).eps)
# Two float32 implementations of one step formula may round each operation differently (another
# operation order, a fused multiply-add on one CPU and not another). A step has a handful of
# roundings, each within half an ulp of the largest magnitude it handles; the bound allows
# ULPS of them. Measured against a float64 run of the same formulas (docs/targets.md, "CPU
# vendors"), ours and diffusers' float32 results both sit within ~1 ulp of that magnitude.
ULPS = 4


def step_tolerance(magnitude: float) -> float:
    """The largest difference float32 rounding explains once the loop has handled values of
    ``magnitude`` (an error rounded into a large intermediate stays in the later latents).

    1e-5 (a few ulps of O(1)-O(40) latents) for every SD-like schedule; beyond that the bound
    grows with the magnitude, which a 1-step DDIM from a squaredcos or zero-terminal-SNR
    schedule takes into the thousands (its clean-sample estimate divides by sqrt(alpha_bar)
    ~ 1e-3), where one float32 ulp alone is 2^-11 = 4.9e-4.
    """
    return max(TOL, ULPS * EPS32 * magnitude)


def _largest(*values) -> float:
    """The largest magnitude among the tensors a step computed (``None`` entries ignored)."""
    return max(float(torch.as_tensor(v).abs().max()) for v in values if v is not None)


def _epsilon_terms(theirs, t_ref, sample, model_output) -> float:
    """The size of the terms an epsilon-predicting variance-preserving step cancels.

    Its clean-sample estimate is ``(x - sqrt(1 - a) * eps) / sqrt(a)``: the difference is
    rounded at the size of ``x`` and ``eps`` and then divided by ``sqrt(a)`` (~6e-3 at t=999 of
    a linear 1e-4..0.02 schedule), so its rounding is that of values ``1/sqrt(a)`` times the
    latents, even when the estimate itself comes out small. 0 for other parameterisations.
    """
    vp = (diffusers.DDIMScheduler, diffusers.PNDMScheduler, diffusers.LCMScheduler, diffusers.DPMSolverMultistepScheduler)
    if not isinstance(theirs, vp) or theirs.config.prediction_type != "epsilon":
        return 0.0
    alpha_bar = max(float(theirs.alphas_cumprod[int(t_ref)]), float(np.finfo(np.float32).tiny))
    return (_largest(sample) + _largest(model_output)) / float(np.sqrt(alpha_bar))

SHAPE = (2, 4, 8, 8)
STEPS = (1, 2, 4, 10, 25, 50)
SPACINGS = ("leading", "trailing", "linspace")

_REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "model-configs"
_SD15_FILE = _REFERENCE / "stable-diffusion-v1-5" / "scheduler" / "scheduler_config.json"
# The SD 1.5 file as published (kept inline so the tests run without the reference folder).
SD15: dict = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.17.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "clip_sample_range": 1.0,
    "dynamic_thresholding_ratio": 0.995,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "thresholding": False,
    "trained_betas": None,
}
if _SD15_FILE.is_file():
    SD15 = json.loads(_SD15_FILE.read_text())
V_PRED = {**SD15, "prediction_type": "v_prediction"}
# LCM_Dreamshaper_v7 ships no scheduler config in the reference set: diffusers' LCM defaults
# (SD 1.5 betas, 50 original steps, timestep_scaling 10) under the LCM class name.
LCM = {
    "_class_name": "LCMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "original_inference_steps": 50,
    "timestep_scaling": 10.0,
    "set_alpha_to_one": True,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "clip_sample": False,
}

DIFFUSERS = {
    "pndm": diffusers.PNDMScheduler,
    "ddim": diffusers.DDIMScheduler,
    "euler": diffusers.EulerDiscreteScheduler,
    "euler_a": diffusers.EulerAncestralDiscreteScheduler,
    "dpmpp_2m": diffusers.DPMSolverMultistepScheduler,
    "lcm": diffusers.LCMScheduler,
}
DIFFUSERS_BY_CLASS = {cls.__name__: cls for cls in DIFFUSERS.values()}


def fake_unet(x: np.ndarray, t: float) -> np.ndarray:
    """A stand-in UNet that depends non-linearly on the latents and on t.

    It predicts roughly the input itself, which for epsilon and v prediction is a sane denoiser
    (x0 estimates stay O(1)), so the latents keep SD-like magnitudes and 1e-5 stays a strict
    bound (a few float32 ulps) rather than drowning in the rounding of runaway values.
    """
    return (0.95 * x + 0.1 * np.sin(2.0 * x + t / 100.0)).astype(np.float32)


class NoiseFeed:
    """Replaces diffusers' ``randn_tensor`` with the arrays our scheduler is given."""

    def __init__(self, noises: list[np.ndarray]) -> None:
        self.noises = noises
        self.calls = 0

    def __call__(self, shape, generator=None, device=None, dtype=None, layout=None):
        noise = torch.from_numpy(self.noises[self.calls].copy())
        assert tuple(noise.shape) == tuple(shape)
        self.calls += 1
        return noise.to(dtype or torch.float32)


def compare(
    ours: Scheduler,
    theirs,
    steps: int,
    monkeypatch: pytest.MonkeyPatch,
    eta: float = 0.0,
    seed: int = 0,
) -> float:
    """Run both loops side by side; return the worst difference over all steps as a fraction of
    that step's float32 rounding bound (:func:`step_tolerance`): at most 1 means they agree."""
    ours.set_timesteps(steps)
    theirs.set_timesteps(steps)
    ref_timesteps = theirs.timesteps.numpy()
    if np.issubdtype(ref_timesteps.dtype, np.integer):
        np.testing.assert_array_equal(ours.timesteps, ref_timesteps)
    else:
        np.testing.assert_allclose(ours.timesteps, ref_timesteps, rtol=0, atol=1e-4)
    assert ours.init_noise_sigma == pytest.approx(float(theirs.init_noise_sigma), rel=1e-6)

    rng = np.random.default_rng(seed)
    start = rng.standard_normal(SHAPE, dtype=np.float32)
    noises = [rng.standard_normal(SHAPE, dtype=np.float32) for _ in ours.timesteps]
    feed = NoiseFeed(noises)
    monkeypatch.setattr(sys.modules[type(theirs).__module__], "randn_tensor", feed, raising=False)
    uses_variance_noise = isinstance(theirs, diffusers.DDIMScheduler) or (
        isinstance(theirs, diffusers.DPMSolverMultistepScheduler) and theirs.config.algorithm_type.startswith("sde")
    )

    x = start * np.float32(ours.init_noise_sigma)
    y = torch.from_numpy(start) * theirs.init_noise_sigma
    magnitude = _largest(y)
    worst = float(np.abs(x - y.numpy()).max()) / step_tolerance(magnitude)
    for i, (t, t_ref) in enumerate(zip(ours.timesteps, theirs.timesteps)):
        x_in = ours.scale_model_input(x, t)
        y_in = theirs.scale_model_input(y, t_ref)
        magnitude = max(magnitude, _largest(y_in))
        worst = max(worst, float(np.abs(x_in - y_in.numpy()).max()) / step_tolerance(magnitude))
        x = ours.step(fake_unet(x_in, float(t)), t, x, noise=noises[i] if ours.needs_noise else None)
        kwargs = {}
        if isinstance(theirs, diffusers.DDIMScheduler):
            kwargs["eta"] = eta
        if uses_variance_noise:
            kwargs["variance_noise"] = torch.from_numpy(noises[i])
        model_output = torch.from_numpy(fake_unet(y_in.numpy(), float(t_ref)))
        out = theirs.step(model_output, t_ref, y, **kwargs)
        y = out.prev_sample
        assert x.dtype == np.float32 and x.shape == SHAPE
        # The step's intermediates: the clean-sample estimate (under whichever name the class
        # returns or keeps it) can be far larger than the latents around it.
        estimate = getattr(out, "pred_original_sample", None)
        if estimate is None:
            estimate = getattr(out, "denoised", None)
        history = getattr(theirs, "model_outputs", None)
        latest = history[-1] if history and history[-1] is not None else None
        magnitude = max(magnitude, _largest(model_output, y, estimate, latest), _epsilon_terms(theirs, t_ref, y_in, model_output))
        worst = max(worst, float(np.abs(x - y.numpy()).max()) / step_tolerance(magnitude))
    assert np.isfinite(x).all()
    if isinstance(theirs, (diffusers.EulerAncestralDiscreteScheduler, diffusers.LCMScheduler)):
        # The comparison must have used real noise: one draw per stochastic step.
        expected = steps if isinstance(theirs, diffusers.EulerAncestralDiscreteScheduler) else steps - 1
        assert feed.calls == expected
    return worst


def pair(name: str | None, config: dict, spacing: str | None = None):
    """Our scheduler from make_scheduler and diffusers' from_config of the same settings."""
    ours = make_scheduler(name, config, timestep_spacing=spacing)
    cls = DIFFUSERS[name] if name else DIFFUSERS_BY_CLASS[config["_class_name"]]
    ref_config = dict(config)
    if spacing is not None:
        ref_config["timestep_spacing"] = spacing
    return ours, cls.from_config(ref_config)


# -- parity: every scheduler x spacing x step count -------------------------------------------


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("config", [SD15, V_PRED], ids=["eps", "v"])
@pytest.mark.parametrize("name", ["pndm", "ddim", "euler", "euler_a", "dpmpp_2m"])
def test_matches_diffusers(name, config, spacing, steps, monkeypatch):
    ours, theirs = pair(name, config, spacing)
    assert compare(ours, theirs, steps, monkeypatch) <= 1


@pytest.mark.parametrize("steps", (1, 2, 4, 8, 10, 25, 50))
@pytest.mark.parametrize(
    "config",
    [LCM, {**SD15, "_class_name": "LCMScheduler"}, {**LCM, "prediction_type": "v_prediction"}],
    ids=["lcm-defaults", "lcm-lora-on-sd15", "v"],
)
def test_lcm_matches_diffusers(config, steps, monkeypatch):
    for spacing in (None, "trailing"):  # LCM ignores spacing, as diffusers does
        ours, theirs = pair("lcm", config, spacing)
        assert compare(ours, theirs, steps, monkeypatch) <= 1


@pytest.mark.parametrize("steps", (4, 10, 25, 50))
@pytest.mark.parametrize("spacing", SPACINGS)
def test_pndm_runge_kutta_matches_diffusers(spacing, steps, monkeypatch):
    ours, theirs = pair("pndm", {**SD15, "skip_prk_steps": False}, spacing)
    assert compare(ours, theirs, steps, monkeypatch) <= 1


@pytest.mark.parametrize(
    "name, settings",
    [
        ("ddim", {"clip_sample": True}),
        ("ddim", {"set_alpha_to_one": True, "prediction_type": "sample"}),
        ("ddim", {"thresholding": True, "sample_max_value": 2.0, "prediction_type": "sample"}),
        ("ddim", {"rescale_betas_zero_snr": True, "prediction_type": "v_prediction"}),
        ("ddim", {"beta_schedule": "squaredcos_cap_v2"}),
        ("ddim", {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02}),
        ("euler", {"use_karras_sigmas": True}),
        ("euler", {"use_exponential_sigmas": True}),
        ("euler", {"use_karras_sigmas": True, "sigma_min": 0.1, "sigma_max": 10.0}),
        ("euler", {"final_sigmas_type": "sigma_min"}),
        ("euler", {"interpolation_type": "log_linear"}),
        ("euler", {"timestep_type": "continuous", "prediction_type": "v_prediction"}),
        ("euler", {"rescale_betas_zero_snr": True, "prediction_type": "v_prediction"}),
        ("euler", {"prediction_type": "sample"}),
        ("euler_a", {"rescale_betas_zero_snr": True, "prediction_type": "v_prediction"}),
        ("euler_a", {"beta_schedule": "squaredcos_cap_v2"}),
        ("dpmpp_2m", {"use_karras_sigmas": True}),
        ("dpmpp_2m", {"use_karras_sigmas": True, "sigma_min": 0.1, "sigma_max": 10.0}),  # foreign keys
        ("dpmpp_2m", {"use_exponential_sigmas": True}),
        ("dpmpp_2m", {"use_lu_lambdas": True}),
        ("dpmpp_2m", {"final_sigmas_type": "sigma_min"}),
        ("dpmpp_2m", {"final_sigmas_type": "sigma_min", "lower_order_final": False}),
        ("dpmpp_2m", {"euler_at_final": True, "final_sigmas_type": "sigma_min"}),
        ("dpmpp_2m", {"solver_type": "heun"}),
        ("dpmpp_2m", {"solver_order": 3}),
        ("dpmpp_2m", {"solver_order": 1}),
        ("dpmpp_2m", {"algorithm_type": "sde-dpmsolver++"}),
        ("dpmpp_2m", {"algorithm_type": "sde-dpmsolver++", "solver_type": "heun"}),
        ("dpmpp_2m", {"thresholding": True, "prediction_type": "sample"}),
        ("dpmpp_2m", {"prediction_type": "sample"}),
        ("dpmpp_2m", {"lambda_min_clipped": -5.1}),
        (
            "dpmpp_2m",
            {"rescale_betas_zero_snr": True, "prediction_type": "v_prediction", "final_sigmas_type": "sigma_min"},
        ),
        ("lcm", {"clip_sample": True, "prediction_type": "sample"}),
        ("lcm", {"thresholding": True, "prediction_type": "sample", "sample_max_value": 1.5}),
        ("lcm", {"rescale_betas_zero_snr": True, "prediction_type": "v_prediction", "original_inference_steps": 100}),
    ],
)
@pytest.mark.parametrize("steps", (1, 4, 20))
def test_config_variants_match_diffusers(name, settings, steps, monkeypatch):
    """Config options beyond SD 1.5's, each read from the config as diffusers reads it."""
    spacings = ("trailing",) if name == "lcm" else ("leading", "trailing")
    for spacing in spacings:
        config = {**SD15, "_class_name": DIFFUSERS[name].__name__, **settings}
        ours, theirs = pair(None, config, spacing)
        assert compare(ours, theirs, steps, monkeypatch) <= 1, (spacing, settings)


@pytest.mark.parametrize("steps", (14, 15))
@pytest.mark.parametrize("final", ("zero", "sigma_min"))
def test_dpm_lower_order_boundary(steps, final, monkeypatch):
    """diffusers drops to lower orders at the end only below 15 steps; check both sides of it."""
    config = {**SD15, "final_sigmas_type": final}
    for spacing in SPACINGS:
        ours, theirs = pair("dpmpp_2m", config, spacing)
        assert compare(ours, theirs, steps, monkeypatch) <= 1


@pytest.mark.parametrize("steps", (1, 4, 20))
def test_ddim_eta_matches_diffusers(steps, monkeypatch):
    from nanoedge.runtime.schedulers import DDIMScheduler

    for eta in (0.5, 1.0):
        ours = DDIMScheduler(SD15, eta=eta)
        assert ours.needs_noise
        theirs = diffusers.DDIMScheduler.from_config(SD15)
        assert compare(ours, theirs, steps, monkeypatch, eta=eta) <= 1


def test_dpmpp_2m_karras_alias(monkeypatch):
    ours = make_scheduler("DPM++ 2M Karras", SD15)
    theirs = diffusers.DPMSolverMultistepScheduler.from_config(SD15, use_karras_sigmas=True)
    assert compare(ours, theirs, 20, monkeypatch) <= 1


class _Float64Numpy(types.ModuleType):
    """numpy with ``float32`` meaning ``float64``: our scheduler code, run at double precision."""

    def __getattr__(self, name: str):
        return np.float64 if name == "float32" else getattr(np, name)


def _trajectory(make, steps: int, dtype) -> list[np.ndarray]:
    """Every step's latents of one loop driven by :func:`fake_unet`'s formula in ``dtype``."""
    sched = make()
    sched.set_timesteps(steps)
    rng = np.random.default_rng(0)
    start = rng.standard_normal(SHAPE, dtype=np.float32)
    noises = [rng.standard_normal(SHAPE, dtype=np.float32) for _ in sched.timesteps]
    x = start.astype(dtype) * dtype(sched.init_noise_sigma)
    out = []
    for i, t in enumerate(sched.timesteps):
        x_in = sched.scale_model_input(x, t)
        model_output = (0.95 * x_in + 0.1 * np.sin(2.0 * x_in + float(t) / 100.0)).astype(dtype)
        noise = noises[i].astype(dtype) if sched.needs_noise else None
        x = sched.step(model_output, t, x, noise=noise)
        out.append(np.asarray(x, dtype=np.float64))
    return out


@pytest.mark.parametrize(
    "name, config, spacing, steps",
    [
        ("euler_a", V_PRED, "linspace", 50),
        ("ddim", {**SD15, "beta_schedule": "squaredcos_cap_v2"}, "trailing", 1),
        ("ddim", {**SD15, "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02}, "trailing", 1),
        ("ddim", {**SD15, "beta_schedule": "squaredcos_cap_v2"}, "trailing", 20),
    ],
)
def test_float32_is_as_exact_as_diffusers(name, config, spacing, steps, monkeypatch):
    """Where the two float32 loops differ most (by CPU), neither is the less exact one.

    The same code run in float64 is the exact answer both float32 loops approximate; ours must
    be no farther from it than diffusers' float32 loop is, give or take the rounding bound.
    """
    ref_config = {**config, "timestep_spacing": spacing}
    ours32 = _trajectory(lambda: make_scheduler(name, config, timestep_spacing=spacing), steps, np.float32)
    with monkeypatch.context() as patch:
        for module in {sys.modules[type(make_scheduler(n, SD15)).__module__] for n in SCHEDULER_NAMES} | {
            sys.modules["nanoedge.runtime.schedulers.base"]
        }:
            patch.setattr(module, "np", _Float64Numpy("numpy64"))
        exact = _trajectory(lambda: make_scheduler(name, config, timestep_spacing=spacing), steps, np.float64)
    theirs = DIFFUSERS[name].from_config(ref_config)
    theirs.set_timesteps(steps)
    rng = np.random.default_rng(0)
    start = rng.standard_normal(SHAPE, dtype=np.float32)
    noises = [rng.standard_normal(SHAPE, dtype=np.float32) for _ in theirs.timesteps]
    monkeypatch.setattr(sys.modules[type(theirs).__module__], "randn_tensor", NoiseFeed(noises), raising=False)
    y = torch.from_numpy(start) * theirs.init_noise_sigma
    theirs32 = []
    for t in theirs.timesteps:
        y_in = theirs.scale_model_input(y, t)
        kwargs = {"eta": 0.0} if name == "ddim" else {}
        y = theirs.step(torch.from_numpy(fake_unet(y_in.numpy(), float(t))), t, y, **kwargs).prev_sample
        theirs32.append(y.numpy().astype(np.float64))
    # The float64 run really is another precision (the patch reached every module it uses).
    assert max(float(np.abs(o - e).max()) for o, e in zip(ours32, exact)) > 0
    for ours_x, their_x, exact_x in zip(ours32, theirs32, exact):
        ours_error = float(np.abs(ours_x - exact_x).max())
        their_error = float(np.abs(their_x - exact_x).max())
        assert ours_error <= their_error + step_tolerance(float(np.abs(exact_x).max())), (ours_error, their_error)


def test_use_default_values_follow_diffusers():
    """Keys the writing class only defaulted do not override the new class's defaults."""
    written = diffusers.DDIMScheduler.from_config(SD15).config  # records _use_default_values
    config = dict(written)
    assert "timestep_spacing" in config.get("_use_default_values", [])
    for name in ("euler", "dpmpp_2m", "lcm"):
        ours = make_scheduler(name, config)
        theirs = DIFFUSERS[name].from_config(config)
        ours.set_timesteps(7)
        theirs.set_timesteps(7)
        np.testing.assert_allclose(ours.timesteps, theirs.timesteps.numpy(), rtol=0, atol=1e-4)


# -- the interface the pipeline relies on -----------------------------------------------------


def test_default_comes_from_class_name():
    assert type(make_scheduler(None, SD15)).__name__ == "PNDMScheduler"
    assert type(make_scheduler(None, LCM)).__name__ == "LCMScheduler"


@pytest.mark.parametrize(
    "alias, canonical",
    [
        ("euler-ancestral", "euler_a"),
        ("euler_ancestral", "euler_a"),
        ("Euler a", "euler_a"),
        ("k_euler_a", "euler_a"),
        ("k_euler", "euler"),
        ("EULER", "euler"),
        ("dpm++2m", "dpmpp_2m"),
        ("dpmpp-2m", "dpmpp_2m"),
        ("DPM++ 2M", "dpmpp_2m"),
        ("plms", "pndm"),
        ("DDIMScheduler", "ddim"),
        ("EulerAncestralDiscreteScheduler", "euler_a"),
        ("LCM", "lcm"),
    ],
)
def test_aliases(alias, canonical):
    assert type(make_scheduler(alias, SD15)) is type(make_scheduler(canonical, SD15))


def test_names_set_their_algorithm():
    dpm = make_scheduler("dpmpp_2m", {**SD15, "algorithm_type": "sde-dpmsolver++", "solver_order": 3})
    assert dpm.config["algorithm_type"] == "dpmsolver++" and dpm.config["solver_order"] == 2
    assert not dpm.needs_noise


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError) as excinfo:
        make_scheduler("heun_karras_turbo", SD15)
    for name in SCHEDULER_NAMES:
        assert name in str(excinfo.value)


def test_unknown_class_and_bad_options():
    with pytest.raises(ValueError, match="UniPCMultistepScheduler"):
        make_scheduler(None, {**SD15, "_class_name": "UniPCMultistepScheduler"})
    with pytest.raises(ValueError, match="timestep_spacing"):
        make_scheduler("euler", SD15, timestep_spacing="sideways")
    with pytest.raises(ValueError, match="beta_schedule"):
        make_scheduler("ddim", {**SD15, "beta_schedule": "cubic"})
    with pytest.raises(ValueError, match="prediction_type"):
        make_scheduler("euler_a", {**SD15, "prediction_type": "sample"})
    with pytest.raises(ValueError, match="use_beta_sigmas"):
        make_scheduler("euler", {**SD15, "use_beta_sigmas": True})


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_missing_noise_is_an_error(name):
    sched = make_scheduler(name, SD15)
    sched.set_timesteps(4)
    t = sched.timesteps[0]
    x = np.zeros(SHAPE, dtype=np.float32)
    x_in = sched.scale_model_input(x, t)
    if sched.needs_noise:
        with pytest.raises(ValueError, match="noise"):
            sched.step(x_in, t, x)
        with pytest.raises(ValueError, match="shape"):
            sched.step(x_in, t, x, noise=np.zeros((1, 4, 8, 8), dtype=np.float32))
    else:
        sched.step(x_in, t, x)  # deterministic schedulers ignore noise=None


def test_needs_noise_flags():
    flags = {name: make_scheduler(name, SD15).needs_noise for name in SCHEDULER_NAMES}
    assert flags == {"pndm": False, "ddim": False, "euler": False, "euler_a": True, "dpmpp_2m": False, "lcm": True}


def test_step_before_set_timesteps():
    with pytest.raises(RuntimeError, match="set_timesteps"):
        make_scheduler("ddim", SD15).step(np.zeros(SHAPE, np.float32), 1, np.zeros(SHAPE, np.float32))


def test_step_count_limits():
    with pytest.raises(ValueError, match="original_inference_steps"):
        make_scheduler("lcm", LCM).set_timesteps(51)
    with pytest.raises(ValueError, match="at least 4"):
        make_scheduler("pndm", {**SD15, "skip_prk_steps": False}).set_timesteps(3)
    with pytest.raises(ValueError, match="num_inference_steps"):
        make_scheduler("euler", SD15).set_timesteps(0)


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_batch_items_are_independent(name):
    """A request's latents must not depend on what else shares its batch."""

    def run(start: np.ndarray, noises: list[np.ndarray]) -> np.ndarray:
        sched = make_scheduler(name, SD15, timestep_spacing="trailing")
        sched.set_timesteps(6)
        x = start * np.float32(sched.init_noise_sigma)
        for t, noise in zip(sched.timesteps, noises):
            x_in = sched.scale_model_input(x, t)
            x = sched.step(fake_unet(x_in, float(t)), t, x, noise=noise if sched.needs_noise else None)
        return x

    rng = np.random.default_rng(3)
    start = rng.standard_normal(SHAPE, dtype=np.float32)
    noises = [rng.standard_normal(SHAPE, dtype=np.float32) for _ in range(8)]
    both = run(start, noises)
    first = run(start[:1], [n[:1] for n in noises])
    np.testing.assert_array_equal(both[:1], first)


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_output_keeps_sample_dtype(name):
    sched = make_scheduler(name, SD15)
    sched.set_timesteps(3)
    t = sched.timesteps[0]
    x = np.ones(SHAPE, dtype=np.float16)
    x_in = sched.scale_model_input(x, t)
    assert x_in.dtype == np.float16
    noise = np.zeros(SHAPE, dtype=np.float32) if sched.needs_noise else None
    assert sched.step(x_in.astype(np.float32), t, x, noise=noise).dtype == np.float16


def test_runtime_import_is_torch_free():
    code = (
        "import sys, nanoedge.runtime.schedulers as s\n"
        "s.make_scheduler('euler_a', {'_class_name': 'PNDMScheduler'}).set_timesteps(4)\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr

"""Creating one onnxruntime session for a target profile (providers, options, threads).

Kept apart from the pipeline so that quantization, benchmarks and compatibility checks open
models exactly the way the runtime does.
"""

from __future__ import annotations

from pathlib import Path

from nanoedge.core import settings
from nanoedge.core.errors import NanoedgeError, PackageError, TargetUnavailableError
from nanoedge.core.settings import cache_dir

from .profiles import TargetProfile


def _expand(options: dict[str, str]) -> dict[str, str]:
    expanded = {k: v.replace("{cache_dir}", str(cache_dir())) for k, v in options.items()}
    for key, value in expanded.items():
        if key.endswith(("cache_path", "cache_dir", "CacheDirectory")):
            Path(value).mkdir(parents=True, exist_ok=True)
    return expanded


def _provider_options(profile: TargetProfile, provider: str) -> dict[str, str]:
    """The profile's options for ``provider``, with NANOEDGE_OPENVINO_DEVICE choosing OpenVINO's device."""
    options = _expand(profile.provider_options.get(provider, {}))
    device = settings.openvino_device()
    if provider == "OpenVINOExecutionProvider" and device and "device_type" in options:
        options["device_type"] = device
    return options


def requested_threads(threads: int | None) -> int | None:
    """The caller's thread count, else NANOEDGE_THREADS, else None (the provider's default: all cores)."""
    if threads is None:
        threads = settings.threads()
    return threads


def session_options(
    profile: TargetProfile,
    threads: int | None = None,
    extra_config: dict[str, str] | None = None,
    allow_fallback: bool | None = None,
    log_level: int = 3,
):
    """SessionOptions for ``profile``; ``allow_fallback=True`` lifts a full-offload rule (for checks)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile.providers and profile.providers[0] == "CPUExecutionProvider":
        # No memory-pattern preplanning on CPU: for a 512 px UNet step it reserved one block for
        # every activation of the run (peak RSS 5.8 GB fp32 / 2.9 GB int8) where the arena alone
        # reuses freed buffers (3.6 / 1.7 GB) at the same speed; see docs/speed.md.
        options.enable_mem_pattern = False
        # Idle pool threads sleep instead of spinning between ops (NANOEDGE_SPIN=1 restores
        # spinning): every op of a 512 px step is milliseconds long, so waking costs nothing
        # measurable, while spinning burnt 5-20% more CPU per step and lost wall time whenever
        # anything else wanted the cores (docs/speed.md).
        if not settings.spin():
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    threads = requested_threads(threads)
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = log_level  # 3 = errors only: ORT warnings are noise for end users
    config = dict(profile.session_config)
    if allow_fallback:
        config.pop("session.disable_cpu_ep_fallback", None)
    config.update(extra_config or {})
    for key, value in config.items():
        options.add_session_config_entry(key, value)
    return options


def create_session(
    model_path: Path,
    profile: TargetProfile,
    threads: int | None = None,
    extra_config: dict[str, str] | None = None,
    allow_fallback: bool | None = None,
    log_level: int = 3,
):
    """Open ``model_path`` on the profile's providers; a broken file becomes a PackageError.

    A profile whose backend is OpenVINO's own runtime gets an :class:`OpenVINOSession`, which
    answers ``run``/``get_inputs``/``get_outputs`` like an onnxruntime session: callers never
    branch on the backend. onnxruntime-only arguments (``extra_config``, ``allow_fallback``,
    ``log_level``) do not apply to it.
    """
    if profile.backend == "openvino":
        from .openvino_native import open_session

        return open_session(Path(model_path), requested_threads(threads))
    import onnxruntime as ort

    options = session_options(profile, threads, extra_config, allow_fallback, log_level)
    try:
        if profile.plugin:
            from .plugins import native_stdout_to_stderr, plugin_devices, plugin_provider_options

            devices = plugin_devices(profile)
            if not devices:
                raise TargetUnavailableError(f"{profile.accelerator} reports no device", hint=f"check the {profile.pip_package} install")
            options.add_provider_for_devices(devices, plugin_provider_options(profile, requested_threads(threads)))
            with native_stdout_to_stderr():
                return ort.InferenceSession(str(model_path), sess_options=options)
        available = set(ort.get_available_providers())
        providers = [(p, _provider_options(profile, p)) for p in profile.providers if p in available]
        if not providers:
            providers = [("CPUExecutionProvider", {})]
        return ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
    except NanoedgeError:  # already says what is wrong and what to do
        raise
    except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
        if not Path(model_path).exists():
            raise PackageError(f"model file '{model_path}' is missing", hint="re-export the package") from exc
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if profile.full_offload and ("fallback" in first_line.lower() or "EP_FAIL" in first_line or "finalize" in first_line):
            raise TargetUnavailableError(
                f"{profile.accelerator} cannot run '{model_path}' entirely: {first_line}",
                hint=f"run `nanoedge check PACKAGE --target {profile.name}` to see which ops fall back; "
                "export with --static-shape and quantize (w8a16 or int8) for this target",
            ) from exc
        raise PackageError(
            f"onnxruntime could not load '{model_path}': {first_line}",
            hint="the file is corrupt or incomplete: copy the package again or re-run `nanoedge export`",
        ) from exc

"""Creating onnxruntime sessions for a target profile.

Kept apart from the pipeline so that quantization, benchmarks and compatibility checks open
models exactly the way the runtime does.
"""

from __future__ import annotations

import os
from pathlib import Path

from nanoedge.runtime.errors import PackageError

from .profiles import TargetProfile


def session_options(profile: TargetProfile, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is None:
        env = os.environ.get("NANOEDGE_THREADS")
        threads = int(env) if env else None
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: ORT warnings are noise for end users
    for key, value in profile.session_config.items():
        options.add_session_config_entry(key, value)
    return options


def create_session(model_path: Path, profile: TargetProfile, threads: int | None = None):
    """Open ``model_path`` on the profile's providers; a broken file becomes a PackageError."""
    import onnxruntime as ort

    providers = profile.available_providers() or ["CPUExecutionProvider"]
    options_by_provider = dict(zip(profile.providers, profile.provider_options))
    provider_args = [(p, options_by_provider.get(p, {})) for p in providers]
    try:
        return ort.InferenceSession(str(model_path), sess_options=session_options(profile, threads), providers=provider_args)
    except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
        if not Path(model_path).exists():
            raise PackageError(f"model file '{model_path}' is missing", hint="re-export the package") from exc
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PackageError(
            f"onnxruntime could not load '{model_path}': {first_line}",
            hint="the file is corrupt or incomplete: copy the package again or re-run `nanoedge export`",
        ) from exc

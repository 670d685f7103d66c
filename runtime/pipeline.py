"""The text-to-image pipeline: tokenizer -> text encoder -> UNet loop -> VAE decoder.

One :class:`Pipeline` holds the three onnxruntime sessions of a package and turns prompts into
PIL images. Randomness comes only from ``numpy.random.default_rng(seed + i)`` for image ``i``
of a request, drawn per image, so an image does not depend on what else shares its batch:
same package + parameters + seed gives the same bytes, whether the server batched it or not.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections import OrderedDict
from typing import Sequence

import numpy as np
from PIL import Image

from nanoedge.core.errors import InvalidRequestError, TargetUnavailableError
from nanoedge.core.integrity import verify_package
from nanoedge.core.limits import DEFAULT_GUIDANCE, DEFAULT_STEPS, MAX_GUIDANCE, MAX_IMAGES, MAX_REQUEST_SEED, MAX_STEPS, RANDOM_SEED_BELOW
from nanoedge.core.manifest import COMPONENTS, Manifest
from nanoedge.core.sizes import Size
from nanoedge.targets.profiles import package_misfit
from nanoedge.targets.resolve import resolve_target_with_reason

from .images import decoded_to_pil
from .preview import DenoiseStep, LinearPreview, StepCallback, decoded_to_rgb, denoised_estimate, prediction_type
from .requests import CancelCheck, GenerationCancelled, GenerationRequest, GenerationResult, Observer, ProgressCallback, ResolvedRequest
from .schedulers import SCHEDULER_NAMES, make_scheduler
from .schedulers.base import make_alphas_cumprod
from .session_set import SessionSet
from .tokenizer import PromptTokenizer

log = logging.getLogger(__name__)

def _as_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) and not (isinstance(value, float) and value.is_integer()):
        raise InvalidRequestError(f"{name} must be an integer, got {value!r}", param=name)
    return int(value)


class Pipeline:
    """A loaded package ready to generate images. Not thread-safe: use one caller at a time."""

    def __init__(
        self, manifest: Manifest, target: str = "cpu", threads: int | None = None, two_pass: bool = False, reduce_memory: bool = False
    ) -> None:
        self.manifest = manifest
        # target_reason: why this target ("requested", or auto's measured choice); bench prints it
        self.profile, self.target_reason = resolve_target_with_reason(target, manifest, threads, measure=time_auto_candidate)
        misfit = package_misfit(self.profile, manifest)
        if misfit:
            raise TargetUnavailableError(f"package '{manifest.root}' cannot run on target {self.profile.name}: {misfit}")
        self.two_pass = two_pass
        root = manifest.folder()
        tok = manifest.tokenizer
        self.tokenizer = PromptTokenizer(root / tok["path"], int(tok["max_length"]), int(tok["pad_id"]))
        self.sizes = manifest.size_rules()
        self.latent = manifest.latent
        self.decoder = manifest.decoder()
        self.scheduler_config = manifest.scheduler_config()
        self.reduce_memory = reduce_memory
        self.sessions = SessionSet(manifest, self.profile, threads, resident=not reduce_memory)
        self._static_batch = {name: self._static_batch_of(name) for name in COMPONENTS}
        self._embedding_cache: OrderedDict[str, tuple[np.ndarray, bool]] = OrderedDict()
        self._embedding_cache_size = 32
        self.observers: list[Observer] = []
        self._linear_preview = LinearPreview(int(self.latent["scale_factor"]))
        self._alphas_cumprod: np.ndarray | None = None

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        path: "str | os.PathLike[str] | None" = None,
        target: str = "cpu",
        *,
        verify: bool = True,
        threads: int | None = None,
        two_pass: bool = False,
        reduce_memory: bool = False,
    ) -> "Pipeline":
        """Open a package folder (``None``: the built-in default model) on ``target``.

        ``verify`` checks every file against the manifest's sha256 (cached by size + mtime).
        ``two_pass`` runs classifier-free guidance as two UNet calls of one instead of one of
        two: slower, but the UNet's peak memory roughly halves.
        ``reduce_memory`` loads each model just before its stage and releases it after (like
        Apple's ml-stable-diffusion ``reduceMemory``): the peak is the largest stage, not all
        three models plus the largest stage, at the cost of loading the models for every image.
        """
        if path is None:
            from .default_model import default_package_path

            path = default_package_path()
        manifest = Manifest.load(path)
        if verify:
            verify_package(manifest)
        return cls(manifest, target=target, threads=threads, two_pass=two_pass, reduce_memory=reduce_memory)

    @property
    def id(self) -> str:
        return self.manifest.id

    def clear_caches(self) -> None:
        """Forget cached prompt embeddings (so observers see every text-encoder call)."""
        self._embedding_cache.clear()

    def _static_batch_of(self, component: str) -> int | None:
        """The fixed batch of a static-shape component, read from the manifest (no session needed)."""
        inputs = self.manifest.component(component).get("inputs") or []
        batch = inputs[0]["shape"][0] if inputs and inputs[0].get("shape") else None
        return batch if isinstance(batch, int) else None

    # -- requests ------------------------------------------------------------------------------
    def resolve(self, request: GenerationRequest) -> ResolvedRequest:
        """Fill defaults and validate everything before any inference starts."""
        defaults = self.manifest.defaults
        if not isinstance(request.prompt, str):
            raise InvalidRequestError("prompt must be a string", param="prompt")
        n = _as_int(request.n, "n")
        if not 1 <= n <= MAX_IMAGES:
            raise InvalidRequestError(f"n must be between 1 and {MAX_IMAGES}, got {n}", param="n")
        steps = _as_int(request.steps if request.steps is not None else defaults.get("steps", DEFAULT_STEPS), "steps")
        if not 1 <= steps <= MAX_STEPS:
            raise InvalidRequestError(f"steps must be between 1 and {MAX_STEPS}, got {steps}", param="steps")
        guidance = request.guidance if request.guidance is not None else defaults.get("guidance", DEFAULT_GUIDANCE)
        if (
            isinstance(guidance, bool)
            or not isinstance(guidance, (int, float))
            or not np.isfinite(guidance)
            or not 0 <= guidance <= MAX_GUIDANCE
        ):
            raise InvalidRequestError(f"guidance must be a number between 0 and {MAX_GUIDANCE:g}, got {guidance!r}", param="guidance")
        scheduler = (request.scheduler or self.manifest.default_scheduler or "").strip().lower() or None
        try:
            make_scheduler(scheduler, self.scheduler_config)
        except ValueError as exc:
            raise InvalidRequestError(str(exc), hint=f"known schedulers: {', '.join(SCHEDULER_NAMES)}", param="scheduler") from None
        try:  # some schedulers limit the step count (LCM <= 50, PNDM's PRK path >= 4)
            make_scheduler(scheduler, self.scheduler_config).set_timesteps(steps)
        except ValueError as exc:
            raise InvalidRequestError(f"{scheduler or 'the default scheduler'} cannot run {steps} steps: {exc}", param="steps") from None
        seed = request.seed if request.seed is not None else secrets.randbelow(RANDOM_SEED_BELOW)
        seed = _as_int(seed, "seed")
        if not 0 <= seed <= MAX_REQUEST_SEED:
            raise InvalidRequestError(f"seed must be between 0 and {MAX_REQUEST_SEED}, got {seed}", param="seed")
        run_size, output_size = self.sizes.resolve(request.size if request.size is not None else defaults.get("size"))
        negative = request.negative_prompt if request.negative_prompt is not None else ""
        if not isinstance(negative, str):
            raise InvalidRequestError("negative_prompt must be a string", param="negative_prompt")
        return ResolvedRequest(
            prompt=request.prompt,
            negative_prompt=negative,
            n=n,
            seed=seed,
            run_size=run_size,
            output_size=output_size,
            steps=steps,
            guidance=float(guidance),
            scheduler=scheduler or "default",
        )

    def generate(
        self,
        prompt: str,
        negative_prompt: str | None = None,
        size: "str | Size | None" = None,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int | None = None,
        scheduler: str | None = None,
        n: int = 1,
        *,
        two_pass: bool | None = None,
        latents: np.ndarray | None = None,
        progress: ProgressCallback | None = None,
        on_step: StepCallback | None = None,
    ) -> list[Image.Image]:
        """Generate ``n`` images for one prompt; ``None`` arguments take the package defaults.

        ``latents`` (``[n, 4, h/8, w/8]``, before scaling by the scheduler's initial sigma)
        replaces the seeded noise, for comparisons with other implementations.
        ``progress(step, total)`` and ``on_step(DenoiseStep)`` are called after every denoising
        step; ``on_step`` also sees the latents (for previews, see :meth:`preview`).
        """
        request = GenerationRequest(prompt, negative_prompt, n, seed, size, steps, guidance, scheduler)
        result = self.generate_batch([request], two_pass=two_pass, latents=latents, progress=progress, on_step=on_step)[0]
        return result.images

    def generate_batch(
        self,
        requests: Sequence["GenerationRequest | ResolvedRequest"],
        *,
        two_pass: bool | None = None,
        latents: np.ndarray | None = None,
        progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
        on_step: StepCallback | None = None,
    ) -> list[GenerationResult]:
        """Run several requests that share size, steps, guidance and scheduler in one loop.

        Each image is exactly what it would be alone (per-image noise); the UNet just sees a
        bigger batch. Raises InvalidRequestError if the requests are not compatible, and
        GenerationCancelled when ``cancel()`` turns true (checked before each denoising step
        and before decoding, so a server stops abandoned work within one step).
        """
        import time

        resolved = [r if isinstance(r, ResolvedRequest) else self.resolve(r) for r in requests]
        if not resolved:
            return []
        key = resolved[0].batch_key()
        if any(r.batch_key() != key for r in resolved):
            raise InvalidRequestError("requests in one batch must share size, steps, guidance and scheduler")
        first = resolved[0]
        two_pass = self.two_pass if two_pass is None else two_pass
        timings: dict[str, float] = {}

        started = time.perf_counter()
        prompts = [r.prompt for r in resolved for _ in range(r.n)]
        negatives = [r.negative_prompt for r in resolved for _ in range(r.n)]
        cond, truncated = self._encode(prompts)
        use_cfg = first.guidance > 1.0
        uncond = self._encode(negatives)[0] if use_cfg else None
        self.sessions.end_stage("text_encoder")
        timings["text_encoder_s"] = time.perf_counter() - started

        scheduler = make_scheduler(None if first.scheduler == "default" else first.scheduler, self.scheduler_config)
        scheduler.set_timesteps(first.steps)
        generators = [np.random.default_rng(r.seed + i) for r in resolved for i in range(r.n)]
        channels = int(self.latent["channels"])
        factor = int(self.latent["scale_factor"])
        shape = (channels, first.run_size.height // factor, first.run_size.width // factor)
        if latents is None:
            sample = np.stack([g.standard_normal(shape, dtype=np.float32) for g in generators])
        else:
            sample = np.asarray(latents, dtype=np.float32)
            if sample.shape != (len(generators), *shape):
                raise InvalidRequestError(f"latents must have shape {(len(generators), *shape)}, got {sample.shape}")
        sample = sample * np.float32(scheduler.init_noise_sigma)

        started = time.perf_counter()
        total = len(scheduler.timesteps)
        for index, t in enumerate(scheduler.timesteps):
            if cancel is not None and cancel():
                raise GenerationCancelled(f"cancelled before denoising step {index + 1} of {total}")
            model_input = scheduler.scale_model_input(sample, t)
            noise_pred = self._predict_noise(model_input, float(t), cond, uncond, first.guidance, two_pass, last=index == total - 1)
            noise = np.stack([g.standard_normal(shape, dtype=np.float32) for g in generators]) if scheduler.needs_noise else None
            sample = scheduler.step(noise_pred, t, sample, noise=noise).astype(np.float32)
            if on_step is not None:
                on_step(DenoiseStep(index + 1, total, float(t), model_input, noise_pred, sample))
            if progress is not None:
                progress(index + 1, total)
        self.sessions.end_stage("unet")
        timings["unet_s"] = time.perf_counter() - started

        if cancel is not None and cancel():
            raise GenerationCancelled("cancelled before decoding")
        started = time.perf_counter()
        decoded = self._decode(sample)
        self.sessions.end_stage("vae_decoder")
        # The first real decodes teach previews their colours; a few-step image (the server's
        # one-step warm-up) is still noise and would teach the wrong ones.
        if self._linear_preview.learning and first.steps >= 4:
            self._linear_preview.fit(sample, decoded)
        timings["vae_decoder_s"] = time.perf_counter() - started

        results, offset = [], 0
        for r in resolved:  # each request gets its own output size (resizing is per request)
            images = decoded_to_pil(decoded[offset : offset + r.n], r.output_size)
            results.append(
                GenerationResult(images=images, request=r, truncated_prompt=any(truncated[offset : offset + r.n]), timings=dict(timings))
            )
            offset += r.n
        return results

    def preview(self, step: DenoiseStep, rows: slice | None = None) -> np.ndarray:
        """A cheap RGB preview ``[B, H, W, 3]`` (uint8) of the images at ``step`` (rows ``rows``).

        Shows the clean-latent estimate, decoded by the package's decoder when it is a tiny
        (TAESD-family) one and the sessions stay resident, else by the fitted linear map at
        latent resolution. See :mod:`nanoedge.runtime.preview`.
        """
        if self._alphas_cumprod is None:
            self._alphas_cumprod = make_alphas_cumprod(self.scheduler_config)
        if rows is not None:
            step = DenoiseStep(step.index, step.total, step.timestep, step.model_input[rows], step.noise_pred[rows], step.sample[rows])
        estimate = denoised_estimate(step, self._alphas_cumprod, prediction_type(self.scheduler_config))
        if self.decoder["family"] == "taesd" and not self.reduce_memory:
            return decoded_to_rgb(self._decode(estimate))
        return self._linear_preview.rgb(estimate)

    # -- components ----------------------------------------------------------------------------
    def _run(self, component: str, feeds: dict[str, np.ndarray], chunk: int | None = None, last: bool = True) -> np.ndarray:
        """Run a component over the batch axis in chunks (a static package's batch, or ``chunk``).

        A short last chunk of a static-batch model is padded by repeating its last row, and the
        padding is cut from the result. ``last``: this call ends the component's stage, so its
        final run hands the arena memory it no longer needs back to the system (at 512 px the
        UNet's buffers would otherwise sit under the VAE decoder's: 0.15 GB of peak RSS).
        """
        session = self.sessions[component]
        total = next(iter(feeds.values())).shape[0]
        size = self._static_batch[component] or chunk or total
        outputs = []
        for start in range(0, total, size):
            part = {k: v[start : start + size] for k, v in feeds.items()}
            rows = next(iter(part.values())).shape[0]
            if rows < size and self._static_batch[component]:
                part = {k: np.concatenate([v, np.repeat(v[-1:], size - rows, axis=0)]) for k, v in part.items()}
            final = last and start + size >= total
            result = session.run(None, part, self.sessions.end_of_stage_options() if final else None)[0]
            for observer in self.observers:
                observer(component, part, result)
            outputs.append(result[:rows])
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

    def _encode(self, texts: list[str]) -> tuple[np.ndarray, list[bool]]:
        """Text embeddings ``[B, 77, D]``; each distinct text runs once, recent ones are cached.

        The cache (a small LRU) mostly saves the empty negative prompt and a server's repeated
        prompts; it holds embeddings, not images, so results are unchanged.
        """
        missing = [t for t in dict.fromkeys(texts) if t not in self._embedding_cache]
        if missing:
            ids, truncated = self.tokenizer.encode(missing)
            embeddings = self._run("text_encoder", {"input_ids": ids}).astype(np.float32)
            for text, emb, cut in zip(missing, embeddings, truncated):
                if cut:
                    log.warning("prompt longer than %d tokens was truncated: %.60s...", self.tokenizer.max_length, text)
                self._embedding_cache[text] = (emb, cut)
        entries = [self._embedding_cache[t] for t in texts]
        for text in texts:
            self._embedding_cache.move_to_end(text)
        while len(self._embedding_cache) > self._embedding_cache_size:
            self._embedding_cache.popitem(last=False)
        return np.stack([e[0] for e in entries]), [e[1] for e in entries]

    def _predict_noise(self, sample, t, cond, uncond, guidance, two_pass, last: bool = False) -> np.ndarray:
        batch = sample.shape[0]
        if uncond is None:
            feeds = {"sample": sample, "timestep": np.full((batch,), t, dtype=np.float32), "encoder_hidden_states": cond}
            return self._run("unet", feeds, last=last)
        feeds = {
            "sample": np.concatenate([sample, sample]),
            "timestep": np.full((2 * batch,), t, dtype=np.float32),
            "encoder_hidden_states": np.concatenate([uncond, cond]),
        }
        out = self._run("unet", feeds, chunk=batch if two_pass else None, last=last)
        noise_uncond, noise_cond = out[:batch], out[batch:]
        return noise_uncond + np.float32(guidance) * (noise_cond - noise_uncond)

    def _decode(self, sample: np.ndarray) -> np.ndarray:
        """VAE decode one image at a time: at 512 px the decoder's activations dominate memory.

        The decoder's own latent scaling comes from the manifest (0.18215 for SD's KL VAE, 1.0
        for a TAESD decoder exported with ``--vae-decoder``), and its output is brought to the
        [-1, 1] range ``decoded_to_pil`` expects.
        """
        latents = sample / np.float32(self.decoder["scaling_factor"])
        if self.decoder["shift_factor"]:
            latents = latents + np.float32(self.decoder["shift_factor"])
        decoded = self._run("vae_decoder", {"latent_sample": latents.astype(np.float32)}, chunk=1)
        low, high = self.decoder["output_range"]
        if (low, high) != (-1.0, 1.0):
            decoded = (decoded - np.float32(low)) * np.float32(2.0 / (high - low)) - np.float32(1.0)
        return decoded


#: UNet steps of the image ``auto`` times each CPU target with (after a 1-step warm-up).
AUTO_PROBE_STEPS = 2


def time_auto_candidate(package_root: "str | os.PathLike[str]", target: str, threads: int | None) -> float:
    """Predicted seconds for one default image of the package on ``target``: ``auto``'s probe.

    Text encoder + default steps x (UNet time per step of an ``AUTO_PROBE_STEPS``-step image) +
    VAE decoder, after a 1-step warm-up image that pays compilation and first allocations. The
    choice and its cache live in ``nanoedge.targets.autoselect``, which receives this function
    (the targets layer cannot run a pipeline).
    """
    pipe = Pipeline.load(package_root, target=target, threads=threads, verify=False)
    try:
        default = pipe.resolve(GenerationRequest("auto target probe", seed=0))
        pipe.generate_batch([pipe.resolve(GenerationRequest("auto target probe", seed=0, steps=1))])
        pipe.clear_caches()
        timed = pipe.generate_batch([pipe.resolve(GenerationRequest("auto target probe", seed=0, steps=AUTO_PROBE_STEPS))])[0]
        t = timed.timings
        return t["text_encoder_s"] + default.steps * t["unet_s"] / AUTO_PROBE_STEPS + t["vae_decoder_s"]
    finally:
        del pipe

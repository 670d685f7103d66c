"""Request limits and defaults: one table, used by the pipeline, the server, quantize and export.

A value here is the only place a limit is written; error messages quote these names' values.
Per-package defaults (``defaults.steps`` / ``defaults.guidance`` in ``nanoedge.json``) win
over the fallbacks below, which apply to a package that records none.
"""

from __future__ import annotations

#: Denoising steps when neither the request nor the package says (diffusers' SD default).
DEFAULT_STEPS = 25
#: Classifier-free guidance scale when neither the request nor the package says.
DEFAULT_GUIDANCE = 7.5

#: Most denoising steps one request may ask for (pipeline, server, quantize calibration).
MAX_STEPS = 500
#: Largest guidance scale accepted (0 .. MAX_GUIDANCE; <= 1 turns guidance off).
MAX_GUIDANCE = 50.0
#: Most images one pipeline call makes (``n``).
MAX_IMAGES = 16
#: Most images one HTTP request may ask for: OpenAI's images API accepts n = 1..10.
MAX_API_IMAGES = 10
#: Most streamed previews per image (``partial_images``): OpenAI's images API accepts 0..3.
MAX_PARTIAL_IMAGES = 3
#: Largest int64; image ``i`` of a request uses seed ``seed + i``, so a request's seed is at
#: most ``MAX_SEED - MAX_IMAGES``.
MAX_SEED = 2**63 - 1
#: Largest seed a request may give (every image's ``seed + i`` stays an int64).
MAX_REQUEST_SEED = MAX_SEED - MAX_IMAGES
#: Unseeded requests draw their seed below this (it fits any client's 32-bit integer).
RANDOM_SEED_BELOW = 2**31
#: Longest prompt or negative prompt the server accepts, in characters.
MAX_PROMPT_CHARS = 32000

"""``GET /`` and ``GET /playground``: one HTML page to try prompts in a browser.

The page is a single file shipped in the package (``static/playground.html``: inline CSS and
JavaScript, no CDN, no build step), so it works on a box with no internet. It talks only to the
public routes the SDKs use: ``GET /v1/models`` for the model list, ``POST
/v1/images/generations`` with ``stream: true`` for the images (so the picture sharpens step by
step) and ``GET /metrics`` for the live panel. What the form offers (the package's sizes, the
styles with their Chinese labels, the quality words, the default steps and guidance) is
written into the page as a JSON block when it is served: it describes the API, not the data
behind it, so the page needs no private route.

Who may load the page (``ServerSettings.playground``): ``open`` (default) serves it without a
key, since it holds no data and every call it makes still needs the key; ``protected`` serves
it only with the key (``Authorization: Bearer KEY``, or HTTP Basic auth with the key as the
password, which makes the browser ask for it); ``off`` removes the routes. The page keeps a key
the user types in ``sessionStorage`` only (gone when the tab closes).
"""

from __future__ import annotations

import html
import json
from functools import lru_cache
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from nanoedge.core.limits import MAX_API_IMAGES, MAX_PARTIAL_IMAGES

from .errors import APIError
from .quality import QUALITY_ALIASES
from .service import ImageService

PLAYGROUND_MODES = ("open", "protected", "off")
PAGE_PATHS = ("/", "/playground")
# Sizes worth offering besides the package's own (the hosted API's common ones).
_COMMON_SIZES = ("512x512", "768x768", "1024x1024", "1536x1024", "1024x1536")


@lru_cache(maxsize=1)
def _template() -> str:
    return resources.files("nanoedge.runtime.server").joinpath("static/playground.html").read_text(encoding="utf-8")


def _sizes(service: ImageService) -> list[str]:
    rules = service.sizes.rules
    candidates = [str(rules.static or rules.native), *(str(s) for s in rules.output), *_COMMON_SIZES]
    offered = []
    for size in dict.fromkeys(candidates):
        try:
            service.sizes.plan(size)
        except APIError:
            continue
        offered.append(size)
    return offered


def _styles(service: ImageService) -> list[dict[str, Any]]:
    labels: dict[str, list[str]] = {name: [] for name in service.styles.names()}
    for alias, name in service.styles.aliases.items():
        if name in labels and not alias.isascii():
            labels[name].append(alias)
    return [{"value": name, "labels": labels[name]} for name in labels]


def page_config(service: ImageService, auth_required: bool) -> dict[str, Any]:
    """What the form offers, taken from the same objects that validate requests."""
    defaults = service.pipeline.manifest.defaults
    quality_labels: dict[str, str] = {}
    for label, canonical in QUALITY_ALIASES.items():
        if not label.isascii():
            quality_labels.setdefault(canonical, label)
    return {
        "model": service.model_id,
        "sizes": _sizes(service),
        "default_size": str(service.sizes.default or service.sizes.rules.static or service.sizes.rules.native),
        "styles": _styles(service),
        "qualities": [
            {"value": q, "label": quality_labels.get(q, ""), "steps": service.quality.plan(q).steps} for q in ("standard", "hd", "low")
        ],
        "default_steps": service.quality.plan("standard").steps,
        "default_guidance": defaults.get("guidance", 7.5),
        "max_images": MAX_API_IMAGES,
        "max_partial_images": MAX_PARTIAL_IMAGES,
        "negative_prompt": True,
        "auth_required": auth_required,
    }


def render_page(service: ImageService, auth_required: bool) -> str:
    config = json.dumps(page_config(service, auth_required), ensure_ascii=False).replace("</", "<\\/")
    return _template().replace("__NANOEDGE_CONFIG__", config).replace("__NANOEDGE_TITLE__", html.escape(service.model_id))


LOADING_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="3"><title>nanoedge</title></head><body style="font-family:system-ui,sans-serif;padding:1rem">
<p role="status">{message} This page reloads by itself.</p></body></html>"""


async def playground(request: Request) -> Response:
    state = request.app.state.server
    try:
        service = state.ready_service()
    except APIError as exc:
        return HTMLResponse(LOADING_PAGE.format(message=html.escape(exc.message)), status_code=exc.status, headers=exc.headers)
    page = render_page(service, state.settings.auth_enabled)
    return HTMLResponse(page, headers={"Cache-Control": "no-store", "Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff"})


# Everything the page needs comes from this origin; images are data: URLs.
_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

"""``nanoedge serve``: a local OpenAI-compatible image server (needs the ``[serve]`` extra).
May import the rest of nanoedge.runtime, nanoedge.targets and nanoedge.core, plus Starlette.

    from nanoedge.runtime.server import ServerSettings, create_app
    app = create_app(lambda: Pipeline.load("pkg"), ServerSettings(aliases=("nano-banana-2",)))

One process, one model, one inference worker fed by a bounded queue (see ``worker.py``);
Starlette and uvicorn are imported only here, never by ``import nanoedge.runtime``.
"""

from __future__ import annotations

from .app import ServerState, create_app
from .settings import ServerSettings

__all__ = ["ServerSettings", "ServerState", "create_app"]

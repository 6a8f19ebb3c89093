"""The FastAPI application: ``create_app(models, settings=..., voices_dir=...)`` serves
already-loaded pipelines (so a test or a script can start it on a model it holds). The
routes live in ``routes/`` (one router per concern); this module only assembles them.

Endpoints (all under ``/v1`` need ``Authorization: Bearer KEY`` when an API key is set):

======================================  ==================================================
``POST /v1/audio/speech``               text -> audio (OpenAI's fields + Chatterbox's own)
``GET /v1/audio/voices``                ``{"voices": [{"id", "name"}, ...]}``
``POST /v1/audio/voices``               multipart ``name`` + ``file`` (or ``audio_sample``)
``GET/DELETE /v1/audio/voices/{id}``    one saved voice
``GET /v1/models``, ``/v1/models/{id}`` OpenAI's model list / model
``GET /v1/audio/models``                ``{"models": [...]}`` with defaults and parameters
``GET /health``                         status, queue and counters per model (no key)
``GET /``                               the web page (no key; it asks for one on a 401)
======================================  ==================================================
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from .. import __version__
from .cancel import AnswerOnCancel
from .errors import install_handlers
from .guard import SiteGuard
from .jobs import ModelWorker
from .routes import ROUTERS
from .state import ServedModel, ServerState, Settings, named_models
from .voices import VoiceLibrary, default_dir, evaluated

__all__ = ["Settings", "create_app"]


def create_app(
    models,
    *,
    settings: Settings | None = None,
    voices_dir=None,
    library: VoiceLibrary | None = None,
):
    """The app serving ``models``: a pipeline, a list of them, or ``{name: pipeline}``
    (the first is the default). Voices live in ``voices_dir`` (default: the user's
    cache, see ``voices.default_dir``)."""
    settings = settings or Settings()
    library = library or VoiceLibrary(voices_dir or default_dir())
    served = {
        name: ServedModel(
            name,
            model,
            ModelWorker(name, settings.max_queue, settings.max_batch),
            evaluated(model.conds),
        )
        for name, model in named_models(models).items()
    }
    state = ServerState(served, library, settings)

    @asynccontextmanager
    async def lifespan(app):
        yield
        state.close()

    # no /docs: FastAPI's pages load their scripts from a CDN (this server works offline)
    app = FastAPI(
        title="chatterbox-mlx",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.server = state
    install_handlers(app)
    app.add_middleware(
        SiteGuard, allowed_hosts=settings.allowed_hosts, cors_origins=settings.cors_origins
    )
    app.add_middleware(AnswerOnCancel)  # outermost: a request cut off by the shutdown
    for router in ROUTERS:
        app.include_router(router)
    return app

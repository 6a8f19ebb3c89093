"""What the running server holds: its ``Settings`` (the command line's limits), the
served models (``ServedModel``: a pipeline, its worker thread, its built-in voice) and
the ``ServerState`` the routes reach through ``request.app.state.server``."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from .. import text as text_mod
from ..audio import speed as speed_mod
from ..constants import SERVER_MAX_BATCH, STREAM_CHUNK_SCHEDULE, STREAM_PROMPT_TOKENS
from .jobs import ModelWorker
from .speech import FORMATS, GENERATION_FIELDS
from .voices import VoiceLibrary


@dataclass(frozen=True)
class Settings:
    """What the command line sets (see ``python -m chatterbox_mlx.server --help``)."""

    api_key: str | None = None
    max_chars: int = 4096
    max_queue: int = 8
    max_batch: int = SERVER_MAX_BATCH  # requests decoding together per model (scheduler)
    max_new_tokens: int = 15000  # speech tokens a request: 600 s at 25 a second
    max_audio_seconds: float = 600.0
    chunk_tokens: int | tuple[int, ...] = STREAM_CHUNK_SCHEDULE
    flow_prompt_tokens: int | None = STREAM_PROMPT_TOKENS
    max_upload_bytes: int = 20 << 20
    max_voice_seconds: float = 60.0
    watermark: bool = True
    request_timeout: float = 30.0  # seconds to receive a request's headers and body
    max_connections: int = 1000  # open connections (fewer where the file limit is lower)
    shutdown_grace: float = 10.0  # seconds a shutdown waits for running responses
    allowed_hosts: tuple[str, ...] = ()  # Host names besides localhost and this machine's
    cors_origins: tuple[str, ...] = ()  # web sites that may call the API from a browser


@dataclass
class ServedModel:
    name: str
    model: object  # a chatterbox_mlx.tts pipeline
    worker: ModelWorker
    builtin: object | None  # the model's built-in voice (Conditionals), kept from startup

    def describe(self, settings: Settings, default: bool) -> dict:
        variant = self.model.variant
        return {
            "id": self.name,
            "name": self.name,
            "object": "model",
            "owned_by": "resemble-ai",
            "variant": variant.name,
            "family": variant.family,
            "default": default,
            "sample_rate": self.model.sr,
            "parameters": [n for n in GENERATION_FIELDS if n in variant.generation],
            "defaults": {k: v for k, v in variant.generation.items() if k in GENERATION_FIELDS},
            "max_new_tokens": settings.max_new_tokens,
            "languages": list(text_mod.SUPPORTED_LANGUAGES) if variant.needs_language else None,
            "speed": [speed_mod.MIN_SPEED, speed_mod.MAX_SPEED],
            "formats": list(FORMATS),
            "builtin_voice": self.builtin is not None,
        }


@dataclass
class ServerState:
    models: dict[str, ServedModel]
    library: VoiceLibrary
    settings: Settings
    started: int = field(default_factory=lambda: int(time.time()))

    @property
    def default(self) -> ServedModel:
        return next(iter(self.models.values()))

    def model_for(self, name: str | None) -> ServedModel:
        """The served model ``name`` picks (its name or variant, any case); else (OpenAI's
        ``tts-1`` and any other string) the default model."""
        if name:
            wanted = name.strip().casefold()
            for served in self.models.values():
                if wanted == served.name.casefold():
                    return served
            for served in self.models.values():
                if wanted == served.model.variant.name:
                    return served
        return self.default

    def model_objects(self) -> list[dict]:
        """Each served model described (``/v1/audio/models``), the default first."""
        default = self.default.name
        return [s.describe(self.settings, s.name == default) for s in self.models.values()]

    def begin_shutdown(self) -> None:
        """No more jobs; the waiting ones are answered, the running ones end early."""
        for served in self.models.values():
            served.worker.begin_shutdown()

    def close(self) -> None:
        for served in self.models.values():
            served.worker.stop()


def named_models(models) -> dict[str, object]:
    """``{name: pipeline}`` from a pipeline, a list of them (named by variant: ``turbo``,
    ``turbo-2``...) or a mapping."""
    if isinstance(models, Mapping):
        named = dict(models)
    else:
        items = list(models) if isinstance(models, list | tuple) else [models]
        named = {}
        for model in items:
            name, n = model.variant.name, 1
            while name in named:
                n += 1
                name = f"{model.variant.name}-{n}"
            named[name] = model
    if not named:
        raise ValueError("create_app needs at least one model")
    return named

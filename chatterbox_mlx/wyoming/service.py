"""What the Wyoming server holds: the served models, each with the HTTP server's
``ModelWorker`` (one generation at a time, the rest waiting in its bounded queue), the
voice library, and the generation settings. ``Service.create`` starts workers of its
own; ``Service.beside(state)`` shares the HTTP server's (``chatterbox-mlx serve
--wyoming``: one model, loaded once, one queue for both protocols)."""

from __future__ import annotations

from dataclasses import dataclass

from ..constants import STREAM_CHUNK_SCHEDULE, STREAM_PROMPT_TOKENS
from ..server.jobs import ModelWorker
from ..server.voices import VoiceLibrary, evaluated
from .catalog import ENGLISH, Offered, tts_program


@dataclass(frozen=True)
class Settings:
    """The generation flags (the HTTP server's, plus ``seed`` and ``language``)."""

    max_chars: int = 4096
    max_new_tokens: int = 1000
    chunk_tokens: int | tuple[int, ...] = STREAM_CHUNK_SCHEDULE
    flow_prompt_tokens: int | None = STREAM_PROMPT_TOKENS
    watermark: bool = True
    seed: int | None = None  # every request with this seed: the same text, the same audio
    language: str = ENGLISH  # for a model that needs a language when a request gives none

    @classmethod
    def like(cls, http_settings, **given) -> Settings:
        """The HTTP server's settings' generation fields, and ``given``."""
        names = ("max_chars", "max_new_tokens", "chunk_tokens", "flow_prompt_tokens", "watermark")
        return cls(**{n: getattr(http_settings, n) for n in names}, **given)


@dataclass
class Served:
    name: str
    model: object  # a chatterbox_mlx.tts pipeline
    worker: ModelWorker
    builtin: object | None  # the built-in voice (Conditionals), evaluated

    def offered(self) -> Offered:
        return Offered(self.name, self.model.variant, self.builtin is not None)


class Service:
    """The models, library and settings every connection's handler uses."""

    def __init__(
        self,
        served: dict[str, Served],
        library: VoiceLibrary,
        settings: Settings,
        owns_workers: bool = False,
    ):
        if not served:
            raise ValueError("the Wyoming server needs at least one model")
        self.served = served
        self.library = library
        self.settings = settings
        self._owns_workers = owns_workers

    @classmethod
    def create(
        cls, models: dict, library: VoiceLibrary, settings: Settings, max_queue: int = 8
    ) -> Service:
        """Serve ``{name: pipeline}`` (the first is the default), with workers of its own."""
        served = {
            name: Served(name, model, ModelWorker(name, max_queue), evaluated(model.conds))
            for name, model in models.items()
        }
        return cls(served, library, settings, owns_workers=True)

    @classmethod
    def beside(cls, state, **given) -> Service:
        """Share an HTTP server's models, workers and library (``app.state.server``)."""
        served = {
            name: Served(name, s.model, s.worker, s.builtin) for name, s in state.models.items()
        }
        return cls(served, state.library, Settings.like(state.settings, **given))

    def offered(self) -> list[Offered]:
        return [s.offered() for s in self.served.values()]

    def info(self):
        """The ``info`` event's content, read afresh (voices saved meanwhile included)."""
        from wyoming.info import Info

        return Info(tts=[tts_program(self.offered(), self.library)])

    @property
    def sample_rate(self) -> int:
        return next(iter(self.served.values())).model.sr

    def close(self) -> None:
        if self._owns_workers:
            for served in self.served.values():
                served.worker.stop()

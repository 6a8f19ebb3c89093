"""The FastAPI application: ``create_app(models, settings=..., voices_dir=...)`` serves
already-loaded pipelines (so a test or a script can start it on a model it holds).

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

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from .. import __version__
from .. import audio as audio_mod
from .. import text as text_mod
from ..audio import speed as speed_mod
from ..constants import STREAM_CHUNK_SCHEDULE, STREAM_PROMPT_TOKENS
from .errors import APIError, install_handlers
from .jobs import DATA, DONE, ERROR, Job, ModelWorker, QueueFull
from .speech import (
    FORMATS,
    GENERATION_FIELDS,
    OPENAI_VOICES,
    SpeechRequest,
    parse_speech,
    run_speech,
    usage,
)
from .voices import BUILTIN_ID, LibraryError, VoiceLibrary, default_dir, evaluated

logger = logging.getLogger("chatterbox_mlx.server")

JSON_LIMIT = 1 << 20  # a speech request is a few kB
DRAIN_LIMIT = 64 << 20  # an oversized body is read (and dropped) up to this, then cut
API_KEY_ENV = "CHATTERBOX_MLX_API_KEY"
UPLOAD_FORMATS = {
    "WAV": "wav",
    "WAVEX": "wav",
    "RF64": "wav",
    "FLAC": "flac",
    "MP3": "mp3",
    "OGG": "ogg",
}


@dataclass(frozen=True)
class Settings:
    """What the command line sets (see ``python -m chatterbox_mlx.server --help``)."""

    api_key: str | None = None
    max_chars: int = 4096
    max_queue: int = 8
    max_new_tokens: int = 1000
    chunk_tokens: int | tuple[int, ...] = STREAM_CHUNK_SCHEDULE
    flow_prompt_tokens: int | None = STREAM_PROMPT_TOKENS
    max_upload_bytes: int = 20 << 20
    max_voice_seconds: float = 60.0
    watermark: bool = True


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

    def close(self) -> None:
        for served in self.models.values():
            served.worker.stop()


def _named(models) -> dict[str, object]:
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
    from contextlib import asynccontextmanager

    settings = settings or Settings()
    library = library or VoiceLibrary(voices_dir or default_dir())
    state = ServerState(
        {
            name: ServedModel(
                name, model, ModelWorker(name, settings.max_queue), evaluated(model.conds)
            )
            for name, model in _named(models).items()
        },
        library,
        settings,
    )
    page = resources.files(__package__).joinpath("static", "index.html").read_text("utf-8")

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

    def check_key(request: Request) -> None:
        key = settings.api_key
        if not key:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if not scheme:
            problem = "no API key was sent"
        elif scheme.lower() != "bearer":
            problem = f"the Authorization header uses {scheme!r}, not Bearer"
        elif not hmac.compare_digest(token.strip().encode(), key.encode()):
            problem = "the API key is wrong"
        else:
            return
        raise APIError(
            401,
            f"{problem}: send the header `Authorization: Bearer <key>` with the key this "
            f"server was started with (--api-key or ${API_KEY_ENV})",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )

    api = APIRouter(prefix="/v1", dependencies=[Depends(check_key)])

    # ---- pages and status -----------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def index():
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    @app.get("/health")
    async def health():
        return {
            "status": "ok",
            "version": __version__,
            "models": [{"id": s.name, **s.worker.status()} for s in state.models.values()],
            "voices": len(library.list()),
        }

    # ---- models ---------------------------------------------------------------------

    def model_objects() -> list[dict]:
        default = state.default.name
        return [s.describe(settings, s.name == default) for s in state.models.values()]

    def openai_models() -> list[dict]:
        """OpenAI's model objects (``/v1/models``)."""
        return [
            {"id": m["id"], "object": "model", "created": state.started, "owned_by": m["owned_by"]}
            for m in model_objects()
        ]

    @api.get("/models")
    async def list_models():
        return {"object": "list", "data": openai_models()}

    @api.get("/models/{model_id}")
    async def get_model(model_id: str):
        for m in openai_models():
            if m["id"] == model_id:
                return m
        raise APIError(
            404,
            f"no model {model_id!r}; served: {', '.join(state.models)}",
            param="model",
            code="model_not_found",
        )

    @api.get("/audio/models")
    async def audio_models():
        return {"models": model_objects()}

    # ---- voices ---------------------------------------------------------------------

    def builtin_voice() -> dict:
        return {
            "id": BUILTIN_ID,
            "name": "Built-in voice",
            "object": "audio.voice",
            "type": "builtin",
            "created_at": state.started,
            "aliases": list(OPENAI_VOICES),
        }

    @api.get("/audio/voices")
    async def list_voices():
        return {"voices": [builtin_voice(), *(e.public() for e in library.list())]}

    @api.get("/audio/voices/{voice_id}")
    async def get_voice(voice_id: str):
        if voice_id == BUILTIN_ID:
            return builtin_voice()
        entry = library.get(voice_id)
        if entry is None:
            raise _no_voice(voice_id)
        return entry.public()

    @api.delete("/audio/voices/{voice_id}")
    async def delete_voice(voice_id: str):
        if voice_id == BUILTIN_ID:
            raise APIError(
                400, "the built-in voice cannot be deleted", param="voice_id", code="builtin_voice"
            )
        if not library.delete(voice_id):
            raise _no_voice(voice_id)
        return {"id": voice_id, "deleted": True, "object": "audio.voice.deleted"}

    @api.post("/audio/voices")
    async def create_voice(request: Request):
        form = await _read_form(request, settings.max_upload_bytes)
        kind = form.get("type")
        if kind is not None and kind != "audio_sample":
            raise APIError(
                400,
                f"type {kind!r} is not supported: this server makes voices from "
                "an audio sample only (type=audio_sample)",
                param="type",
                code="unsupported_type",
            )
        served = state.model_for(form.get("model") if isinstance(form.get("model"), str) else None)
        try:
            name = library.check_new_name(form.get("name"))
        except LibraryError as err:
            raise _library_error(err) from None
        upload = form.get("file", form.get("audio_sample"))
        if upload is None or isinstance(upload, str):
            raise APIError(
                400,
                "attach the clip as the file field `file` (or `audio_sample`): "
                "wav, flac, mp3 or ogg, a few seconds of one person speaking",
                param="file",
                code="missing_file",
            )
        staging = library.staging()
        try:
            clip = staging / "upload"
            clip.write_bytes(await upload.read())
            from starlette.concurrency import run_in_threadpool

            source = await run_in_threadpool(_check_clip, clip, settings.max_voice_seconds)
        except BaseException as err:
            library.discard(staging)
            if isinstance(err, LibraryError):
                raise _library_error(err) from None
            raise

        def prepare(job: Job) -> None:
            if job.cancelled:
                library.discard(staging)
                return
            try:
                conds = served.model.prepare_voice(str(source))
            except BaseException:
                library.discard(staging)
                raise
            job.result = library.add(name, staging, source.name, served.model.variant.family, conds)

        job = Job(prepare, asyncio.get_running_loop())
        _submit(served, job)
        watch = _Watch(request)
        try:
            while True:
                kind, value = await watch.next(job)
                if kind == ERROR:
                    raise _job_error(value, "file")
                if kind == DONE:
                    return value.public()
        except _ClientGone:
            served.worker.cancel(job)
            if not job.started.is_set():
                library.discard(staging)
            return Response(status_code=499)
        finally:
            watch.close()

    # ---- speech ---------------------------------------------------------------------

    @api.post("/audio/speech")
    async def speech(request: Request):
        body = await _read_json(request)
        req = parse_speech(body, state)
        job = Job(lambda j: run_speech(j, req, state), asyncio.get_running_loop())
        _submit(req.model, job)
        headers = {
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
            "X-Model": req.model.name,
        }
        if req.ignored:
            headers["X-Ignored-Parameters"] = ", ".join(req.ignored)
        watch = _Watch(request)
        try:
            kind, first = await watch.next(job)
            if kind == ERROR:
                raise _job_error(first, None)
            if kind == DONE:  # cancelled before any audio (server shutting down)
                raise APIError(503, "the server is shutting down; retry", code="shutting_down")
            if req.response_format == "flac":  # one file: it records its length at the end
                data, samples = await _collect(watch, job)
        except _ClientGone:
            req.model.worker.cancel(job)
            return Response(status_code=499)
        finally:
            watch.close()
        if req.response_format == "flac":
            if req.stream_format == "sse":
                data = _sse(_delta(data)) + _sse(_done(req, samples))
            return Response(data, media_type=req.content_type, headers=headers)
        return StreamingResponse(
            _stream_body(req, job, first), media_type=req.content_type, headers=headers
        )

    app.include_router(api)
    return app


# ---- helpers --------------------------------------------------------------------------


def _no_voice(voice_id: str) -> APIError:
    return APIError(
        404,
        f"no saved voice with id {voice_id!r}; GET /v1/audio/voices lists them",
        param="voice_id",
        code="voice_not_found",
    )


def _library_error(err: LibraryError) -> APIError:
    return APIError(err.status, str(err), param=err.param, code=err.code)


def _job_error(err: BaseException, param: str | None) -> APIError:
    """What a failed job answers: its own refusal, the library's message for bad input
    (a ValueError: parameters, text, audio, voice files), else a logged 500."""
    if isinstance(err, APIError):
        return err
    if isinstance(err, LibraryError):
        return _library_error(err)
    if isinstance(err, ValueError):
        message = str(err)
        first = message.split(" ", 1)[0]
        if first in GENERATION_FIELDS or first in ("speed", "seed"):
            param = first
        elif isinstance(err, text_mod.TextError):
            param = "input"
        return APIError(400, message, param=param, code="invalid_value")
    logger.error("generation failed", exc_info=(type(err), err, err.__traceback__))
    return APIError(
        500,
        f"generation failed ({type(err).__name__}: {err}); the server log has the details",
        code="generation_failed",
    )


def _submit(served: ServedModel, job: Job) -> None:
    try:
        served.worker.submit(job)
    except QueueFull as full:
        raise APIError(
            429,
            f"the {served.name} model is busy: {full.waiting} requests are already waiting "
            f"(--max-queue {served.worker.max_queue}); retry in about {full.retry_after} s",
            code="queue_full",
            headers={"Retry-After": str(full.retry_after)},
        ) from None


class _ClientGone(Exception):
    """The client closed the connection while its request waited or ran."""


class _Watch:
    """Waits for a job's next item while watching the connection (``http.disconnect``)."""

    def __init__(self, request):
        self._gone = asyncio.ensure_future(self._disconnect(request))

    @staticmethod
    async def _disconnect(request) -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    async def next(self, job: Job):
        item = asyncio.ensure_future(job.next())
        await asyncio.wait({item, self._gone}, return_when=asyncio.FIRST_COMPLETED)
        if item.done():
            return item.result()
        item.cancel()
        raise _ClientGone

    def close(self) -> None:
        self._gone.cancel()


async def _collect(watch: _Watch, job: Job) -> tuple[bytes, int]:
    """The rest of a whole-file job's bytes, and its result (the samples made)."""
    data = bytearray()
    while True:
        kind, value = await watch.next(job)
        if kind == ERROR:
            raise _job_error(value, None)
        if kind == DONE:
            return bytes(data), value or 0
        data += value


def _sse(event: dict) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()


def _delta(data: bytes) -> dict:
    import base64

    return {"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()}


def _done(req: SpeechRequest, samples: int) -> dict:
    return {"type": "speech.audio.done", "usage": usage(req, samples)}


async def _stream_body(req: SpeechRequest, job: Job, first: bytes):
    """The response body: the audio bytes as they come (or SSE events); a client that
    leaves cancels the job, which stops at its next chunk."""
    sse = req.stream_format == "sse"
    finished = False
    try:
        data = first
        while True:
            if data:
                yield _sse(_delta(data)) if sse else data
            kind, value = await job.next()
            if kind == DATA:
                data = value
            elif kind == ERROR:
                finished = True
                error = _job_error(value, None)
                if sse:
                    yield _sse({"type": "error", **error.body()})
                    return
                raise RuntimeError(f"generation failed mid-stream: {error.message}")
            else:
                finished = True
                if sse:
                    yield _sse(_done(req, value or 0))
                return
    finally:
        if not finished:
            req.model.worker.cancel(job)


async def _read_body(request, limit: int, what: str) -> bytes:
    """The body, or 413 once it passes ``limit``: at once when Content-Length says it is
    far over, else after reading the rest (dropped) up to DRAIN_LIMIT, so that the client
    gets the answer rather than a reset connection."""
    declared = request.headers.get("content-length", "")
    total = int(declared) if declared.isdigit() and int(declared) > limit + DRAIN_LIMIT else 0
    data = bytearray()
    if not total:
        async for chunk in request.stream():
            total += len(chunk)
            if total <= limit:
                data += chunk
            elif total > limit + DRAIN_LIMIT:
                break
    if total > limit:
        raise APIError(
            413,
            f"the {what} is over the limit of {_size(limit)}"
            + (" (--max-upload-mb)" if what == "upload" else ""),
            code="payload_too_large",
        )
    return bytes(data)


def _size(n: int) -> str:
    return f"{n / (1 << 20):g} MiB" if n >= 1 << 20 else f"{n:,} bytes"


async def _read_json(request):
    raw = await _read_body(request, JSON_LIMIT, "request body")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise APIError(
            400,
            f"the request body is not valid JSON ({err}); send a JSON object "
            'such as {"model": "tts-1", "input": "Hello.", "voice": "alloy"} with '
            "Content-Type: application/json",
            param="body",
            code="invalid_json",
        ) from None


async def _read_form(request, limit: int):
    from starlette.datastructures import FormData
    from starlette.formparsers import MultiPartException, MultiPartParser

    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise APIError(
            400,
            "send the voice as multipart/form-data with the fields `name` and "
            "`file`, e.g. curl -F name=Alice -F file=@alice.wav",
            code="invalid_content_type",
        )
    raw = await _read_body(request, limit, "upload")

    async def chunks():
        yield raw

    try:
        form: FormData = await MultiPartParser(
            request.headers, chunks(), max_files=2, max_fields=10
        ).parse()
    except MultiPartException as err:
        raise APIError(
            400, f"the multipart form cannot be read ({err.message})", code="invalid_form"
        ) from None
    return form


def _check_clip(path: Path, max_seconds: float) -> Path:
    """An uploaded clip, checked (decodes as wav, flac, mp3 or ogg audio of at most
    ``max_seconds``) and renamed ``source.<ext>`` beside it; LibraryError otherwise."""
    import soundfile

    try:
        info = soundfile.info(str(path))
    except Exception:
        raise LibraryError(
            "the uploaded file is not audio this server can read; upload wav, flac, mp3 or ogg",
            param="file",
            code="invalid_audio",
        ) from None
    kind = UPLOAD_FORMATS.get(info.format)
    if kind is None:
        raise LibraryError(
            f"the uploaded file is {info.format_info}; upload wav, flac, mp3 or ogg",
            param="file",
            code="invalid_audio",
        )

    def too_long(seconds: float) -> LibraryError:
        return LibraryError(
            f"the clip is {seconds:.1f} s long; the limit is {max_seconds:g} s "
            "(--max-voice-seconds): upload 10-30 s of one person speaking",
            param="file",
            code="clip_too_long",
        )

    if info.samplerate > 0 and info.frames / info.samplerate > max_seconds:
        raise too_long(info.frames / info.samplerate)
    try:
        wav, sr = audio_mod.load_audio(path)
    except audio_mod.AudioError as err:
        message = (
            str(err)
            .replace(f"audio file {path}", "the uploaded file")
            .replace(str(path), "the uploaded file")
        )
        raise LibraryError(message, param="file", code="invalid_audio") from None
    if len(wav) / sr > max_seconds:
        raise too_long(len(wav) / sr)
    source = path.with_name(f"source.{kind}")
    path.rename(source)
    return source

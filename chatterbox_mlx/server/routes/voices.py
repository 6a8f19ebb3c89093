"""The voice library over HTTP: ``GET /v1/audio/voices`` (the built-in voice, then the
saved ones), ``POST /v1/audio/voices`` (multipart ``name`` + ``file`` or
``audio_sample``: the clip is checked, then prepared in the model's queue),
``GET``/``DELETE /v1/audio/voices/{ref}`` (``ref`` an id or a name, as ``voice`` is in a
speech request)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from ..bodies import read_form
from ..errors import APIError, shown
from ..jobs import DONE, ERROR, Job
from ..speech import OPENAI_VOICES
from ..uploads import check_clip
from ..voices import BUILTIN_ID, LibraryError
from .common import (
    ClientGone,
    Watch,
    check_key,
    client_left,
    job_error,
    library_error,
    server_state,
    submit,
)

router = APIRouter(prefix="/v1", dependencies=[Depends(check_key)])


def builtin_voice(request: Request) -> dict:
    return {
        "id": BUILTIN_ID,
        "name": "Built-in voice",
        "object": "audio.voice",
        "type": "builtin",
        "created_at": server_state(request).started,
        "aliases": list(OPENAI_VOICES),
    }


def no_voice(voice_id: str) -> APIError:
    return APIError(
        404,
        f"no saved voice with the id or name {shown(voice_id)}; GET /v1/audio/voices lists them",
        param="voice_id",
        code="voice_not_found",
    )


@router.get("/audio/voices")
async def list_voices(request: Request):
    library = server_state(request).library
    return {"voices": [builtin_voice(request), *(e.public() for e in library.list())]}


@router.get("/audio/voices/{voice_id}")
async def get_voice(voice_id: str, request: Request):
    if voice_id == BUILTIN_ID:
        return builtin_voice(request)
    entry = server_state(request).library.find(voice_id)
    if entry is None:
        raise no_voice(voice_id)
    return entry.public()


@router.delete("/audio/voices/{voice_id}")
async def delete_voice(voice_id: str, request: Request):
    if voice_id == BUILTIN_ID:
        raise APIError(
            400, "the built-in voice cannot be deleted", param="voice_id", code="builtin_voice"
        )
    library = server_state(request).library
    entry = library.find(voice_id)  # by id or by name, as speech finds it
    if entry is None or not library.delete(entry.id):
        raise no_voice(voice_id)
    return {"id": entry.id, "deleted": True, "object": "audio.voice.deleted"}


def _check_type(form) -> None:
    kind = form.get("type")
    if kind is not None and kind != "audio_sample":
        raise APIError(
            400,
            f"type {kind!r} is not supported: this server makes voices from "
            "an audio sample only (type=audio_sample)",
            param="type",
            code="unsupported_type",
        )


def _upload(form):
    upload = form.get("file", form.get("audio_sample"))
    if upload is None or isinstance(upload, str):
        raise APIError(
            400,
            "attach the clip as the file field `file` (or `audio_sample`): "
            "wav, flac, mp3 or ogg, a few seconds of one person speaking",
            param="file",
            code="missing_file",
        )
    return upload


@router.post("/audio/voices")
async def create_voice(request: Request):
    state = server_state(request)
    library, settings = state.library, state.settings
    form = await read_form(request, settings.max_upload_bytes)
    _check_type(form)
    served = state.model_for(form.get("model") if isinstance(form.get("model"), str) else None)
    try:
        name = library.check_new_name(form.get("name"))
    except LibraryError as err:
        raise library_error(err) from None
    upload = _upload(form)
    staging = library.staging()
    try:
        clip = staging / "upload"
        clip.write_bytes(await upload.read())
        source = await run_in_threadpool(check_clip, clip, settings.max_voice_seconds)
    except BaseException as err:
        library.discard(staging)
        if isinstance(err, LibraryError):
            raise library_error(err) from None
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
        if job.cancelled:  # its client left, or the shutdown cut it off: not added
            library.discard(staging)
            return
        job.result = library.add(name, staging, source.name, served.model.variant.family, conds)

    job = Job(prepare, asyncio.get_running_loop())
    submit(served, job)
    watch = Watch(request)
    try:
        while True:
            kind, value = await watch.next(job)
            if kind == ERROR:
                raise job_error(value, "file")
            if kind == DONE:
                return value.public()
    except ClientGone:
        served.worker.cancel(job)
        if not job.started.is_set():
            library.discard(staging)
        return client_left(request)
    except asyncio.CancelledError:  # the shutdown grace ran out (cancel.AnswerOnCancel)
        served.worker.cancel(job)
        raise
    finally:
        watch.close()

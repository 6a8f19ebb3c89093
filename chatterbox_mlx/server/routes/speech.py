"""``POST /v1/audio/speech``: the request is checked (``server.speech.parse_speech``),
queued on its model, and answered as the audio comes: a stream in every format but FLAC
(one file that records its length at the end), or Server-Sent Events
(``stream_format: "sse"``: ``speech.audio.delta`` events, then ``speech.audio.done``)."""

from __future__ import annotations

import asyncio
import base64
import json

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from ..bodies import read_json
from ..jobs import DATA, DONE, ERROR, Job
from ..speech import SpeechRequest, parse_speech, usage
from ..synthesis import SpeechSession
from .common import (
    ClientGone,
    Watch,
    check_key,
    client_left,
    job_error,
    server_state,
    shutting_down,
    submit,
)

router = APIRouter(prefix="/v1", dependencies=[Depends(check_key)])


@router.post("/audio/speech")
async def speech(request: Request):
    state = server_state(request)
    body = await read_json(request)
    req = parse_speech(body, state)
    job = Job(None, asyncio.get_running_loop(), session=lambda j: SpeechSession(j, req, state))
    submit(req.model, job)
    headers = {
        "Cache-Control": "no-store",
        "X-Accel-Buffering": "no",
        "X-Model": req.model.name,
    }
    if req.ignored:
        headers["X-Ignored-Parameters"] = ", ".join(req.ignored)
    watch = Watch(request)
    try:
        kind, first = await watch.next(job)
        if kind == ERROR:
            raise job_error(first, None)
        if kind == DONE:  # cancelled before any audio (server shutting down)
            raise shutting_down()
        if req.response_format == "flac":  # one file: it records its length at the end
            data, samples = await _collect(watch, job)
    except ClientGone:
        req.model.worker.cancel(job)
        return client_left(request)
    finally:
        watch.close()
    if req.response_format == "flac":
        if req.stream_format == "sse":
            data = _sse(_delta(data)) + _sse(_done(req, samples))
        return Response(data, media_type=req.content_type, headers=headers)
    return _JobStream(
        req, job, _stream_body(req, job, first), media_type=req.content_type, headers=headers
    )


class _JobStream(StreamingResponse):
    """A streamed response that cancels its job however it ends before the job does
    (also when the client leaves before the body's first byte is asked for)."""

    def __init__(self, req: SpeechRequest, job: Job, body, **kwargs):
        super().__init__(body, **kwargs)
        self.req, self.job = req, job

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if not self.job.finished.is_set():
                self.req.model.worker.cancel(self.job)


async def _collect(watch: Watch, job: Job) -> tuple[bytes, int]:
    """The rest of a whole-file job's bytes, and its result (the samples made)."""
    data = bytearray()
    while True:
        kind, value = await watch.next(job)
        if kind == ERROR:
            raise job_error(value, None)
        if kind == DONE:
            return bytes(data), value or 0
        data += value


def _sse(event: dict) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()


def _delta(data: bytes) -> dict:
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
                error = job_error(value, None)
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

"""The last answer of a request that a shutdown had to cut off: when the shutdown grace
(``--shutdown-grace``) runs out, uvicorn cancels the requests still running; one whose
response has not started gets OpenAI's 503 ``shutting_down`` (with ``Retry-After``)
rather than a bare "Internal Server Error", one whose response has started is closed,
and neither logs a traceback (an ASGI middleware, outermost)."""

from __future__ import annotations

import asyncio
import json
import logging

from .errors import error_body
from .logs import throttled

logger = logging.getLogger("chatterbox_mlx.server")
RETRY_AFTER = b"10"


class AnswerOnCancel:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def sending(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except asyncio.CancelledError:
            throttled(
                logger,
                logging.WARNING,
                "cut off",
                "the shutdown grace ran out: cutting off %s %s",
                scope["method"],
                scope["path"],
            )
            if not started:
                await _answer(send)


async def _answer(send) -> None:
    message = "the server is shutting down; retry in a few seconds"
    body = json.dumps(error_body(503, message, code="shutting_down")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", RETRY_AFTER),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})

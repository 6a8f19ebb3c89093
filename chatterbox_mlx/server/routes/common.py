"""What the routes share: the server's state from ``request.app.state``, the API key
check, submitting a job to a model's queue, and waiting for a job's items while
watching the connection."""

from __future__ import annotations

import asyncio
import hmac
import logging

from fastapi import Request
from fastapi.responses import Response

from ...text import TextError
from ..errors import APIError
from ..jobs import Job, QueueFull, ShuttingDown
from ..logs import throttled
from ..speech import GENERATION_FIELDS
from ..state import ServedModel, ServerState
from ..voices import LibraryError

logger = logging.getLogger("chatterbox_mlx.server")

API_KEY_ENV = "CHATTERBOX_MLX_API_KEY"


def server_state(request: Request) -> ServerState:
    """The app's ``ServerState`` (``create_app`` puts it on ``app.state.server``)."""
    return request.app.state.server


def check_key(request: Request) -> None:
    """401 unless the request carries the server's API key (when one is set)."""
    key = server_state(request).settings.api_key
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


def library_error(err: LibraryError) -> APIError:
    return APIError(err.status, str(err), param=err.param, code=err.code)


RETRY_AFTER_SHUTDOWN = 10  # seconds: a restart


def shutting_down() -> APIError:
    return APIError(
        503,
        "the server is shutting down; retry in a few seconds",
        code="shutting_down",
        headers={"Retry-After": str(RETRY_AFTER_SHUTDOWN)},
    )


def job_error(err: BaseException, param: str | None) -> APIError:
    """What a failed job answers: its own refusal, the library's message for bad input
    (a ValueError: parameters, text, audio, voice files), else a logged 500."""
    if isinstance(err, APIError):
        return err
    if isinstance(err, ShuttingDown):
        return shutting_down()
    if isinstance(err, LibraryError):
        return library_error(err)
    if isinstance(err, ValueError):
        message = str(err)
        first = message.split(" ", 1)[0]
        if first in GENERATION_FIELDS or first in ("speed", "seed"):
            param = first
        elif isinstance(err, TextError):
            param = "input"
        return APIError(400, message, param=param, code="invalid_value")
    throttled(
        logger,
        logging.ERROR,
        ("generation failed", type(err).__name__),
        "generation failed",
        exc_info=(type(err), err, err.__traceback__),
    )
    return APIError(
        500,
        f"generation failed ({type(err).__name__}: {err}); the server log has the details",
        code="generation_failed",
    )


def submit(served: ServedModel, job: Job) -> None:
    """Queue ``job`` on the model's worker, or 429 (with Retry-After) when it is full."""
    try:
        served.worker.submit(job)
    except ShuttingDown:
        raise shutting_down() from None
    except QueueFull as full:
        raise APIError(
            429,
            f"the {served.name} model is busy: {full.waiting} requests are already waiting "
            f"(--max-queue {served.worker.max_queue}); retry in about {full.retry_after} s",
            code="queue_full",
            headers={"Retry-After": str(full.retry_after)},
        ) from None


class ClientGone(Exception):
    """The client closed the connection while its request waited or ran."""


def client_left(request: Request) -> Response:
    """What a request whose client left answers (nobody reads it), logged as one line."""
    throttled(
        logger,
        logging.INFO,
        ("client left", request.url.path),
        "a client left before its answer to %s %s was ready",
        request.method,
        request.url.path,
    )
    return Response(status_code=499)


class Watch:
    """Waits for a job's next item while watching the connection (``http.disconnect``)."""

    def __init__(self, request: Request):
        self._gone = asyncio.ensure_future(self._disconnect(request))

    @staticmethod
    async def _disconnect(request: Request) -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    async def next(self, job: Job):
        item = asyncio.ensure_future(job.next())
        await asyncio.wait({item, self._gone}, return_when=asyncio.FIRST_COMPLETED)
        if item.done():
            return item.result()
        item.cancel()
        raise ClientGone

    def close(self) -> None:
        self._gone.cancel()

"""Running the app under uvicorn with the server's connection rules and shutdown:
``make_server(app)`` is a ``uvicorn.Server`` with the request timeout and connection cap
(``connections.protocol``), throttled logs (``logs``), and a shutdown that on SIGTERM or
SIGINT stops accepting, answers the queued requests with the 503 ``shutting_down`` (and
``Retry-After``), lets each running generation end at its next chunk with its response
complete, and exits within ``--shutdown-grace`` seconds."""

from __future__ import annotations

import asyncio
import resource

import uvicorn

from .connections import connection_cap, protocol
from .logs import accept_errors, install_filters

BACKLOG = 128  # connections the kernel holds before the server accepts them


class Server(uvicorn.Server):
    """uvicorn's server, telling the app's models to wind down as shutdown begins."""

    def __init__(self, config: uvicorn.Config, state):
        super().__init__(config)
        self.state = state

    async def startup(self, sockets=None) -> None:
        asyncio.get_running_loop().set_exception_handler(accept_errors)
        await super().startup(sockets=sockets)

    async def shutdown(self, sockets=None) -> None:
        self.state.begin_shutdown()
        await super().shutdown(sockets=sockets)


def make_server(app, *, log_level: str = "info", access_log: bool = False) -> Server:
    """The server for ``app`` (from ``create_app``), its limits from the app's settings."""
    state = app.state.server
    settings = state.settings
    files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=access_log,
        http=protocol(settings.request_timeout, connection_cap(settings.max_connections, files)),
        ws="none",
        backlog=BACKLOG,
        timeout_graceful_shutdown=settings.shutdown_grace,
    )
    install_filters()
    return Server(config, state)

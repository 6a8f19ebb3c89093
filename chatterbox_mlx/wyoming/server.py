"""The listening side: wyoming's ``AsyncServer`` on the ``--uri`` (``tcp://HOST:PORT``
bound before the models load, ``unix://PATH``, or ``stdio://``), one ``Handler`` per
connection, all sharing one ``Service``; standalone (``serve``) or in the HTTP server's
event loop (``run_beside_http``: ``chatterbox-mlx serve --wyoming URI``)."""

from __future__ import annotations

import asyncio
import socket
from functools import partial
from urllib.parse import urlparse

from wyoming.server import AsyncServer

from . import DEFAULT_URI
from .handler import Handler
from .service import Service

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class WyomingServeError(ValueError):
    """A problem with the command line's URI, said in one line."""


class SocketServer(AsyncServer):
    """wyoming's TCP server on a socket bound beforehand: a port in use is reported
    before the models load, and port 0 picks a free one (``address`` says which)."""

    def __init__(self, sock: socket.socket):
        super().__init__()
        self.sock = sock
        self._server: asyncio.AbstractServer | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()[:2]

    @property
    def uri(self) -> str:
        host, port = self.address
        return f"tcp://{f'[{host}]' if ':' in host else host}:{port}"

    async def start(self, handler_factory) -> None:
        callback = partial(self._handler_callback, handler_factory)
        self._server = await asyncio.start_server(callback, sock=self.sock)

    async def run(self, handler_factory) -> None:
        await self.start(handler_factory)
        self._register_stop_signal()  # SIGTERM: stop, as wyoming's servers do
        try:
            await self._server.serve_forever()
        except asyncio.CancelledError:
            if not self._stop_requested:
                raise
        finally:
            self._unregister_stop_signal()

    async def stop(self) -> None:
        await super().stop()
        if self._server is not None:
            self._server.close()


def open_server(uri: str, stdio: bool = True) -> AsyncServer:
    """The server for ``uri``; a ``tcp://`` one is listening already (WyomingServeError
    when the address cannot be had). ``stdio``: whether ``stdio://`` may be used."""
    parsed = urlparse(uri)
    if parsed.scheme == "stdio" and not stdio:
        raise WyomingServeError(f"--wyoming {uri}: use tcp://HOST:PORT or unix://PATH")
    if parsed.scheme in ("unix", "stdio"):
        return AsyncServer.from_uri(uri)
    if parsed.scheme != "tcp":
        raise WyomingServeError(
            f"--uri {uri!r}: use tcp://HOST:PORT (e.g. {DEFAULT_URI}), unix://PATH or stdio://"
        )
    try:
        host, port = parsed.hostname, parsed.port
    except ValueError:
        host = port = None
    if not host or port is None:
        raise WyomingServeError(f"--uri {uri!r}: give a host and a port, e.g. {DEFAULT_URI}")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as err:
        raise WyomingServeError(f"--uri {uri}: {err.strerror}") from None
    try:
        sock = socket.create_server((host, port), family=family, backlog=128)
    except OSError as err:
        hint = "; pick another port in --uri (port 0: any free port)" if port else ""
        raise WyomingServeError(f"cannot listen on {host}:{port}: {err.strerror}{hint}") from None
    return SocketServer(sock)


def shown(server: AsyncServer, uri: str) -> str:
    return server.uri if isinstance(server, SocketServer) else uri


def is_local(server: AsyncServer) -> bool:
    return not isinstance(server, SocketServer) or server.address[0] in LOCAL_HOSTS


def advertiser_for(server: AsyncServer, name: str):
    """The ``--zeroconf`` advertiser of a TCP server."""
    from .discovery import Advertiser, advertised_address, service_info

    if not isinstance(server, SocketServer):
        raise WyomingServeError("--zeroconf needs a tcp:// --uri (Home Assistant connects by TCP)")
    host, port = server.address
    address = advertised_address(host)
    # bound to one IPv4 address: announced on that interface only (127.0.0.1: this machine)
    interfaces = [address] if address == host and ":" not in host else None
    return Advertiser(service_info(name, address, port), interfaces)


async def serve(server: AsyncServer, service: Service, advertiser=None) -> None:
    """Serve until stopped (SIGTERM, or the task cancelled)."""
    if advertiser is not None:
        await advertiser.start()
    try:
        await server.run(partial(Handler, service))
    finally:
        await server.stop()
        if advertiser is not None:
            await advertiser.close()


class BesideHTTP:
    """``chatterbox-mlx serve --wyoming URI``: the Wyoming server on ``uri`` (listening
    from the start, so a port in use is reported before the models load), run in the
    HTTP server's event loop with its models, workers and voice library."""

    def __init__(self, uri: str):
        self.server = open_server(uri, stdio=False)
        self.uri = shown(self.server, uri)

    def run(self, http_server, http_sockets, state) -> None:
        """Serve both until the HTTP server (a ``uvicorn.Server``) has shut down
        (``state``: the HTTP app's ``app.state.server``)."""
        server = self.server

        async def both() -> None:
            await server.start(partial(Handler, Service.beside(state)))
            try:
                await http_server.serve(sockets=http_sockets)
            finally:
                await server.stop()

        asyncio.run(both())

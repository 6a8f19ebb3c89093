"""Cross-site safety, in front of every route (an ASGI middleware):

- ``Host`` must name this server (DNS rebinding): a localhost name (``localhost``,
  ``*.localhost``, Docker's ``host.docker.internal``), a loopback address, the address
  the connection came in on, this machine's host name (``name`` or ``name.local``), or
  one of ``--allowed-host`` (``*``: any). Else 421. A request without ``Host`` (HTTP/1.0
  tools) passes.
- A request that changes something (any method but GET, HEAD and OPTIONS) from a web
  page of another site is refused with 403: its ``Origin`` must be this server's own
  (the web page at ``/``) or one of ``--cors-origin``. Clients that are not browsers
  (curl, the OpenAI package, Open WebUI's and SillyTavern's servers, Home Assistant)
  send no ``Origin`` and pass. Speech also needs ``Content-Type: application/json``
  (``bodies.require_json``): a page cannot send that cross-site without a preflight.
- The ``--cors-origin`` sites get real CORS headers, preflight (``OPTIONS`` with
  ``Access-Control-Request-Method``) included; any other site's preflight is a 403.
"""

from __future__ import annotations

import ipaddress
import json
import socket

from .errors import error_body, shown

# names that only ever mean this machine: a page elsewhere cannot rebind them
LOCAL_NAMES = frozenset({"localhost", "host.docker.internal"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ALLOW_METHODS = "GET, POST, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type"
EXPOSE_HEADERS = "X-Model, X-Ignored-Parameters, Retry-After"
MAX_AGE = "600"


def host_name(host: str) -> str:
    """The name in a ``Host`` header, its port dropped: ``[::1]:8000`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _loopback(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _machine_names() -> frozenset[str]:
    name = socket.gethostname().lower()
    return frozenset({name, f"{name}.local", name.split(".", 1)[0]})


class SiteGuard:
    """The checks of the module docstring, around ``app``."""

    def __init__(self, app, allowed_hosts=(), cors_origins=()):
        self.app = app
        self.allowed_hosts = frozenset(h.strip().lower() for h in allowed_hosts)
        self.cors_origins = frozenset(o.strip().rstrip("/").lower() for o in cors_origins)
        self.machine = _machine_names()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {}
        for key, value in scope["headers"]:
            headers.setdefault(key.decode("latin-1"), value.decode("latin-1"))
        host = headers.get("host")
        if host is not None and not self._host_allowed(host_name(host), scope):
            return await _refuse(send, 421, _misdirected(host), "misdirected_request")
        origin = headers.get("origin")
        method = scope["method"]
        listed = origin is not None and self._listed(origin)
        own = origin is not None and host is not None and _same_origin(origin, host, scope)
        if method == "OPTIONS" and origin and "access-control-request-method" in headers:
            if not (listed or own):
                return await _refuse(send, 403, _foreign(origin), "cross_origin")
            return await _preflight(send, origin)
        if method not in SAFE_METHODS:
            cross_site = headers.get("sec-fetch-site") == "cross-site"
            if (origin is not None and not (listed or own)) or (origin is None and cross_site):
                return await _refuse(send, 403, _foreign(origin or "?"), "cross_origin")
        if listed and not own:
            send = _with_cors(send, origin)
        return await self.app(scope, receive, send)

    def _host_allowed(self, name: str, scope) -> bool:
        if "*" in self.allowed_hosts or name in self.allowed_hosts or name in self.machine:
            return True
        if name in LOCAL_NAMES or name.endswith(".localhost") or _loopback(name):
            return True
        server = scope.get("server")
        return bool(server) and name == str(server[0]).lower()

    def _listed(self, origin: str) -> bool:
        return "*" in self.cors_origins or origin.rstrip("/").lower() in self.cors_origins


def _same_origin(origin: str, host: str, scope) -> bool:
    return origin.rstrip("/").lower() == f"{scope.get('scheme', 'http')}://{host.strip().lower()}"


def _misdirected(host: str) -> str:
    return (
        f"the Host header {shown(host)} does not name this server (a page reaching it "
        "through another name: DNS rebinding); use localhost or this machine's address, "
        "or start the server with --allowed-host NAME"
    )


def _foreign(origin: str) -> str:
    return (
        f"requests from the web page at {shown(origin)} are refused: only this server's "
        "own page (/) may send them from a browser; to let another site use the API, "
        "start the server with --cors-origin ORIGIN"
    )


async def _refuse(send, status: int, message: str, code: str) -> None:
    body = json.dumps(error_body(status, message, code=code)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _cors_headers(origin: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-expose-headers", EXPOSE_HEADERS.encode()),
        (b"vary", b"Origin"),
    ]


async def _preflight(send, origin: str) -> None:
    headers = _cors_headers(origin) + [
        (b"access-control-allow-methods", ALLOW_METHODS.encode()),
        (b"access-control-allow-headers", ALLOW_HEADERS.encode()),
        (b"access-control-max-age", MAX_AGE.encode()),
        (b"content-length", b"0"),
    ]
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def _with_cors(send, origin: str):
    async def sending(message):
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *_cors_headers(origin)]}
        await send(message)

    return sending

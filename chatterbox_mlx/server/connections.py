"""Connections a client cannot hold against the server:

- ``--request-timeout``: a request's headers and body must arrive within this many
  seconds of the connection opening (or of the previous response); else the connection
  is closed (a 408 first when part of a request came). uvicorn has no such timeout:
  a half-sent request would stay open for ever.
- ``--max-connections``, kept below the process's file limit (``raise_file_limit``
  raises the soft limit to the hard one first): past it, a new connection takes the
  place of the oldest one that has not sent a request, so ``/health`` and real requests
  still get in while idle sockets pile up; with none to drop, it gets a 503.

``protocol(request_timeout, max_connections)`` is the uvicorn HTTP protocol class that
does both (uvicorn's h11 protocol underneath).
"""

from __future__ import annotations

import logging
import time

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .logs import throttled

logger = logging.getLogger("chatterbox_mlx.server")

RESERVED_FILES = 64  # descriptors kept for the process itself (models, voices, logs)
TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
FULL = (
    b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-type: application/json"
    b"\r\nretry-after: 5\r\ncontent-length: %d\r\n\r\n%s"
)
FULL_BODY = (
    b'{"error": {"message": "the server has too many open connections (--max-connections); '
    b'retry", "type": "server_error", "param": null, "code": "too_many_connections"}}'
)


def raise_file_limit() -> int:
    """Raise the soft limit on open files to the hard limit where the OS allows; the
    soft limit in force after."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 16
    for target in (wanted, 10240):  # macOS refuses more than OPEN_MAX (10240)
        if target <= soft:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def connection_cap(wanted: int, file_limit: int) -> int:
    """``wanted`` connections, fewer where the file limit leaves less (at least 8)."""
    return max(8, min(wanted, file_limit - RESERVED_FILES))


def protocol(request_timeout: float, max_connections: int) -> type[H11Protocol]:
    """uvicorn's h11 protocol with the request timeout and the connection cap."""

    class GuardedProtocol(H11Protocol):
        def connection_made(self, transport) -> None:
            self._opened = time.monotonic()
            self._deadline = None
            if _open(self.server_state.connections) >= max_connections and not self._make_room():
                throttled(
                    logger,
                    logging.WARNING,
                    "connections-full",
                    "%d connections are open and all are busy (--max-connections): "
                    "refusing a new one",
                    len(self.server_state.connections),
                )
                transport.write(FULL % (len(FULL_BODY), FULL_BODY))
                transport.close()
                return
            super().connection_made(transport)
            self._arm()

        def _make_room(self) -> bool:
            idle = [c for c in self.server_state.connections if _waiting(c)]
            if not idle:
                return False
            oldest = min(idle, key=lambda c: getattr(c, "_opened", 0.0))
            throttled(
                logger,
                logging.INFO,
                "connections-evict",
                "%d connections are open (--max-connections): closing the oldest idle one",
                len(self.server_state.connections),
            )
            oldest._close(b"")
            return True

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(request_timeout, self._timed_out)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _timed_out(self) -> None:
            self._deadline = None
            started = self.conn.their_state is not h11.IDLE or bool(self.conn.trailing_data[0])
            if started:
                throttled(
                    logger,
                    logging.INFO,
                    "request-timeout",
                    "a client took over %g s to send its request (--request-timeout): "
                    "closing the connection",
                    request_timeout,
                )
            self._close(TIMED_OUT if started and _waiting(self) else b"")

        def _close(self, data: bytes) -> None:
            self._disarm()
            if self.transport is not None and not self.transport.is_closing():
                if data:
                    self.transport.write(data)
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED):
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            if self.transport is not None:
                super().connection_lost(exc)

    return GuardedProtocol


def _waiting(connection) -> bool:
    """Whether a connection has no request in progress (nothing of one, or part of its
    head): dropping it loses no work."""
    if not isinstance(connection, H11Protocol) or _closing(connection):
        return False
    cycle = connection.cycle
    idle = connection.conn.their_state is h11.IDLE
    return idle and (cycle is None or cycle.response_complete)


def _closing(connection) -> bool:
    transport = getattr(connection, "transport", None)
    return transport is None or transport.is_closing()


def _open(connections) -> int:
    """Connections not yet closing (a closed one stays in the set until it is lost)."""
    return sum(not _closing(c) for c in connections)

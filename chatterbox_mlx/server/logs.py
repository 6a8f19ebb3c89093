"""Logging that a client cannot flood: the same message at most once per interval (with
a count of those left out), and no traceback for what a client causes.

``throttled(logger, level, key, message, *args)`` logs unless ``key`` was logged in the
last ``INTERVAL`` seconds; ``ThrottleFilter`` does the same to another library's logger
(uvicorn's, asyncio's) by message template; ``accept_errors`` is an event loop exception
handler that turns "socket.accept() out of system resource" into one line an interval.
"""

from __future__ import annotations

import logging
import threading
import time

INTERVAL = 10.0  # seconds between two lines of the same kind

logger = logging.getLogger("chatterbox_mlx.server")


class Throttle:
    """Which keys may be logged now; how many were held back since the last line."""

    def __init__(self, interval: float = INTERVAL, keys: int = 1024):
        self.interval = interval
        self.keys = keys
        self._last: dict[object, float] = {}
        self._held: dict[object, int] = {}
        self._lock = threading.Lock()

    def allow(self, key) -> tuple[bool, int]:
        """(whether to log ``key`` now, how many of it were held back before)."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._held[key] = self._held.get(key, 0) + 1
                return False, 0
            if len(self._last) >= self.keys:  # forget the oldest half
                for old in sorted(self._last, key=self._last.get)[: self.keys // 2]:
                    self._last.pop(old, None)
                    self._held.pop(old, None)
            self._last[key] = now
            return True, self._held.pop(key, 0)


THROTTLE = Throttle()


def throttled(log: logging.Logger, level: int, key, message: str, *args, exc_info=None) -> None:
    """``log.log(level, message, *args)`` unless ``key`` was logged within the interval."""
    allowed, held = THROTTLE.allow(key)
    if not allowed or not log.isEnabledFor(level):
        return
    if held:
        message += f" ({held} more like it in the last {THROTTLE.interval:g} s)"
    log.log(level, message, *args, exc_info=exc_info)


class ThrottleFilter(logging.Filter):
    """Let each message template of a logger through at most once per interval, and
    drop the traceback of the warnings a client's bad request causes."""

    def __init__(self, throttle: Throttle | None = None):
        super().__init__()
        self.throttle = throttle or Throttle()

    def filter(self, record: logging.LogRecord) -> bool:
        allowed, held = self.throttle.allow((record.name, str(record.msg)))
        if not allowed:
            return False
        if held:
            record.msg = f"{record.msg} ({held} more like it in the last {INTERVAL:g} s)"
        if record.levelno < logging.ERROR:
            record.exc_info = None
            record.exc_text = None
        return True


def accept_errors(loop, context: dict) -> None:
    """An event loop exception handler: running out of file descriptors (or memory)
    while accepting is one line an interval; anything else goes to asyncio's handler."""
    message = context.get("message", "")
    if message.startswith("socket.accept() out of system resource"):
        error = context.get("exception")
        throttled(
            logger,
            logging.WARNING,
            "accept",
            "cannot accept connections: %s; open connections are at the process's file "
            "limit (see --max-connections and ulimit -n)",
            getattr(error, "strerror", None) or error,
        )
        return
    loop.default_exception_handler(context)


def install_filters() -> None:
    """Throttle uvicorn's and asyncio's loggers (their messages come from clients)."""
    for name in ("uvicorn.error", "asyncio"):
        log = logging.getLogger(name)
        if not any(isinstance(f, ThrottleFilter) for f in log.filters):
            log.addFilter(ThrottleFilter())

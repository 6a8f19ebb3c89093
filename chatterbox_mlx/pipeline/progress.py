"""Progress on standard error: a rich display on a terminal, plain lines elsewhere (a log,
a pipe), nothing when disabled."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator


class Progress:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._progress = None
        self._depth = 0  # nested tasks share one live display
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._progress = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )

    @classmethod
    def for_stream(cls, stream=None, enabled: bool = True) -> Progress:
        """rich on a terminal, ``LineProgress`` otherwise."""
        stream = stream or sys.stderr
        if not enabled:
            return NULL_PROGRESS
        return cls() if stream.isatty() else LineProgress(stream)

    @contextlib.contextmanager
    def status(self, message: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        from rich.console import Console

        with Console(stderr=True).status(message):
            yield

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        """Context giving ``advance(n)``; a no-op when disabled."""
        if self._progress is None:
            yield lambda n=1: None
            return
        outer = self._depth == 0
        if outer:
            self._progress.start()
        self._depth += 1
        task_id = self._progress.add_task(description, total=total)
        try:
            yield lambda n=1: self._progress.advance(task_id, n)
        finally:
            self._progress.remove_task(task_id)
            self._depth -= 1
            if outer:
                self._progress.stop()


class LineProgress(Progress):
    """One plain line per finished unit of the outermost task with more than one unit
    (the text chunks of a long text), with the time elapsed and an estimate of the rest."""

    def __init__(self, stream=None):
        super().__init__(enabled=False)
        self.enabled = True
        self.stream = stream or sys.stderr

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        report = self._depth == 0 and (total or 0) > 1
        self._depth += 1
        started, done = time.monotonic(), 0

        def advance(n: int = 1) -> None:
            nonlocal done
            done += n
            if report:
                elapsed = time.monotonic() - started
                left = elapsed / done * (total - done)
                print(
                    f"{description} {done}/{total}, {elapsed:.0f} s elapsed, about "
                    f"{left:.0f} s left",
                    file=self.stream,
                    flush=True,
                )

        try:
            yield advance
        finally:
            self._depth -= 1


NULL_PROGRESS = Progress(enabled=False)

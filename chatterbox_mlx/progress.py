"""Progress display with rich; silent when disabled (output not a terminal)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator


class Progress:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._progress = None
        self._depth = 0  # nested tasks share one live display
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._progress = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )

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


NULL_PROGRESS = Progress(enabled=False)

"""A book's progress on standard error: chapters and characters done, hours of audio
made, the real-time factor and an estimate of the time left. A rich display on a
terminal; elsewhere (a log, a pipe) a plain line per finished chapter and at most one a
minute in between."""

from __future__ import annotations

import sys
import time

PLAIN_INTERVAL_S = 60.0


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class BookProgress:
    def __init__(
        self,
        chapters: int,
        characters: int,
        chapters_done: int,
        characters_done: int,
        audio_done: float,
        stream=None,
        enabled: bool = True,
    ):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.chapters, self.characters = chapters, characters
        self.chapters_done, self.characters_done = chapters_done, characters_done
        self.audio = audio_done  # seconds, the work folder's included
        self.run_characters = 0  # made by this run, for the rate and the estimate
        self.run_audio = 0.0
        self.run_compute = 0.0
        self._last_line = time.monotonic()
        self._rich = None
        self._task = None

    # ---- figures --------------------------------------------------------------------------

    def rtf(self) -> float | None:
        return self.run_compute / self.run_audio if self.run_audio else None

    def seconds_left(self) -> float | None:
        if not self.run_characters:
            return None
        rate = self.run_characters / self.run_compute
        return (self.characters - self.characters_done) / max(rate, 1e-9)

    def summary(self) -> str:
        rtf, left = self.rtf(), self.seconds_left()
        parts = [
            f"chapters {self.chapters_done}/{self.chapters}",
            f"characters {self.characters_done:,}/{self.characters:,}",
            f"audio {_clock(self.audio)}",
        ]
        if rtf is not None:
            parts.append(f"RTF {rtf:.2f}")
        if left is not None:
            parts.append(f"about {_clock(left)} left")
        return ", ".join(parts)

    # ---- display --------------------------------------------------------------------------

    def __enter__(self) -> BookProgress:
        if self.enabled and self.stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._rich = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[figures]}"),
                TimeElapsedColumn(),
                console=Console(file=self.stream),
                transient=True,
            )
            self._rich.start()
            self._task = self._rich.add_task(
                self._description(),
                total=self.characters,
                completed=self.characters_done,
                figures=self._figures(),
            )
        return self

    def __exit__(self, *exc) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None

    def _description(self) -> str:
        return f"chapter {min(self.chapters_done + 1, self.chapters)}/{self.chapters}"

    def _figures(self) -> str:
        rtf, left = self.rtf(), self.seconds_left()
        figures = f"{self.characters_done:,}/{self.characters:,} chars, {_clock(self.audio)} audio"
        if rtf is not None:
            figures += f", RTF {rtf:.2f}"
        if left is not None:
            figures += f", ETA {_clock(left)}"
        return figures

    def chunk_done(self, chunk, record: dict, chapter_done: bool) -> None:
        characters = len(chunk.text)
        self.characters_done += characters
        self.audio += record["seconds"]
        self.run_characters += characters
        self.run_audio += record["seconds"]
        self.run_compute += record["compute_seconds"]
        if chapter_done:
            self.chapters_done += 1
        if self._rich is not None:
            self._rich.update(
                self._task,
                completed=self.characters_done,
                description=self._description(),
                figures=self._figures(),
            )
        elif self.enabled:
            now = time.monotonic()
            if chapter_done or now - self._last_line >= PLAIN_INTERVAL_S:
                self._last_line = now
                print(self.summary(), file=self.stream, flush=True)

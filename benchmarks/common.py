"""Helpers shared by the benchmark scripts (plain Python: the reference venv imports
it too)."""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path


def best_time(fn, repeats: int = 5) -> float:
    """Seconds of the fastest of ``repeats`` calls of ``fn``, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def make_voice(path: Path | None = None) -> Path:
    """A 12 s espeak-ng recording (Turbo needs more than 5 s)."""
    path = path or Path(tempfile.mkdtemp()) / "voice.wav"
    text = "This is a reference recording for the voice cloning benchmark. " * 3
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True)
    return path

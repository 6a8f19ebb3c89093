"""Helpers shared by the benchmark scripts (plain Python: the reference venv imports
it too)."""

from __future__ import annotations

import json
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


def alternate(rounds: int, reference_command: list[str], ours, cwd: Path) -> tuple[dict, dict]:
    """The fastest profile (by ``"total"``) of each side over ``rounds`` rounds that run
    the reference (``reference_command``, printing its profile as JSON on its last line)
    and then ``ours()`` in turn, so that both see the machine's slow spells."""
    reference = mine = None
    for _ in range(rounds):
        out = subprocess.run(reference_command, check=True, capture_output=True, text=True,
                             cwd=cwd)  # fmt: skip
        theirs = json.loads(out.stdout.strip().splitlines()[-1])
        if reference is None or theirs["total"] < reference["total"]:
            reference = theirs
        profile = ours()
        if mine is None or profile["total"] < mine["total"]:
            mine = profile
    return reference, mine


def print_blas_status() -> None:
    """The BLAS our side loaded, and its kernels (call after our side has run)."""
    from chatterbox_mlx.cpu import blas

    print(f"BLAS: {blas.status}")

"""Timing helpers shared by the benchmark scripts (plain Python: the reference venv
imports it too)."""

from __future__ import annotations

import time


def best_time(fn, repeats: int = 5) -> float:
    """Seconds of the fastest of ``repeats`` calls of ``fn``, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)

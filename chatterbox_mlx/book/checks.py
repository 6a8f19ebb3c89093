"""Is a rendered chunk suspect? Four checks, each a short reason or None.

- T3 ran out: it sampled ``max_new_tokens`` speech tokens without its stop token (the
  pipeline does not say whether the stop token came; ``last_stats["speech tokens"]``
  less the variant's tail tokens reaching ``max_new_tokens`` means it did not). Such a
  chunk is usually cut off mid-word or ends in babble.
- Silent: the whole chunk below -50 dBFS RMS.
- Clipped: more than 0.2 % of its samples at the vocoder's limit (HiFT clamps at 0.99).
- Duration per character far outside the book's own: the log of seconds per character
  more than ``max(4 robust sigmas, log 2)`` from the median of the book's chunks so far
  (only chunks of at least 20 characters are compared; at least 10 are needed).
"""

from __future__ import annotations

import bisect
import math

import numpy as np

SILENT_RMS = 10 ** (-50 / 20)
CLIP_LEVEL = 0.985
CLIP_FRACTION = 0.002
RATE_MIN_CHARS = 20
RATE_MIN_REFERENCE = 10
RATE_SIGMAS = 4.0
RATE_MIN_FACTOR = 2.0


def token_problem(tokens: int | None, max_new_tokens: int) -> str | None:
    if tokens is not None and tokens >= max_new_tokens:
        return f"T3 reached max_new_tokens ({max_new_tokens}) without its stop token"
    return None


def level_problems(wav: np.ndarray) -> list[str]:
    problems = []
    if wav.size == 0 or float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) < SILENT_RMS:
        problems.append("silent")
    elif (clipped := float(np.mean(np.abs(wav) >= CLIP_LEVEL))) > CLIP_FRACTION:
        problems.append(f"clipped ({clipped:.1%} of the samples at full scale)")
    return problems


class RateReference:
    """The book's seconds per character so far (log values, kept sorted)."""

    def __init__(self):
        self._logs: list[float] = []

    def add(self, seconds: float, characters: int) -> None:
        if characters >= RATE_MIN_CHARS and seconds > 0:
            bisect.insort(self._logs, math.log(seconds / characters))

    def __len__(self) -> int:
        return len(self._logs)

    def _median(self, values: list[float]) -> float:
        n = len(values)
        return (values[(n - 1) // 2] + values[n // 2]) / 2

    def problem(self, seconds: float, characters: int) -> str | None:
        if characters < RATE_MIN_CHARS or len(self._logs) < RATE_MIN_REFERENCE:
            return None
        median = self._median(self._logs)
        spread = self._median(sorted(abs(x - median) for x in self._logs)) * 1.4826
        limit = max(RATE_SIGMAS * spread, math.log(RATE_MIN_FACTOR))
        value = math.log(max(seconds, 1e-6) / characters)
        if abs(value - median) <= limit:
            return None
        typical = math.exp(median) * characters
        side = "long" if value > median else "short"
        return (
            f"too {side} for its text ({seconds:.1f} s for {characters} characters; "
            f"the book's chunks take about {typical:.1f} s)"
        )

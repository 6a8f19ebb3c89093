"""What one call resolves at its start and keeps to its end: its chunks of text with
their random keys, its voice and parameters (``Request``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import mlx.core as mx

from .. import params as params_mod
from ..voice.conditionals import Conditionals
from .progress import Progress


def evaluated(conds: Conditionals | None) -> Conditionals | None:
    """``conds`` with every array computed: an array left lazy in one thread cannot be
    evaluated in another (MLX's streams are per thread), and voices outlive calls."""
    if conds is not None:
        mx.eval(list(conds.to_flat().values()))
    return conds


def call_key(seed: int | None) -> mx.array:
    """The call's root key: from ``seed``, else one draw of MLX's global generator (so
    ``mx.random.seed`` still makes unseeded calls reproducible)."""
    if seed is None:
        seed = int(mx.random.randint(0, 2**31 - 1, ()).item())
    return mx.random.key(params_mod.check_value("seed", seed))


@dataclass(frozen=True)
class Chunk:
    """One piece of text to speak: its T3 input and its random key."""

    text: str
    tokens: mx.array  # [1, N] text token ids as T3 reads them
    key: mx.array
    pause_after: float = 0.0  # seconds of silence after it ([pause:...] tags, or the join)


@dataclass(frozen=True)
class Request:
    """Everything a call resolved at its start and keeps to its end."""

    chunks: tuple[Chunk, ...]
    lead_in: float  # seconds of silence before the first chunk (a leading pause tag)
    conds: Conditionals
    params: dict
    watermark: bool
    progress: Progress
    speed: float = 1.0
    # a SpeechBatch (pipeline/batch.py) decoding this call's chunks together, or None
    speech: object = None
    t3_finished: list[str] = field(default_factory=list)  # per chunk made: why T3 ended

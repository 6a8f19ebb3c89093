"""T3 for several chunks at once (``T3.generate_batch``), read back chunk by chunk.

A call with several chunks (long text, ``generate_batch``'s texts) hands every chunk to
one ``SpeechBatch`` up front; nothing runs until the first chunk's tokens are asked for.
Then the batch steps until that chunk's row finishes, keeping what the other rows sampled
meanwhile, and the caller renders that chunk (S3Gen) and yields it before asking for the
next: pieces still come in order as soon as each is ready, and a chunk that finished
early waits as a list of token ids only. A row that finishes leaves the batch and the
next chunk joins, so at most ``batch_size`` chunks decode together."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import mlx.core as mx

from ..constants import DEFAULT_BATCH_SIZE
from ..models.t3.batch import FILTERED, MAX_NEW_TOKENS, STOP_TOKEN, BatchRow, RowToken
from .requests import Chunk, Request

MAX_BATCH_SIZE = 64


def resolve_batch_size(batch_size) -> int:
    """``batch_size`` checked; None is ``DEFAULT_BATCH_SIZE``."""
    if batch_size is None:
        return DEFAULT_BATCH_SIZE
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"batch_size must be an integer >= 1 (1 renders chunk by chunk), got {batch_size!r}"
        )
    if batch_size > MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be at most {MAX_BATCH_SIZE}, got {batch_size}")
    return batch_size


class SpeechBatch:
    """The T3 rows of several chunks, decoded together and read back one chunk at a time."""

    def __init__(self, t3, batch_size: int):
        self.t3 = t3
        self.batch_size = batch_size
        self.rows: list[BatchRow] = []
        self.row_of: dict[int, int] = {}  # id(chunk) -> row
        self.chunks: list[Chunk] = []  # keeps the ids above alive
        self.tokens: dict[int, list[int]] = {}
        self.finished: dict[int, str] = {}
        self.events: Iterator[RowToken] | None = None
        self.seconds = 0.0  # spent stepping the batch
        self.count = 0  # tokens sampled over all rows

    def add(self, chunk: Chunk, row: BatchRow) -> None:
        if self.events is not None:
            raise RuntimeError("SpeechBatch.add after the batch started")
        self.row_of[id(chunk)] = len(self.rows)
        self.chunks.append(chunk)
        self.rows.append(row)

    def __contains__(self, chunk: Chunk) -> bool:
        return id(chunk) in self.row_of

    def speech(self, chunk: Chunk, advance: Callable[[int], None]) -> tuple[list[int], str]:
        """The chunk's sampled token ids (stop token included) and why its row ended,
        stepping the batch as long as it runs; ``advance(n)`` counts the chunk's tokens."""
        row = self.row_of[id(chunk)]
        advance(len(self.tokens.get(row, ())))
        if self.events is None:
            self.events = self.t3.generate_batch(iter(self.rows), batch_size=self.batch_size)
        started = time.perf_counter()
        try:
            while row not in self.finished:
                event = next(self.events, None)
                if event is None:
                    raise RuntimeError("the T3 batch ended before this chunk's row finished")
                if event.step is not None:
                    self.tokens.setdefault(event.row, []).append(event.step.token)
                    self.count += 1
                    if event.row == row:
                        advance(1)
                if event.finished is not None:
                    self.finished[event.row] = event.finished
        finally:
            self.seconds += time.perf_counter() - started
        return self.tokens.pop(row, []), self.finished[row]

    def tokens_per_second(self) -> float:
        return self.count / max(self.seconds, 1e-9)


def t3_key(chunk: Chunk) -> mx.array:
    """The chunk's T3 key (the first of its three: T3, flow, HiFT)."""
    return mx.random.split(chunk.key, 3)[0]


def solo_speech(
    steps, sampler, max_new_tokens: int, stop_token: int, advance: Callable[[int], None]
) -> tuple[list[int], str]:
    """One chunk's token ids from ``T3.generate_steps`` and why it ended, as
    ``SpeechBatch.speech`` says it."""
    sampled = []
    for step in steps:
        sampled.append(step.token)
        advance(1)
    if sampled and sampled[-1] == stop_token and len(sampled) > sampler.first_stop_index:
        return sampled, STOP_TOKEN
    return sampled, MAX_NEW_TOKENS if len(sampled) == max_new_tokens else FILTERED


def batch_requests(
    requests: list[Request], batch_size: int, t3, sampler_for: Callable[[dict], object]
) -> list[Request]:
    """The requests with one ``SpeechBatch`` over all their chunks (none for a single
    chunk or ``batch_size=1``: chunk by chunk). Rows of equal settings share one sampler,
    so its processors run once per step over all of them."""
    pairs = [(request, chunk) for request in requests for chunk in request.chunks]
    if batch_size == 1 or len(pairs) < 2:
        return requests
    batch, samplers = SpeechBatch(t3, batch_size), {}
    for request, chunk in pairs:
        params = request.params
        settings = tuple(sorted(params.items()))
        if settings not in samplers:
            samplers[settings] = sampler_for(params)
        row = BatchRow(
            request.conds.t3,
            chunk.tokens,
            samplers[settings],
            params["max_new_tokens"],
            key=t3_key(chunk),
        )
        batch.add(chunk, row)
    return [replace(request, speech=batch) for request in requests]

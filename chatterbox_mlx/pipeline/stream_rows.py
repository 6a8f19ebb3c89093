"""``generate_stream``'s work for one call as T3 rows: each chunk of text is one row, whose
tokens become audio on the chunk schedule (``StreamingVocoder``).

Whoever decodes the rows is free: ``solo()`` runs each row through ``T3.generate_steps``
(what ``generate_stream`` yields), and the server's scheduler decodes the rows of many
calls in one ``DecodeBatch``, pushing each row's tokens here as they come. Given the same
key, a row speaks the same tokens either way, so the audio is the same."""

from __future__ import annotations

from collections.abc import Iterator

import mlx.core as mx
import numpy as np

from ..constants import SAMPLES_PER_TOKEN, SPEECH_VOCAB_SIZE
from ..models.t3.batch import BatchRow
from .requests import Request
from .streaming import StreamingVocoder, chunk_sizes


class StreamRows:
    """A checked call (``Request``) of ``generate_stream``: ``next_row`` gives each chunk's
    T3 row in order, ``push`` takes that row's tokens one by one and ``end_row`` closes it;
    each returns the audio pieces ``[1, n]`` made final (watermarked and stretched as the
    call asked), the chunk's pause included."""

    def __init__(self, pipeline, request: Request, schedule, flow_prompt_tokens):
        self.pipeline, self.request = pipeline, request
        self.schedule, self.flow_prompt_tokens = schedule, flow_prompt_tokens
        self._chunks = iter(request.chunks)
        self.chunk = None
        self.vocoder: StreamingVocoder | None = None

    def lead_in(self) -> list[mx.array]:
        """The silence before the first chunk (a leading pause tag), if any."""
        return self._silence(self.request.lead_in)

    def next_row(self) -> BatchRow | None:
        """The next chunk's T3 row; None after the last chunk."""
        self.chunk = next(self._chunks, None)
        if self.chunk is None:
            return None
        pipeline, request = self.pipeline, self.request
        t3_key, flow_key, hift_key = mx.random.split(self.chunk.key, 3)
        self.vocoder = StreamingVocoder(
            pipeline.s3gen,
            request.conds.gen,
            pipeline.variant.flow_steps,
            key=flow_key,
            hift_key=hift_key,
            prompt_tokens=self.flow_prompt_tokens,
        )
        self._sizes = chunk_sizes(self.schedule)
        self._size = next(self._sizes)
        self._pending: list[int] = []
        params = request.params
        sampler = pipeline._sampler(params)
        return BatchRow(
            request.conds.t3, self.chunk.tokens, sampler, params["max_new_tokens"], key=t3_key
        )

    def push(self, token: int) -> list[mx.array]:
        """One sampled token of the current row (special tokens are dropped)."""
        if token < SPEECH_VOCAB_SIZE:
            self._pending.append(token)
        if len(self._pending) < self._size:
            return []
        wav = self.vocoder.push(self._pending)
        self._pending, self._size = [], next(self._sizes)
        return self._out(wav)

    def end_row(self) -> list[mx.array]:
        """The current row ended: the rest of its audio, then its pause."""
        vocoder, variant = self.vocoder, self.pipeline.variant
        pieces = self._out(vocoder.push(self._pending)) if self._pending else []
        self._pending = []
        if not vocoder.tokens:
            raise RuntimeError("T3 produced no speech tokens for this text")
        tail = vocoder.finish(list(variant.tail_tokens))
        if variant.drop_last_token_audio:
            tail = tail[: max(0, len(tail) - SAMPLES_PER_TOKEN)]
        return pieces + self._out(tail) + self._silence(self.chunk.pause_after)

    def solo(self) -> Iterator[mx.array]:
        """``generate_stream``: every row decoded alone, its audio as it is made."""
        request, t3 = self.request, self.pipeline.t3
        yield from self.lead_in()
        with request.progress.task("chunks", len(request.chunks)) as advance:
            while (row := self.next_row()) is not None:
                steps = t3.generate_steps(
                    row.cond,
                    row.text_tokens,
                    row.sampler,
                    max_new_tokens=row.max_new_tokens,
                    key=row.key,
                )
                for step in steps:
                    yield from self.push(step.token)
                yield from self.end_row()
                advance(1)

    def _out(self, wav: np.ndarray) -> list[mx.array]:
        return [self.pipeline._finish(wav, self.request)] if wav.size else []

    def _silence(self, seconds: float) -> list[mx.array]:
        return self._out(self.pipeline._silence(seconds)) if seconds else []

"""Several T3 generations at once: one forward pass per step over every row.

Decoding T3 reads all of its weights per step (on the CPU the cost, on a GPU the
per-step overhead), so rows that share the step share that cost. The shape follows
mlx-lm's ``BatchGenerator``: a row joins with a prefill of its own (the very pass it
runs alone, so its cache and first token are its solo ones) whose cache is merged into
the batch's ``BatchKVCache`` (left padding, per-row offset and mask); each step then
embeds every row's last token at that row's own speech position, runs the backbone once,
and samples each row with its own sampler, repetition history and random draws; a row
that stops (stop token, ``max_new_tokens``) leaves the cache at once and the next waiting
row takes its place. English and Multilingual keep each request's CFG pair as two
adjacent rows.

Given the same key, each row speaks the tokens it speaks alone (``T3.generate_steps``)
up to float rounding: a batched product sums in another order than a single row's, so a
near-tie between two tokens' ``probs / noise`` can rarely flip (``tests/test_batching.py``
counts it).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import mlx.core as mx

from ...pipeline.checks import NonFiniteError
from .cache import GROW_STEPS, BatchKVCache
from .config import T3Cond
from .decode import T3Step, exponential_draws
from .sampling import Sampler, seen_mask

STOP_TOKEN = "stop_token"  # the row drew its stop token
MAX_NEW_TOKENS = "max_new_tokens"  # the row drew its last allowed token
FILTERED = "filtered"  # the processors left nothing to draw from (no token)


@dataclass(frozen=True)
class BatchRow:
    """One generation of a batch: what ``T3.generate_steps`` takes."""

    cond: T3Cond
    text_tokens: mx.array
    sampler: Sampler
    max_new_tokens: int = 1000
    key: mx.array | None = None
    noise: mx.array | None = None  # [max_new_tokens, vocab] Exp(1) draws, replaces key


@dataclass(frozen=True)
class RowToken:
    """One step of one row: ``row`` is its index in the order the rows were given;
    ``finished`` is None while it goes on, else why it ended (``STOP_TOKEN``,
    ``MAX_NEW_TOKENS``, or ``FILTERED``, which comes with no step)."""

    row: int
    step: T3Step | None
    finished: str | None = None


@dataclass
class _Active:
    """A row in the batch: its sampling state and its last (pending) sample."""

    row: int
    rows: int  # cache rows: 2 with CFG
    sampler: Sampler
    draws: object
    max_tokens: int
    stop_token: int
    seen: mx.array
    index: int = 0
    pending: tuple = field(default=())  # (token [1, 1], probs [1, vocab], finite, filtered)

    def read(self) -> RowToken:
        token, probs, finite, filtered = self.pending
        if not finite.item():
            raise NonFiniteError(
                f"T3 logits are not finite at speech token {self.index} (NaN or inf): the T3 "
                "weights or the voice conditioning hold non-finite values; re-convert the "
                "checkpoint or prepare the voice again"
            )
        if filtered.item():
            return RowToken(self.row, None, FILTERED)
        token_id = token.item()
        step = T3Step(self.index, token_id, probs)
        if token_id == self.stop_token and self.index >= self.sampler.first_stop_index:
            return RowToken(self.row, step, STOP_TOKEN)
        if self.index == self.max_tokens - 1:
            return RowToken(self.row, step, MAX_NEW_TOKENS)
        return RowToken(self.row, step)

    def advance(self, ids: mx.array) -> None:
        """The repetition history after the pending token; on to the next index."""
        drawn = ids[None] == self.pending[0]
        if self.index == 0 and not self.sampler.penalize_start_token:
            self.seen = drawn
        else:
            self.seen = mx.logical_or(self.seen, drawn)
        self.index += 1


def sample_rows(actives: list[_Active], logits: mx.array) -> None:
    """Sample every row of ``actives`` (one sampler) from their raw logits ``[rows, vocab]``
    (CFG pairs adjacent); each row's pending sample is set."""
    sampler = actives[0].sampler
    rows = actives[0].rows
    finite = mx.all(mx.isfinite(logits), axis=-1).reshape(len(actives), rows).all(axis=-1)
    seen = mx.concatenate([a.seen for a in actives], axis=0)
    for process in sampler.processors:
        logits = process(logits, seen)
    filtered = mx.all(logits == -mx.inf, axis=-1)
    probs = mx.softmax(logits, axis=-1)
    noise = mx.concatenate([a.draws(a.index) for a in actives], axis=0)
    tokens = sampler.draw(probs, noise)
    for j, active in enumerate(actives):
        active.pending = (tokens[j : j + 1], probs[j : j + 1], finite[j], filtered[j])


class DecodeBatch:
    """The rows decoding together and their cache (one ``BatchKVCache`` per layer).

    A caller that schedules rows itself (the server's continuous batching) goes round:
    ``join`` new rows, ``read`` every row's pending token (finished rows leave), ``step``;
    ``remove`` drops rows between rounds (a client that left). The rows joined since the
    last round enter the cache together (one copy of the batch, however many joined)."""

    def __init__(self, t3):
        self.t3 = t3
        self.actives: list[_Active] = []
        self.cache: list[BatchKVCache] | None = None
        self.joining: list[list[BatchKVCache | None]] = []  # per joined row, per layer
        self.ids = mx.arange(t3.config.speech_vocab_size)

    def join(self, row: int, request: BatchRow) -> None:
        """Prefill ``request`` alone and sample its first token; its cache rows enter the
        batch's at the next ``read``, ``remove`` or ``step``."""
        t3, cfg = self.t3, self.t3.config
        count = int(request.max_new_tokens)
        embeds = t3.prompt_embeds(request.cond, request.text_tokens, request.sampler, count)
        # room for the first steps only: the batch cache grows as its rows go on
        solo = t3.make_cache(embeds.shape[0], embeds.shape[1] + min(count, GROW_STEPS))
        logits = t3.prefill_logits(request.cond, embeds, solo)
        draws = exponential_draws(request.noise, request.key, cfg.speech_vocab_size, count)
        active = _Active(
            row,
            embeds.shape[0],
            request.sampler,
            draws,
            count,
            cfg.stop_speech_token,
            seen_mask(mx.array([[cfg.start_speech_token]]), cfg.speech_vocab_size),
        )
        sample_rows([active], logits)
        mx.eval(active.pending)
        self.joining.append(
            [BatchKVCache(c.keys, c.values, c.offset, [0] * c.keys.shape[0]) for c in solo]
        )
        self.actives.append(active)

    def _merge_joining(self) -> None:
        if not self.joining:
            return
        if self.cache is None:
            self.cache = self.joining.pop(0)
        joining, self.joining = self.joining, []
        if not joining:
            return
        for index, layer in enumerate(self.cache):
            theirs = [row[index] for row in joining]
            for row in joining:  # a joined row's layer is freed once merged
                row[index] = None
            layer.merge(*theirs)

    def read(self) -> list[RowToken]:
        """Every row's pending sample as a ``RowToken``; finished rows leave the batch."""
        self._merge_joining()
        mx.eval([a.pending for a in self.actives])
        events = [self.read_row(active) for active in self.actives]
        self._keep([a for a, e in zip(self.actives, events, strict=True) if e.finished is None])
        return events

    def remove(self, rows) -> None:
        """Drop the rows ``rows`` (their indices as joined) from the batch."""
        self._merge_joining()
        self._keep([a for a in self.actives if a.row not in rows])

    def _keep(self, keep: list[_Active]) -> None:
        if len(keep) == len(self.actives):
            return
        kept, cache_rows, start = {id(a) for a in keep}, [], 0
        for active in self.actives:
            if id(active) in kept:
                cache_rows += range(start, start + active.rows)
            start += active.rows
        self.actives = keep
        if keep:
            for layer in self.cache:
                layer.filter(cache_rows)
        else:
            self.cache = None

    def read_row(self, active: _Active) -> RowToken:
        event = active.read()
        if event.finished is None:
            active.advance(self.ids)
        return event

    def step(self) -> None:
        """One forward pass over every row; each row's next sample becomes pending."""
        self._merge_joining()
        tokens = mx.concatenate([a.pending[0] for a in self.actives], axis=0)
        indices = mx.array([a.index - 1 for a in self.actives])
        embeds = self.t3.embed_speech(tokens, indices)
        rows = [j for j, a in enumerate(self.actives) for _ in range(a.rows)]
        if len(rows) > len(self.actives):
            embeds = embeds[mx.array(rows)]
        logits = self.t3.step_logits(embeds, self.cache)
        for members, row_index in self.groups():
            part = logits if len(row_index) == logits.shape[0] else logits[mx.array(row_index)]
            sample_rows(members, part)

    def groups(self) -> list[tuple[list[_Active], list[int]]]:
        """The rows by sampler (each sampler's processors run once over its rows), with
        their cache rows."""
        by_sampler: dict[int, tuple[list[_Active], list[int]]] = {}
        start = 0
        for active in self.actives:
            members, row_index = by_sampler.setdefault(id(active.sampler), ([], []))
            members.append(active)
            row_index += range(start, start + active.rows)
            start += active.rows
        return list(by_sampler.values())


def decode_batch(t3, rows: Iterable[BatchRow], *, batch_size: int) -> Iterator[RowToken]:
    """``T3.generate_batch``: up to ``batch_size`` rows decode together; ``rows`` is read
    one row at a time, whenever there is room."""
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    waiting = enumerate(rows)
    batch = DecodeBatch(t3)
    exhausted = False
    while True:
        while not exhausted and len(batch.actives) < batch_size:
            nxt = next(waiting, None)
            if nxt is None:
                exhausted = True
            else:
                batch.join(*nxt)
        if not batch.actives:
            return
        yield from batch.read()
        if batch.actives:
            batch.step()

"""Logits processors, the multinomial draw, and the two samplers built from them.

Each processor has exactly the semantics of its ``transformers`` counterpart
(``RepetitionPenaltyLogitsProcessor``, ``TemperatureLogitsWarper``,
``TopKLogitsWarper``, ``TopPLogitsWarper``, ``MinPLogitsWarper``): logits are
``[batch, vocab]`` float32, filtered entries become ``-inf``. Every processor works row
by row, so one call serves a batch of requests (``batch.py``), each row with its own
repetition history.

Sampling reproduces ``torch.multinomial(probs, 1)``, which on the CPU draws
``q ~ Exp(1)`` per entry and returns ``argmax(probs / q)``. The draw ``q`` is an
argument, so a test can hand over the reference's exact draws.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import mlx.core as mx

# (logits [batch, vocab] float32, seen [batch, vocab] bool) -> logits
Processor = Callable[[mx.array, mx.array], mx.array]


def seen_mask(token_ids: mx.array, vocab_size: int) -> mx.array:
    """Boolean ``[batch, vocab]`` mask of the ids present in ``token_ids`` ``[batch, n]``."""
    token_ids = mx.array(token_ids)
    if token_ids.ndim == 1:
        token_ids = token_ids[None]
    batch = token_ids.shape[0]
    mask = mx.zeros((batch, vocab_size), dtype=mx.bool_)
    if token_ids.shape[1] == 0:
        return mask
    return mx.put_along_axis(mask, token_ids.astype(mx.int32), mx.array(True), axis=-1)


def check_sampling_args(
    *,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
) -> None:
    """Raise ValueError for arguments the transformers processors would refuse."""
    if temperature is not None and not temperature > 0:
        raise ValueError(
            f"temperature must be > 0, got {temperature}; use a small value such as 0.1 for "
            "near-greedy sampling"
        )
    if top_k is not None and (int(top_k) != top_k or top_k < 0):
        raise ValueError(f"top_k must be an integer >= 0 (0 disables it), got {top_k}")
    if top_p is not None and not 0.0 <= top_p <= 1.0:
        raise ValueError(f"top_p must be in [0, 1] (1 disables it), got {top_p}")
    if min_p is not None and not 0.0 <= min_p <= 1.0:
        raise ValueError(f"min_p must be in [0, 1] (0 disables it), got {min_p}")
    if repetition_penalty is not None and not repetition_penalty > 0:
        raise ValueError(
            f"repetition_penalty must be > 0 (1 disables it), got {repetition_penalty}"
        )


def apply_repetition_penalty(logits: mx.array, seen: mx.array, penalty: float) -> mx.array:
    """Divide positive and multiply negative logits of already seen tokens by ``penalty``."""
    penalized = mx.where(logits < 0, logits * penalty, logits / penalty)
    return mx.where(seen, penalized, logits)


def apply_temperature(logits: mx.array, temperature: float) -> mx.array:
    return logits / temperature


def apply_top_k(logits: mx.array, top_k: int) -> mx.array:
    """Keep the ``top_k`` largest logits (and any tied with the k-th)."""
    k = min(int(top_k), logits.shape[-1])
    kth = mx.min(mx.topk(logits, k, axis=-1), axis=-1, keepdims=True)
    return mx.where(logits < kth, -mx.inf, logits)


def apply_top_p(logits: mx.array, top_p: float) -> mx.array:
    """Nucleus filtering: drop the low tail whose cumulative probability is <= 1 - top_p.

    The most likely token is always kept."""
    order = mx.argsort(logits, axis=-1)  # ascending, as transformers sorts
    sorted_logits = mx.take_along_axis(logits, order, axis=-1)
    cumulative = mx.cumsum(mx.softmax(sorted_logits, axis=-1), axis=-1)
    remove_sorted = cumulative <= (1.0 - top_p)
    keep_last = mx.arange(logits.shape[-1]) == logits.shape[-1] - 1
    remove_sorted = mx.logical_and(remove_sorted, mx.logical_not(keep_last))
    remove = mx.put_along_axis(mx.zeros_like(remove_sorted), order, remove_sorted, axis=-1)
    return mx.where(remove, -mx.inf, logits)


def apply_min_p(logits: mx.array, min_p: float) -> mx.array:
    """Drop tokens whose probability is below ``min_p`` times the top probability."""
    probs = mx.softmax(logits, axis=-1)
    threshold = min_p * mx.max(probs, axis=-1, keepdims=True)
    remove = probs < threshold
    top = mx.argmax(probs, axis=-1, keepdims=True)
    remove = mx.put_along_axis(remove, top, mx.array(False), axis=-1)
    return mx.where(remove, -mx.inf, logits)


def exponential_noise(shape: tuple[int, ...], key: mx.array | None = None) -> mx.array:
    """Exp(1) draws, the noise ``torch.multinomial`` uses on the CPU."""
    u = mx.random.uniform(shape=shape, key=key)
    return -mx.log1p(-u)


def sample_from_probs(probs: mx.array, noise: mx.array) -> mx.array:
    """``torch.multinomial(probs, 1)`` given its Exp(1) draws: ``argmax(probs / noise)``.

    probs ``[batch, vocab]``, noise broadcastable to it; returns int32 ``[batch, 1]``.
    Zero-probability entries can never win, even where a draw is exactly 0."""
    scores = mx.where(probs > 0, probs / noise, 0.0)
    return mx.argmax(scores, axis=-1, keepdims=True).astype(mx.int32)


def combine_cfg(logits: mx.array, seen: mx.array, weight: float) -> mx.array:
    """Classifier-free guidance over pairs of rows (conditional, unconditional) -> one row
    per pair (a batch of requests lays its pairs out one after another)."""
    cond, uncond = logits[0::2], logits[1::2]
    return cond + mx.array(weight, dtype=mx.float32) * (cond - uncond)


def _penalize(logits: mx.array, seen: mx.array, penalty: float) -> mx.array:
    return apply_repetition_penalty(logits, seen, penalty)


def _unseen(fn, *args) -> Processor:
    """A processor that ignores the repetition history."""
    return lambda logits, _seen: fn(logits, *args)


@dataclass(frozen=True)
class Sampler:
    """How one variant turns T3's logits into a token: an ordered list of processors and
    a draw, plus the two rules in which upstream's loops differ (see ``decode``)."""

    processors: tuple[Processor, ...]
    cfg_weight: float = 0.0  # > 0: a conditional and an unconditional row, combined first
    first_stop_index: int = 0  # a stop token drawn before this index does not end the loop
    penalize_start_token: bool = True  # the start token stays in the repetition history
    # upstream's T3.inference appends the start token's embedding (position 0) once more
    # after the prompt, whose speech part already ends with it
    repeat_start_token: bool = False
    draw: Callable[[mx.array, mx.array], mx.array] = sample_from_probs

    @classmethod
    def cfg(
        cls,
        *,
        cfg_weight: float = 0.5,
        repetition_penalty: float = 1.2,
        temperature: float = 0.8,
        min_p: float = 0.05,
        top_p: float = 0.95,
    ) -> Sampler:
        """English / Multilingual (upstream ``T3.inference``): CFG combine, repetition
        penalty, temperature, min_p, top_p (defaults: upstream ``T3.inference``'s)."""
        check_sampling_args(
            temperature=temperature, top_p=top_p, min_p=min_p, repetition_penalty=repetition_penalty
        )
        steps: list[Processor] = []
        if cfg_weight > 0.0:
            steps.append(partial(combine_cfg, weight=float(cfg_weight)))
        steps.append(partial(_penalize, penalty=float(repetition_penalty)))
        if temperature != 1.0:
            steps.append(_unseen(apply_temperature, temperature))
        steps += [_unseen(apply_min_p, min_p), _unseen(apply_top_p, top_p)]
        return cls(tuple(steps), cfg_weight=float(cfg_weight), repeat_start_token=True)

    @classmethod
    def turbo(
        cls,
        *,
        temperature: float = 0.8,
        top_k: int = 1000,
        top_p: float = 0.95,
        repetition_penalty: float = 1.2,
    ) -> Sampler:
        """Turbo / Nano (upstream ``T3.inference_turbo``, transformers' processor order):
        temperature (skipped at <= 0 or 1), top_k (skipped at 0), top_p (skipped at 1),
        repetition penalty (skipped at 1) over the generated tokens, BOS for the first.
        Upstream never stops on the first draw."""
        check_sampling_args(top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty)
        steps: list[Processor] = []
        if temperature > 0 and temperature != 1.0:
            steps.append(_unseen(apply_temperature, temperature))
        if top_k > 0:
            steps.append(_unseen(apply_top_k, top_k))
        if top_p < 1.0:
            steps.append(_unseen(apply_top_p, top_p))
        if repetition_penalty != 1.0:
            steps.append(partial(_penalize, penalty=float(repetition_penalty)))
        return cls(tuple(steps), first_stop_index=1, penalize_start_token=False)

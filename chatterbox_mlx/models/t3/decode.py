"""T3's one decode loop, shaped like mlx-lm's ``generate_step``.

The loop owns the KV cache (through ``step_logits``), the stop rule and the count; a
``Sampler`` (``sampling.py``) brings the variant's processors and draw. ``max_tokens`` is
the most tokens sampled, the stop token included.

With ``overlap`` the next step's forward pass is built from the current token before that
token is read back (``mx.async_eval``), so the device computes while Python waits; this
costs one speculative forward pass at the end (never a draw: the next token is sampled
only once the current one is known not to stop). Where the CPU kernels are active, the
fast ``Linear`` evaluates its input eagerly, so there is nothing to overlap and the loop
runs step by step (``layers.overlaps_evaluation``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import mlx.core as mx

from ...pipeline.checks import NonFiniteError
from .sampling import Sampler, exponential_noise, seen_mask


@dataclass
class T3Step:
    """One sampled token: its index in the loop, its id and the processed
    probabilities ``[1, vocab]`` it was drawn from."""

    index: int
    token: int
    probs: mx.array


def exponential_draws(noise: mx.array | None, key: mx.array | None, vocab: int, steps: int):
    """Per-step Exp(1) draws ``[1, vocab]``: rows of ``noise`` when given, else from
    ``key`` (split once per step), else from MLX's global generator."""
    if noise is not None:
        noise = mx.array(noise, dtype=mx.float32)
        if noise.ndim != 2 or noise.shape[1] != vocab:
            raise ValueError(f"noise must be [steps, {vocab}] Exp(1) draws, got {noise.shape}")

        def take(i: int) -> mx.array:
            if i >= noise.shape[0]:
                raise ValueError(
                    f"noise has {noise.shape[0]} rows but step {i} needs one: pass up to "
                    f"{steps} rows, one per sampled token"
                )
            return noise[i : i + 1]

        return take
    state = {"key": key}

    def draw(_: int) -> mx.array:
        if state["key"] is None:
            return exponential_noise((1, vocab))
        state["key"], sub = mx.random.split(state["key"])
        return exponential_noise((1, vocab), key=sub)

    return draw


def decode(
    step_logits: Callable[[mx.array], mx.array],
    embed_token: Callable[[mx.array, int], mx.array],
    prefill: mx.array,
    sampler: Sampler,
    draws: Callable[[int], mx.array],
    *,
    max_tokens: int,
    start_token: int,
    stop_token: int,
    vocab: int,
    overlap: bool = False,
) -> Iterator[T3Step]:
    """Sample up to ``max_tokens`` speech tokens.

    step_logits: embeddings ``[B, n, dim]`` -> raw logits ``[B, vocab]`` of the last
    position (appending to the cache). embed_token: (token ``[1, 1]``, its index) -> the
    next input ``[B, 1, dim]``. Raw logits that are not finite raise ``NonFiniteError``.
    A step whose processors filter every entry ends the loop before drawing."""
    seen = seen_mask(mx.array([[start_token]]), vocab)
    ids = mx.arange(vocab)

    def sample(logits: mx.array, index: int, seen: mx.array):
        finite = mx.all(mx.isfinite(logits))
        for process in sampler.processors:
            logits = process(logits, seen)
        filtered_out = mx.all(logits == -mx.inf)
        probs = mx.softmax(logits, axis=-1)
        return sampler.draw(probs, draws(index)), probs, finite, filtered_out

    def next_seen(seen: mx.array, token: mx.array, index: int) -> mx.array:
        drawn = ids[None] == token.reshape(1, 1)
        if index == 0 and not sampler.penalize_start_token:
            return drawn
        return mx.logical_or(seen, drawn)

    current = sample(step_logits(prefill), 0, seen)
    for i in range(max_tokens):
        last = i == max_tokens - 1
        token, probs, finite, filtered_out = current
        next_logits = None
        if overlap:
            mx.async_eval(*current)
            if not last:
                next_logits = step_logits(embed_token(token, i))
                mx.async_eval(next_logits)
        mx.eval(token, probs, finite, filtered_out)
        if not finite.item():
            raise NonFiniteError(
                f"T3 logits are not finite at speech token {i} (NaN or inf): the T3 weights "
                "or the voice conditioning hold non-finite values; re-convert the checkpoint "
                "or prepare the voice again"
            )
        if filtered_out.item():
            return
        token_id = token.item()
        yield T3Step(i, token_id, probs)
        if last or (token_id == stop_token and i >= sampler.first_stop_index):
            return
        seen = next_seen(seen, token, i)
        if next_logits is None:
            next_logits = step_logits(embed_token(token, i))
        current = sample(next_logits, i + 1, seen)

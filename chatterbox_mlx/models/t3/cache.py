"""KV caches, attention masks and head reshapes shared by T3's two backbones.

``KVCache`` holds one sequence (or a CFG pair that moves in step). ``BatchKVCache`` holds
rows of different lengths, as mlx-lm's: each row is left-padded to the longest, so every
row writes its next position at the same column; ``left_padding`` says where each row's
own keys start, its positions (RoPE, ``wpe``) count from there, and the mask hides the
padding. Rows leave (``filter``) and join (``merge``) between steps.

Both answer the backbones' two questions before a forward pass: the positions of the new
inputs (``positions``) and the mask over the keys they attend (``mask``)."""

from __future__ import annotations

import mlx.core as mx

from ..layers import attention

GROW_STEPS = 128  # positions a batch cache grows by when it runs out of room


class KVCache:
    """Keys and values of one attention layer in a buffer allocated once.

    Each call writes the new positions in place (slice update) and returns views of
    the filled part; nothing is concatenated per token."""

    def __init__(self, batch: int, num_kv_heads: int, head_dim: int, max_len: int, dtype):
        shape = (batch, num_kv_heads, max_len, head_dim)
        self.keys = mx.zeros(shape, dtype=dtype)
        self.values = mx.zeros(shape, dtype=dtype)
        self.max_len = max_len
        self.offset = 0

    def update(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        start, end = self.offset, self.offset + keys.shape[2]
        if end > self.max_len:
            raise ValueError(
                f"KV cache overflow: {end} positions, allocated {self.max_len}; "
                "make the cache with a larger max_len"
            )
        self.keys[:, :, start:end, :] = keys
        self.values[:, :, start:end, :] = values
        self.offset = end
        return self.keys[:, :, :end, :], self.values[:, :, :end, :]

    def positions(self, length: int) -> mx.array:
        """Positions ``[length]`` of the next ``length`` inputs."""
        return mx.arange(self.offset, self.offset + length)

    def mask(self, length: int) -> str | None:
        return attention_mask(length)


class BatchKVCache:
    """One attention layer's keys and values for rows of different lengths, left-padded.

    ``keys``/``values`` are ``[rows, heads, capacity, head_dim]``; columns ``offset`` and
    beyond are free, and row ``b``'s own keys are the columns from ``left_padding[b]``."""

    def __init__(self, keys: mx.array, values: mx.array, offset: int, left_padding: list[int]):
        self.keys, self.values = keys, values
        self.offset = offset
        self.left_padding = list(left_padding)

    @classmethod
    def empty(cls, rows: int, num_kv_heads: int, head_dim: int, capacity: int, dtype):
        shape = (rows, num_kv_heads, capacity, head_dim)
        return cls(mx.zeros(shape, dtype), mx.zeros(shape, dtype), 0, [0] * rows)

    @property
    def rows(self) -> int:
        return self.keys.shape[0]

    def update(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        start, end = self.offset, self.offset + keys.shape[2]
        if end > self.keys.shape[2]:
            self._grow(max(GROW_STEPS, end - self.keys.shape[2]))
        self.keys[:, :, start:end, :] = keys
        self.values[:, :, start:end, :] = values
        self.offset = end
        return self.keys[:, :, :end, :], self.values[:, :, :end, :]

    def _grow(self, steps: int) -> None:
        rows, heads, _, dim = self.keys.shape
        extra = mx.zeros((rows, heads, steps, dim), self.keys.dtype)
        self.keys = mx.concatenate([self.keys[:, :, : self.offset], extra], axis=2)
        self.values = mx.concatenate([self.values[:, :, : self.offset], extra], axis=2)

    def positions(self, length: int) -> mx.array:
        """Each row's own positions ``[rows, length]`` of the next ``length`` inputs
        (padding columns, before a row starts, get position 0)."""
        start = self.offset - mx.array(self.left_padding)
        return mx.maximum(start[:, None] + mx.arange(length)[None], 0)

    def mask(self, length: int) -> mx.array | str | None:
        """Additive ``[rows, 1, length, offset + length]`` mask: causal, and no row sees
        another row's padding; without padding, ``KVCache``'s mask. A padding query sees
        itself, so that no softmax is empty (its output is never read)."""
        if not any(self.left_padding):
            return attention_mask(length)
        keys = mx.arange(self.offset + length)
        queries = self.offset + mx.arange(length)
        causal = keys[None] <= queries[:, None]
        own = keys[None, None] >= mx.array(self.left_padding)[:, None, None]
        allowed = mx.logical_or(mx.logical_and(causal[None], own), keys == queries[:, None])
        zero = mx.array(0.0, self.keys.dtype)
        return mx.where(allowed, zero, mx.array(-mx.inf, self.keys.dtype))[:, None]

    def filter(self, keep: list[int]) -> None:
        """Keep rows ``keep`` (in that order); columns no kept row uses are dropped."""
        pads = [self.left_padding[i] for i in keep]
        trim = min(pads) if pads else 0
        index = mx.array(keep, dtype=mx.int32)
        self.keys = self.keys[index][:, :, trim:]
        self.values = self.values[index][:, :, trim:]
        self.offset -= trim
        self.left_padding = [p - trim for p in pads]
        mx.eval(self.keys, self.values)

    def merge(self, *others: BatchKVCache) -> None:
        """Append the rows of ``others``, in order; shorter sides are padded on the left so
        that every row writes its next position at the same column. One copy of every
        row, however many join at once."""
        caches = (self, *others)
        length = max(c.offset for c in caches)
        capacity = max(length, *(c.keys.shape[2] for c in caches))
        rows = sum(c.rows for c in caches)
        _, heads, _, dim = self.keys.shape
        keys = mx.zeros((rows, heads, capacity, dim), self.keys.dtype)
        values = mx.zeros((rows, heads, capacity, dim), self.values.dtype)
        pads, first = [], 0
        for cache in caches:
            shift = length - cache.offset
            last = first + cache.rows
            keys[first:last, :, shift:length] = cache.keys[:, :, : cache.offset]
            values[first:last, :, shift:length] = cache.values[:, :, : cache.offset]
            pads += [p + shift for p in cache.left_padding]
            first = last
        self.keys, self.values = keys, values
        self.offset, self.left_padding = length, pads
        mx.eval(self.keys, self.values)


def attention_mask(length: int) -> str | None:
    """Causal mask for ``length`` new queries after the cached positions: none for one
    query, else ``"causal"`` (the last query sees every key, cached ones included)."""
    return None if length == 1 else "causal"


def split_heads(x: mx.array, num_heads: int) -> mx.array:
    batch, length, _ = x.shape
    return x.reshape(batch, length, num_heads, -1).transpose(0, 2, 1, 3)


def merge_heads(x: mx.array) -> mx.array:
    batch, _, length, _ = x.shape
    return x.transpose(0, 2, 1, 3).reshape(batch, length, -1)


def attend(q, k, v, cache, scale: float, mask) -> mx.array:
    """Attention of the new queries over the cached and new keys/values, heads merged."""
    if cache is not None:
        k, v = cache.update(k, v)
    return merge_heads(attention(q, k, v, scale, mask))

"""KV cache, causal mask and head reshapes shared by T3's two backbones."""

from __future__ import annotations

import mlx.core as mx

from ..layers import attention


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


def attend(q, k, v, cache: KVCache | None, scale: float, mask) -> mx.array:
    """Attention of the new queries over the cached and new keys/values, heads merged."""
    if cache is not None:
        k, v = cache.update(k, v)
    return merge_heads(attention(q, k, v, scale, mask))

"""The GPT-2 backbone of Turbo / Nano T3 (transformers' GPT2Model on inputs_embeds)."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ..layers import Linear, gelu_approx
from .cache import BatchKVCache, KVCache, attend, attention_mask, split_heads
from .config import T3Config


class GPT2Attention(nn.Module):
    def __init__(self, config: T3Config):
        super().__init__()
        dim = config.hidden_size
        self.num_heads = config.num_heads
        self.scale = (dim // config.num_heads) ** -0.5
        self.c_attn = Linear(dim, 3 * dim)
        self.c_proj = Linear(dim, dim)

    def __call__(self, x, mask, cache: KVCache | None) -> mx.array:
        q, k, v = mx.split(self.c_attn(x), 3, axis=-1)
        q, k, v = (split_heads(t, self.num_heads) for t in (q, k, v))
        return self.c_proj(attend(q, k, v, cache, self.scale, mask))


class GPT2MLP(nn.Module):
    def __init__(self, config: T3Config):
        super().__init__()
        self.c_fc = Linear(config.hidden_size, config.intermediate_size)
        self.c_proj = Linear(config.intermediate_size, config.hidden_size)

    def __call__(self, x: mx.array) -> mx.array:
        return self.c_proj(gelu_approx(self.c_fc(x)))  # gelu_approx is gelu_new


class GPT2Block(nn.Module):
    def __init__(self, config: T3Config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
        self.attn = GPT2Attention(config)
        self.ln_2 = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
        self.mlp = GPT2MLP(config)

    def __call__(self, x, mask, cache) -> mx.array:
        x = x + self.attn(self.ln_1(x), mask, cache)
        return x + self.mlp(self.ln_2(x))


class GPT2Backbone(nn.Module):
    """transformers' GPT2Model driven by ``inputs_embeds`` (adds its own ``wpe``)."""

    def __init__(self, config: T3Config):
        super().__init__()
        self.wpe = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.h = [GPT2Block(config) for _ in range(config.num_layers)]
        self.ln_f = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)

    def __call__(self, x: mx.array, cache: list[KVCache | BatchKVCache] | None = None) -> mx.array:
        length = x.shape[1]
        x = x + self.wpe(cache[0].positions(length) if cache else mx.arange(length))
        mask = cache[0].mask(length) if cache else attention_mask(length)
        for i, block in enumerate(self.h):
            x = block(x, mask, cache[i] if cache else None)
        return self.ln_f(x)

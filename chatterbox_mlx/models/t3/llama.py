"""The Llama backbone of English / Multilingual T3 (transformers' LlamaModel on inputs_embeds)."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..layers import Linear, silu
from .cache import BatchKVCache, KVCache, attend, attention_mask, split_heads
from .config import T3Config


def llama3_inv_freq(config: T3Config) -> np.ndarray:
    """RoPE inverse frequencies with llama3 scaling, in float32 as transformers computes them."""
    dim = config.head_dim
    inv_freq = 1.0 / (
        config.rope_theta ** (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim)
    )
    inv_freq = inv_freq.astype(np.float32)
    scaling = config.rope_scaling
    if not scaling:
        return inv_freq
    if scaling.get("rope_type", "llama3") != "llama3":
        raise ValueError(f"unsupported rope_scaling {scaling}: only llama3 is implemented")
    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = (2 * math.pi / inv_freq).astype(np.float32)
    scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq).astype(np.float32)
    smooth = ((old_len / wavelen - low) / (high - low)).astype(np.float32)
    smoothed = ((1 - smooth) * scaled / factor + smooth * scaled).astype(np.float32)
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def rotate_half(x: mx.array) -> mx.array:
    half = x.shape[-1] // 2
    return mx.concatenate([-x[..., half:], x[..., :half]], axis=-1)


class LlamaAttention(nn.Module):
    def __init__(self, config: T3Config):
        super().__init__()
        dim, hd = config.hidden_size, config.head_dim
        self.num_heads, self.num_kv_heads = config.num_heads, config.num_kv_heads
        self.scale = hd**-0.5
        self.q_proj = Linear(dim, self.num_heads * hd, bias=False)
        self.k_proj = Linear(dim, self.num_kv_heads * hd, bias=False)
        self.v_proj = Linear(dim, self.num_kv_heads * hd, bias=False)
        self.o_proj = Linear(self.num_heads * hd, dim, bias=False)

    def __call__(self, x, cos, sin, mask, cache: KVCache | None) -> mx.array:
        q = split_heads(self.q_proj(x), self.num_heads)
        k = split_heads(self.k_proj(x), self.num_kv_heads)
        v = split_heads(self.v_proj(x), self.num_kv_heads)
        q = (q * cos + rotate_half(q) * sin).astype(x.dtype)
        k = (k * cos + rotate_half(k) * sin).astype(x.dtype)
        return self.o_proj(attend(q, k, v, cache, self.scale, mask))


class LlamaMLP(nn.Module):
    def __init__(self, config: T3Config):
        super().__init__()
        dim, hidden = config.hidden_size, config.intermediate_size
        self.gate_proj = Linear(dim, hidden, bias=False)
        self.up_proj = Linear(dim, hidden, bias=False)
        self.down_proj = Linear(hidden, dim, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        return self.down_proj(silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaLayer(nn.Module):
    def __init__(self, config: T3Config):
        super().__init__()
        self.self_attn = LlamaAttention(config)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = nn.RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.post_attention_layernorm = nn.RMSNorm(config.hidden_size, eps=config.norm_eps)

    def __call__(self, x, cos, sin, mask, cache) -> mx.array:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaBackbone(nn.Module):
    """transformers' LlamaModel driven by ``inputs_embeds`` (no token embedding)."""

    def __init__(self, config: T3Config):
        super().__init__()
        self.layers = [LlamaLayer(config) for _ in range(config.num_layers)]
        self.norm = nn.RMSNorm(config.hidden_size, eps=config.norm_eps)
        self._inv_freq = mx.array(llama3_inv_freq(config))

    def rope(self, positions: mx.array) -> tuple[mx.array, mx.array]:
        """cos, sin of ``positions`` ``[T]`` -> ``[T, head_dim]``, or per row ``[B, T]`` ->
        ``[B, 1, T, head_dim]`` (broadcast over the heads)."""
        freqs = positions.astype(mx.float32)[..., None] * self._inv_freq
        emb = mx.concatenate([freqs, freqs], axis=-1)
        if emb.ndim == 3:
            emb = emb[:, None]
        return mx.cos(emb), mx.sin(emb)

    def __call__(self, x: mx.array, cache: list[KVCache | BatchKVCache] | None = None) -> mx.array:
        length = x.shape[1]
        cos, sin = self.rope(cache[0].positions(length) if cache else mx.arange(length))
        mask = cache[0].mask(length) if cache else attention_mask(length)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask, cache[i] if cache else None)
        return self.norm(x)

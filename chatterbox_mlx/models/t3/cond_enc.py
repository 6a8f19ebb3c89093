"""T3's conditioning encoder: speaker projection, perceiver resampler, emotion projection."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .cache import merge_heads, split_heads
from .config import T3Config


class LearnedPositionEmbeddings(nn.Module):
    def __init__(self, length: int, dim: int):
        super().__init__()
        self.emb = nn.Embedding(length, dim)

    def __call__(self, length: int) -> mx.array:
        """Embeddings of positions 0 .. length-1, ``[length, dim]``."""
        return self.emb(mx.arange(length))

    def fixed(self, index: int) -> mx.array:
        return self.emb(mx.array([index]))


class PerceiverAttention(nn.Module):
    """The reference's ``AttentionBlock2``: pre-LayerNorm attention with a residual."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.proj_out = nn.Linear(dim, dim)

    def __call__(self, x1: mx.array, x2: mx.array) -> mx.array:
        x1_norm, x2_norm = self.norm(x1), self.norm(x2)
        q = split_heads(self.to_q(x1_norm), self.num_heads)
        k = split_heads(self.to_k(x2_norm), self.num_heads)
        v = split_heads(self.to_v(x2_norm), self.num_heads)
        scale = q.shape[-1] ** -0.5
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale)
        return x1 + self.proj_out(merge_heads(out))


class Perceiver(nn.Module):
    """Resamples the prompt speech embeddings to a fixed number of query tokens."""

    def __init__(self, num_queries: int, dim: int, num_heads: int):
        super().__init__()
        self.pre_attention_query = mx.zeros((1, num_queries, dim))
        self.attn = PerceiverAttention(dim, num_heads)

    def __call__(self, h: mx.array) -> mx.array:
        query = mx.broadcast_to(
            self.pre_attention_query, (h.shape[0],) + self.pre_attention_query.shape[1:]
        )
        pre_att = self.attn(query, h)  # cross-attention
        return self.attn(pre_att, pre_att)  # self-attention, same weights


class T3CondEnc(nn.Module):
    def __init__(self, config: T3Config):
        super().__init__()
        dim = config.hidden_size
        self.spkr_enc = nn.Linear(config.speaker_embed_size, dim)
        if config.emotion_adv:
            self.emotion_adv_fc = nn.Linear(1, dim, bias=False)
        if config.use_perceiver:
            self.perceiver = Perceiver(config.perceiver_queries, dim, config.perceiver_heads)

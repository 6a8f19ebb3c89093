"""S3Gen's token encoder: ``UpsampleConformerEncoder`` (CosyVoice 2 / WeNet style).

Linear input layer with ESPnet relative positional encoding, a pre-lookahead
convolution, conformer-style blocks with relative-position self-attention (no
convolution module, no macaron feed-forward), 2x nearest upsampling followed by a
causal convolution, a second input layer and more blocks, then a final LayerNorm.

Sequences are unpadded ``[batch, time, channels]``: every Chatterbox pipeline runs
one utterance at a time, so the reference's padding masks are all ones and are
left out here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from .layers import Conv1d, attention, silu


@dataclass
class EncoderConfig:
    input_size: int = 512
    output_size: int = 512
    attention_heads: int = 8
    linear_units: int = 2048
    num_blocks: int = 6
    num_up_blocks: int = 4
    pre_lookahead_len: int = 3
    upsample_stride: int = 2


def pad_time(x: mx.array, left: int, right: int = 0) -> mx.array:
    return mx.pad(x, [(0, 0), (left, right), (0, 0)])


def espnet_rel_pos_emb(length: int, dim: int) -> mx.array:
    """ESPnet relative positional encoding ``[1, 2*length - 1, dim]`` for relative
    positions ``length-1, ..., 0, ..., -(length-1)`` (sin on even, cos on odd channels)."""
    positions = mx.arange(length - 1, -length, -1, dtype=mx.float32)[:, None]
    div_term = mx.exp(mx.arange(0, dim, 2, dtype=mx.float32) * -(math.log(10000.0) / dim))
    angles = positions * div_term
    pe = mx.stack([mx.sin(angles), mx.cos(angles)], axis=-1).reshape(2 * length - 1, dim)
    return pe[None]


class LinearInput(nn.Module):
    """``LinearNoSubsampling``: Linear + LayerNorm, then scaled by sqrt(dim) (rel-pos
    encoding adds nothing to the input; it only returns the position table)."""

    def __init__(self, input_size: int, output_size: int):
        super().__init__()
        self.linear = nn.Linear(input_size, output_size)
        self.norm = nn.LayerNorm(output_size, eps=1e-5)
        self.xscale = math.sqrt(output_size)

    def __call__(self, x: mx.array) -> tuple[mx.array, mx.array]:
        x = self.norm(self.linear(x)) * self.xscale
        return x, espnet_rel_pos_emb(x.shape[1], x.shape[2])


def rel_shift(scores: mx.array) -> mx.array:
    """``[B, H, T, 2T-1]`` scores per relative-position index -> ``[B, H, T, T]``, where
    output ``[i, j]`` takes index ``T-1-i+j`` (relative position ``i-j``): the reference's
    pad-and-reshape shift, as one strided view (flat offset ``T-1 + i (2T-2) + j``)."""
    b, h, length, width = scores.shape
    scores = mx.contiguous(scores)
    row = length * width
    return mx.as_strided(
        scores, (b, h, length, length), (h * row, row, width - 1, 1), offset=length - 1
    )


class RelPositionAttention(nn.Module):
    """Multi-head self-attention with Transformer-XL relative positions (ESPnet)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.linear_q = nn.Linear(dim, dim)
        self.linear_k = nn.Linear(dim, dim)
        self.linear_v = nn.Linear(dim, dim)
        self.linear_out = nn.Linear(dim, dim)
        self.linear_pos = nn.Linear(dim, dim, bias=False)
        self.pos_bias_u = mx.zeros((heads, self.head_dim))
        self.pos_bias_v = mx.zeros((heads, self.head_dim))

    def _split(self, x: mx.array) -> mx.array:
        b, t, _ = x.shape
        return x.reshape(b, t, self.heads, self.head_dim)

    def __call__(self, x: mx.array, pos_emb: mx.array) -> mx.array:
        b, t, _ = x.shape
        q = self._split(self.linear_q(x))
        k = self._split(self.linear_k(x)).transpose(0, 2, 1, 3)
        v = self._split(self.linear_v(x)).transpose(0, 2, 1, 3)
        p = self._split(self.linear_pos(pos_emb)).transpose(0, 2, 3, 1)  # [1, H, D, 2T-1]
        q_u = (q + self.pos_bias_u).transpose(0, 2, 1, 3)
        q_v = (q + self.pos_bias_v).transpose(0, 2, 1, 3)
        scale = 1.0 / math.sqrt(self.head_dim)
        # content-position term (matrix b+d), added to the content term as a score bias
        pos_scores = rel_shift(q_v @ p) * scale
        out = attention(q_u, k, v, scale, bias=pos_scores)
        return self.linear_out(out.transpose(0, 2, 1, 3).reshape(b, t, -1))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w_1 = nn.Linear(dim, hidden)
        self.w_2 = nn.Linear(hidden, dim)

    def __call__(self, x: mx.array) -> mx.array:
        return self.w_2(silu(self.w_1(x)))


class ConformerLayer(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + ff(norm(x))."""

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.self_attn = RelPositionAttention(dim, heads)
        self.feed_forward = FeedForward(dim, hidden)
        self.norm_mha = nn.LayerNorm(dim, eps=1e-12)
        self.norm_ff = nn.LayerNorm(dim, eps=1e-12)

    def __call__(self, x: mx.array, pos_emb: mx.array) -> mx.array:
        x = x + self.self_attn(self.norm_mha(x), pos_emb)
        return x + self.feed_forward(self.norm_ff(x))


class PreLookaheadLayer(nn.Module):
    """Looks ``pre_lookahead_len`` frames ahead, then a causal kernel-3 conv; residual."""

    def __init__(self, channels: int, pre_lookahead_len: int):
        super().__init__()
        self.pre_lookahead_len = pre_lookahead_len
        self.conv1 = Conv1d(channels, channels, pre_lookahead_len + 1)
        self.conv2 = Conv1d(channels, channels, 3)

    def __call__(self, x: mx.array) -> mx.array:
        h = nn.leaky_relu(self.conv1(pad_time(x, 0, self.pre_lookahead_len)), 0.01)
        return x + self.conv2(pad_time(h, 2))


class Upsample(nn.Module):
    """Nearest-neighbour upsampling by ``stride``, then a causal conv of kernel 2*stride+1."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = Conv1d(channels, channels, 2 * stride + 1)

    def __call__(self, x: mx.array) -> mx.array:
        x = mx.repeat(x, self.stride, axis=1)
        return self.conv(pad_time(x, 2 * self.stride))


class UpsampleConformerEncoder(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        dim, heads, hidden = config.output_size, config.attention_heads, config.linear_units
        self.embed = LinearInput(config.input_size, dim)
        self.pre_lookahead_layer = PreLookaheadLayer(dim, config.pre_lookahead_len)
        self.encoders = [ConformerLayer(dim, heads, hidden) for _ in range(config.num_blocks)]
        self.up_layer = Upsample(dim, config.upsample_stride)
        self.up_embed = LinearInput(config.input_size, dim)
        self.up_encoders = [ConformerLayer(dim, heads, hidden) for _ in range(config.num_up_blocks)]
        self.after_norm = nn.LayerNorm(dim, eps=1e-5)

    def __call__(self, x: mx.array) -> mx.array:
        """Token embeddings ``[B, T, input_size]`` -> ``[B, stride * T, output_size]``."""
        x, pos_emb = self.embed(x)
        x = self.pre_lookahead_layer(x)
        for layer in self.encoders:
            x = layer(x, pos_emb)
        x, pos_emb = self.up_embed(self.up_layer(x))
        for layer in self.up_encoders:
            x = layer(x, pos_emb)
        return self.after_norm(x)


def sanitize_encoder_key(key: str) -> str:
    """Reference encoder key (below ``encoder.``) -> this module's parameter name."""
    return key.replace("embed.out.0.", "embed.linear.").replace("embed.out.1.", "embed.norm.")

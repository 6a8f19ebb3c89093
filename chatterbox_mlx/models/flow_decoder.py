"""S3Gen's CFM estimator: the causal 1-D U-Net ``ConditionalDecoder`` (Matcha-TTS style).

Input ``x`` (noisy mel), ``mu`` (encoder mel), speaker embedding and prompt mel are
stacked on channels; ResNet blocks with a time-embedding MLP alternate with
diffusers-style transformer blocks (LayerNorm, self-attention, exact-erf GELU
feed-forward). The real model has a single level (``channels=(256,)``): one down
block, 12 mid blocks, one up block, all at full time resolution. Sequences are
unpadded ``[batch, time, channels]``, so the reference's masks are all ones and
are left out.

The estimator runs 20 times per English utterance; its attention, Mish, GELU and
convolutions come from ``chatterbox_mlx.models.layers``, which picks the faster CPU formulation
on the CPU backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from .flow_encoder import pad_time
from .layers import Conv1d, attention, gelu, mish, silu


@dataclass
class DecoderConfig:
    in_channels: int = 320
    out_channels: int = 80
    channels: tuple[int, ...] = (256,)
    attention_head_dim: int = 64
    n_blocks: int = 4
    num_mid_blocks: int = 12
    num_heads: int = 8
    meanflow: bool = False

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.channels[0]


def sinusoidal_embedding(t: mx.array, dim: int, scale: float = 1000.0) -> mx.array:
    """``SinusoidalPosEmb``: ``[B]`` times -> ``[B, dim]`` (sin half, then cos half)."""
    half = dim // 2
    freqs = mx.exp(mx.arange(half, dtype=mx.float32) * -(math.log(10000.0) / (half - 1)))
    angles = scale * t[:, None] * freqs[None]
    return mx.concatenate([mx.sin(angles), mx.cos(angles)], axis=-1)


class CausalConv1d(Conv1d):
    """Convolution padded with ``kernel - 1`` zeros on the left only."""

    def __call__(self, x: mx.array) -> mx.array:
        return super().__call__(pad_time(x, self.weight.shape[1] - 1))


class Downsample(nn.Module):
    """``Conv1d(dim, dim, 3, stride=2, padding=1)`` (only in multi-level configs)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = Conv1d(dim, dim, 3)

    def __call__(self, x: mx.array) -> mx.array:
        return self.conv(pad_time(x, 1, 1))[:, ::2]


class Upsample(nn.Module):
    """``ConvTranspose1d(dim, dim, 4, stride=2, padding=1)`` (only in multi-level configs)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(dim, dim, 4, stride=2, padding=1)

    def __call__(self, x: mx.array) -> mx.array:
        return self.conv(x)


class CausalBlock(nn.Module):
    """Causal conv (kernel 3) -> LayerNorm over channels -> Mish."""

    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        self.conv = CausalConv1d(dim, dim_out, 3)
        self.norm = nn.LayerNorm(dim_out)

    def __call__(self, x: mx.array) -> mx.array:
        return mish(self.norm(self.conv(x)))


class CausalResnetBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int, time_emb_dim: int):
        super().__init__()
        self.mlp = nn.Linear(time_emb_dim, dim_out)
        self.block1 = CausalBlock(dim, dim_out)
        self.block2 = CausalBlock(dim_out, dim_out)
        self.res_conv = nn.Linear(dim, dim_out)  # 1x1 convolution

    def __call__(self, x: mx.array, t_emb: mx.array) -> mx.array:
        h = self.block1(x) + self.mlp(mish(t_emb))[:, None]
        return self.block2(h) + self.res_conv(x)


class Attention(nn.Module):
    """diffusers ``Attention`` as used here: no q/k/v bias, output projection with bias."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads = heads
        self.head_dim = head_dim
        inner = heads * head_dim
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def __call__(self, x: mx.array) -> mx.array:
        b, t, _ = x.shape

        def heads(y):
            return y.reshape(b, t, self.heads, self.head_dim).transpose(0, 2, 1, 3)

        q, k, v = heads(self.to_q(x)), heads(self.to_k(x)), heads(self.to_v(x))
        out = attention(q, k, v, self.head_dim**-0.5)
        return self.to_out(out.transpose(0, 2, 1, 3).reshape(b, t, -1))


class FeedForward(nn.Module):
    """Linear -> exact (erf) GELU -> Linear, hidden width 4 x dim."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, 4 * dim)
        self.out = nn.Linear(4 * dim, dim)

    def __call__(self, x: mx.array) -> mx.array:
        return self.out(gelu(self.proj(x)))


class TransformerBlock(nn.Module):
    """diffusers ``BasicTransformerBlock`` (self-attention only, layer_norm)."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, head_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def __call__(self, x: mx.array) -> mx.array:
        x = x + self.attn1(self.norm1(x))
        return x + self.ff(self.norm3(x))


class UNetLevel(nn.Module):
    """One down/mid/up entry: ResNet block, transformer blocks, optional resampling."""

    def __init__(self, config: DecoderConfig, dim: int, dim_out: int, resample=None):
        super().__init__()
        self.resnet = CausalResnetBlock(dim, dim_out, config.time_embed_dim)
        self.transformer_blocks = [
            TransformerBlock(dim_out, config.num_heads, config.attention_head_dim)
            for _ in range(config.n_blocks)
        ]
        if resample is not None:
            self.resample = resample

    def __call__(self, x: mx.array, t_emb: mx.array) -> mx.array:
        x = self.resnet(x, t_emb)
        for block in self.transformer_blocks:
            x = block(x)
        return x


class TimestepEmbedding(nn.Module):
    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def __call__(self, x: mx.array) -> mx.array:
        return self.linear_2(silu(self.linear_1(x)))


class ConditionalDecoder(nn.Module):
    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.config = config
        channels = tuple(config.channels)
        self.time_mlp = TimestepEmbedding(config.in_channels, config.time_embed_dim)
        if config.meanflow:
            self.time_embed_mixer = nn.Linear(
                2 * config.time_embed_dim, config.time_embed_dim, bias=False
            )

        self.down_blocks = []
        dim_out = config.in_channels
        for i, width in enumerate(channels):
            dim, dim_out = dim_out, width
            last = i == len(channels) - 1
            resample = CausalConv1d(width, width, 3) if last else Downsample(width)
            self.down_blocks.append(UNetLevel(config, dim, dim_out, resample))
        self.mid_blocks = [
            UNetLevel(config, channels[-1], channels[-1]) for _ in range(config.num_mid_blocks)
        ]
        up_channels = channels[::-1] + (channels[0],)
        self.up_blocks = []
        for i in range(len(up_channels) - 1):
            width = up_channels[i + 1]
            last = i == len(up_channels) - 2
            resample = CausalConv1d(width, width, 3) if last else Upsample(width)
            self.up_blocks.append(UNetLevel(config, 2 * up_channels[i], width, resample))
        self.final_block = CausalBlock(up_channels[-1], up_channels[-1])
        self.final_proj = nn.Linear(up_channels[-1], config.out_channels)  # 1x1 convolution

    def time_embedding(self, t: mx.array, r: mx.array | None = None) -> mx.array:
        """``[B]`` flow times (and meanflow end times ``r``) -> ``[B, time_embed_dim]``."""
        emb = self.time_mlp(sinusoidal_embedding(t, self.config.in_channels))
        if self.config.meanflow:
            if r is None:
                raise ValueError("a meanflow estimator needs the end time r")
            emb_r = self.time_mlp(sinusoidal_embedding(r, self.config.in_channels))
            emb = self.time_embed_mixer(mx.concatenate([emb, emb_r], axis=-1))
        return emb

    def __call__(
        self,
        x: mx.array,
        mu: mx.array,
        t: mx.array,
        spks: mx.array,
        cond: mx.array,
        r: mx.array | None = None,
    ) -> mx.array:
        """Velocity ``[B, T, out]`` for ``x``, ``mu``, ``cond`` ``[B, T, 80]``, ``spks``
        ``[B, 80]``, times ``t`` (and ``r`` for meanflow) ``[B]``."""
        t_emb = self.time_embedding(t, r)
        spks = mx.broadcast_to(spks[:, None], (x.shape[0], x.shape[1], spks.shape[-1]))
        h = mx.concatenate([x, mu, spks, cond], axis=-1)

        skips = []
        for level in self.down_blocks:
            h = level(h, t_emb)
            skips.append(h)
            h = level.resample(h)
        for level in self.mid_blocks:
            h = level(h, t_emb)
        for level in self.up_blocks:
            skip = skips.pop()
            h = mx.concatenate([h[:, : skip.shape[1]], skip], axis=-1)
            h = level.resample(level(h, t_emb))
        return self.final_proj(self.final_block(h))


def sanitize_decoder_key(key: str) -> str:
    """Reference estimator key (below ``estimator.``) -> this module's parameter name."""
    parts = key.split(".")
    if parts[0] in ("down_blocks", "mid_blocks", "up_blocks"):
        # tuple index inside a level: 0 = resnet, 1 = transformer blocks, 2 = resampler
        slot = {"0": "resnet", "1": "transformer_blocks", "2": "resample"}[parts[2]]
        parts = parts[:2] + [slot] + parts[3:]
    key = ".".join(parts)
    for old, new in (
        (".block.0.", ".conv."),
        (".block.2.", ".norm."),
        (".mlp.1.", ".mlp."),
        (".to_out.0.", ".to_out."),
        (".ff.net.0.proj.", ".ff.proj."),
        (".ff.net.2.", ".ff.out."),
    ):
        key = key.replace(old, new)
    return key

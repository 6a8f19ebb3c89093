"""CAMPPlus speaker encoder: 16 kHz audio -> 192-d x-vector (S3Gen's speaker embedding).

Port of ``chatterbox/models/s3gen/xvector.py`` (3D-Speaker's CAM++), inference only:
an FCM head of 2-D residual convs over (frequency, time), a strided TDNN, three densely
connected blocks of context-aware-masked TDNN layers with transit layers between them,
statistics pooling and a dense layer. BatchNorm always uses the stored running statistics.

Layout is channels-last: features ``[B, T, F]``, hidden sequences ``[B, T, C]``, and the
FCM's 2-D maps ``[B, T, F, C]`` (time outermost; torch has ``[B, C, F, T]``). The
convolutions are ``chatterbox_mlx.models.layers``' (gathers + matmuls on the CPU, where MLX's own
kernels are slow for dilated and 2-D convolutions).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..constants import S3_SR
from . import layers
from .config_utils import from_dict
from .layers import Conv1d
from .weights import conv1d_weight, conv2d_weight


@dataclass
class CAMPPlusConfig:
    feat_dim: int = 80  # fbank bins
    embedding_size: int = 192
    growth_rate: int = 32
    bn_size: int = 4  # bottleneck width = bn_size * growth_rate
    init_channels: int = 128
    head_channels: int = 32  # FCM width (fixed in the reference)
    head_blocks: tuple[int, int] = (2, 2)
    block_layers: tuple[int, ...] = (12, 24, 16)
    block_kernels: tuple[int, ...] = (3, 3, 3)
    block_dilations: tuple[int, ...] = (1, 2, 2)
    segment_length: int = 100  # CAM segment pooling, in frames after the TDNN
    bn_eps: float = 1e-5
    sample_rate: int = S3_SR

    @classmethod
    def from_dict(cls, params: dict) -> CAMPPlusConfig:
        params = dict(params)
        for key in ("head_blocks", "block_layers", "block_kernels", "block_dilations"):
            if key in params:
                params[key] = tuple(params[key])
        return from_dict(cls, params)


class BatchNorm(nn.Module):
    """Inference BatchNorm over the last axis: (x - running_mean) / sqrt(running_var + eps)."""

    def __init__(self, dims: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        self.eps = eps
        if affine:
            self.weight = mx.ones((dims,))
            self.bias = mx.zeros((dims,))
        self.running_mean = mx.zeros((dims,))
        self.running_var = mx.ones((dims,))

    def __call__(self, x: mx.array) -> mx.array:
        # Folded into one scale and shift per channel: two passes over x instead of four.
        scale = mx.rsqrt(self.running_var + self.eps)
        if "weight" in self:
            scale = scale * self.weight
            return x * scale + (self.bias - self.running_mean * scale)
        return x * scale - self.running_mean * scale


class BatchNormReLU(nn.Module):
    """The reference's ``get_nonlinear("batchnorm-relu")`` (key ``<name>.batchnorm.*``)."""

    def __init__(self, dims: int, eps: float):
        super().__init__()
        self.batchnorm = BatchNorm(dims, eps)

    def __call__(self, x: mx.array) -> mx.array:
        return nn.relu(self.batchnorm(x))


class Conv2d(nn.Module):
    """2-D convolution on ``[B, T, F, C]``, weight ``[out, k_time, k_freq, in]``, "same"
    padding; ``stride`` applies to frequency only (the reference's stride (2, 1) over (F, T)).

    On the CPU (``layers.conv2d``) the frequency taps are gathered once and each time tap is
    a contiguous slice along the outer time axis: k matmuls, no 9x im2col."""

    def __init__(self, in_dims, out_dims, kernel_size, stride=1):
        super().__init__()
        self.stride = stride
        self.weight = mx.zeros((out_dims, kernel_size, kernel_size, in_dims))

    def __call__(self, x: mx.array) -> mx.array:
        pad = self.weight.shape[1] // 2
        return layers.conv2d(x, self.weight, (1, self.stride), (pad, pad))


class BasicResBlock(nn.Module):
    def __init__(self, in_dims: int, dims: int, stride: int, eps: float):
        super().__init__()
        self.conv1 = Conv2d(in_dims, dims, 3, stride=stride)
        self.bn1 = BatchNorm(dims, eps)
        self.conv2 = Conv2d(dims, dims, 3)
        self.bn2 = BatchNorm(dims, eps)
        if stride != 1 or in_dims != dims:
            self.shortcut = [Conv2d(in_dims, dims, 1, stride=stride), BatchNorm(dims, eps)]
        else:
            self.shortcut = []

    def __call__(self, x: mx.array) -> mx.array:
        out = nn.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        for layer in self.shortcut:
            x = layer(x)
        return nn.relu(out + x)


class FCM(nn.Module):
    """Residual 2-D conv front end; frequency is strided by 8, time is kept."""

    def __init__(self, config: CAMPPlusConfig):
        super().__init__()
        dims, eps = config.head_channels, config.bn_eps
        self.conv1 = Conv2d(1, dims, 3)
        self.bn1 = BatchNorm(dims, eps)
        # The reference builds both stages with num_blocks[0].
        n = config.head_blocks[0]
        self.layer1 = [BasicResBlock(dims, dims, 2 if i == 0 else 1, eps) for i in range(n)]
        self.layer2 = [BasicResBlock(dims, dims, 2 if i == 0 else 1, eps) for i in range(n)]
        self.conv2 = Conv2d(dims, dims, 3, stride=2)
        self.bn2 = BatchNorm(dims, eps)

    def __call__(self, features: mx.array) -> mx.array:
        x = nn.relu(self.bn1(self.conv1(features[..., None])))  # [B, T, F, C]
        for block in self.layer1 + self.layer2:
            x = block(x)
        x = nn.relu(self.bn2(self.conv2(x)))  # [B, T, F/8, C]
        batch, time, freqs, dims = x.shape
        # torch flattens (channel, frequency) channel-major into C * F/8 features.
        return x.transpose(0, 1, 3, 2).reshape(batch, time, dims * freqs)


class TDNNLayer(nn.Module):
    def __init__(self, in_dims, out_dims, kernel_size, stride, eps):
        super().__init__()
        padding = (kernel_size - 1) // 2
        self.linear = Conv1d(in_dims, out_dims, kernel_size, stride, padding, bias=False)
        self.nonlinear = BatchNormReLU(out_dims, eps)

    def __call__(self, x: mx.array) -> mx.array:
        return self.nonlinear(self.linear(x))


def segment_means(x: mx.array, segment_length: int) -> mx.array:
    """Mean of each ``segment_length``-frame segment, the last one possibly shorter
    (``avg_pool1d(kernel=stride=segment_length, ceil_mode=True)``): ``[B, T, C] -> [B, S, C]``."""
    batch, time, dims = x.shape
    segments = math.ceil(time / segment_length)
    padded = mx.pad(x, [(0, 0), (0, segments * segment_length - time), (0, 0)])
    sums = padded.reshape(batch, segments, segment_length, dims).sum(axis=2)
    counts = [min(segment_length, time - segment_length * i) for i in range(segments)]
    return sums / mx.array(counts, dtype=mx.float32)[:, None]


def expand_segments(x: mx.array, segment_length: int, time: int) -> mx.array:
    """Each segment's row repeated ``segment_length`` times, cut to ``time`` frames."""
    batch, segments, dims = x.shape
    repeated = mx.broadcast_to(x[:, :, None], (batch, segments, segment_length, dims))
    return repeated.reshape(batch, segments * segment_length, dims)[:, :time]


class CAMLayer(nn.Module):
    """Context-aware masking: a local conv gated by utterance- and segment-level context."""

    def __init__(self, bn_dims, out_dims, kernel_size, dilation, segment_length, reduction=2):
        super().__init__()
        padding = (kernel_size - 1) // 2 * dilation
        self.segment_length = segment_length
        self.linear_local = Conv1d(bn_dims, out_dims, kernel_size, 1, padding, dilation, bias=False)
        self.linear1 = Conv1d(bn_dims, bn_dims // reduction, 1)
        self.linear2 = Conv1d(bn_dims // reduction, out_dims, 1)

    def __call__(self, x: mx.array) -> mx.array:
        y = self.linear_local(x)
        # The context is constant within a segment, so the gate is computed once per segment.
        context = x.mean(axis=1, keepdims=True) + segment_means(x, self.segment_length)
        mask = mx.sigmoid(self.linear2(nn.relu(self.linear1(context))))
        return y * expand_segments(mask, self.segment_length, x.shape[1])


class CAMDenseTDNNLayer(nn.Module):
    def __init__(self, in_dims, config: CAMPPlusConfig, kernel_size, dilation):
        super().__init__()
        bn_dims, eps = config.bn_size * config.growth_rate, config.bn_eps
        self.nonlinear1 = BatchNormReLU(in_dims, eps)
        self.linear1 = Conv1d(in_dims, bn_dims, 1, bias=False)
        self.nonlinear2 = BatchNormReLU(bn_dims, eps)
        self.cam_layer = CAMLayer(
            bn_dims, config.growth_rate, kernel_size, dilation, config.segment_length
        )

    def __call__(self, x: mx.array) -> mx.array:
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class CAMDenseTDNNBlock(nn.Module):
    """Dense connectivity: each layer's output is appended to the running feature map."""

    def __init__(self, num_layers, in_dims, config: CAMPPlusConfig, kernel_size, dilation):
        super().__init__()
        self.layers = [
            CAMDenseTDNNLayer(in_dims + i * config.growth_rate, config, kernel_size, dilation)
            for i in range(num_layers)
        ]

    def __call__(self, x: mx.array) -> mx.array:
        for layer in self.layers:
            x = mx.concatenate([x, layer(x)], axis=-1)
        return x


class TransitLayer(nn.Module):
    def __init__(self, in_dims: int, out_dims: int, eps: float):
        super().__init__()
        self.nonlinear = BatchNormReLU(in_dims, eps)
        self.linear = Conv1d(in_dims, out_dims, 1, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        return self.linear(self.nonlinear(x))


class DenseLayer(nn.Module):
    """1x1 conv on the pooled statistics, then BatchNorm without affine (``batchnorm_``)."""

    def __init__(self, in_dims: int, out_dims: int, eps: float):
        super().__init__()
        self.linear = Conv1d(in_dims, out_dims, 1, bias=False)
        self.nonlinear = {"batchnorm": BatchNorm(out_dims, eps, affine=False)}

    def __call__(self, x: mx.array) -> mx.array:
        """``[B, C]`` (one step, as the reference's ``[B, C, 1]``) -> ``[B, out]``."""
        return self.nonlinear["batchnorm"](self.linear(x[:, None])[:, 0])


def statistics_pooling(x: mx.array) -> mx.array:
    """Mean and unbiased standard deviation over time: ``[B, T, C] -> [B, 2C]``."""
    mean = x.mean(axis=1, keepdims=True)
    var = mx.square(x - mean).sum(axis=1) / (x.shape[1] - 1)  # two-pass, as torch.std
    return mx.concatenate([mean[:, 0], mx.sqrt(var)], axis=-1)


class XVector(nn.Module):
    def __init__(self, config: CAMPPlusConfig, in_dims: int):
        super().__init__()
        eps = config.bn_eps
        self.tdnn = TDNNLayer(in_dims, config.init_channels, 5, 2, eps)
        dims = config.init_channels
        self.blocks, self.transits = [], []
        for num_layers, kernel, dilation in zip(
            config.block_layers, config.block_kernels, config.block_dilations, strict=True
        ):
            self.blocks.append(CAMDenseTDNNBlock(num_layers, dims, config, kernel, dilation))
            dims += num_layers * config.growth_rate
            self.transits.append(TransitLayer(dims, dims // 2, eps))
            dims //= 2
        self.out_nonlinear = BatchNormReLU(dims, eps)
        self.dense = DenseLayer(2 * dims, config.embedding_size, eps)

    def __call__(self, x: mx.array) -> mx.array:
        x = self.tdnn(x)
        for block, transit in zip(self.blocks, self.transits, strict=True):
            x = transit(block(x))
        x = statistics_pooling(self.out_nonlinear(x))
        return self.dense(x)


# Fewest feature frames giving 2 frames after the stride-2 TDNN: the statistics pooling's
# unbiased standard deviation is undefined (NaN in the reference) for a single frame.
MIN_FRAMES = 3


class CAMPPlus(nn.Module):
    def __init__(self, config: CAMPPlusConfig | None = None):
        super().__init__()
        self.config = config = config or CAMPPlusConfig()
        if config.feat_dim % 8:
            raise ValueError(f"CAMPPlus: feat_dim must be a multiple of 8, got {config.feat_dim}")
        self.head = FCM(config)
        self.xvector = XVector(config, config.head_channels * (config.feat_dim // 8))

    def __call__(self, features: mx.array) -> mx.array:
        """Mean-normalised fbank features ``[B, T, feat_dim]`` -> x-vectors ``[B, embedding]``."""
        if features.ndim != 3 or features.shape[-1] != self.config.feat_dim:
            raise ValueError(
                f"CAMPPlus expects features [batch, frames, {self.config.feat_dim}], got "
                f"{tuple(features.shape)}; use inference(wav) to start from 16 kHz audio"
            )
        if features.shape[1] < MIN_FRAMES:
            raise ValueError(
                f"CAMPPlus needs at least {MIN_FRAMES} feature frames, got "
                f"{features.shape[1]}; give a longer clip"
            )
        return self.xvector(self.head(features.astype(mx.float32)))

    def features(self, wav: mx.array) -> mx.array:
        """Kaldi fbank of one 16 kHz clip ``[T]`` minus its mean over frames: ``[frames, F]``."""
        from ..audio import kaldi_fbank

        feats = kaldi_fbank(wav, num_mel_bins=self.config.feat_dim)
        return feats - feats.mean(axis=0, keepdims=True)

    def inference(self, wavs) -> mx.array:
        """16 kHz audio -> x-vectors ``[B, embedding]``, as the reference's ``inference``.

        ``wavs``: one clip ``[T]``, a batch ``[B, T]`` or a list of 1-D clips. As in the
        reference, clips of different lengths are zero-padded at the feature level (which
        changes their statistics); pass one clip per call to avoid that."""
        clips = _as_clips(wavs, self.min_samples)
        feats = [self.features(clip) for clip in clips]
        frames = max(f.shape[0] for f in feats)
        batch = mx.stack([mx.pad(f, [(0, frames - f.shape[0]), (0, 0)]) for f in feats])
        return self(batch)

    @property
    def min_samples(self) -> int:
        # Kaldi framing at 16 kHz: 25 ms windows every 10 ms, only whole windows.
        window, shift = self.config.sample_rate // 40, self.config.sample_rate // 100
        return window + (MIN_FRAMES - 1) * shift


def _float_audio(wav) -> mx.array:
    array = np.asarray(wav)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"CAMPPlus.inference expects float audio in [-1, 1], got {array.dtype}; "
            "convert integer PCM first (e.g. int16 / 32768)"
        )
    return mx.array(array.astype(np.float32))


def _as_clips(wavs, min_samples: int) -> list[mx.array]:
    if isinstance(wavs, (list, tuple)):
        clips = [_float_audio(w) for w in wavs]
    else:
        wavs = _float_audio(wavs)
        clips = [wavs] if wavs.ndim == 1 else list(wavs) if wavs.ndim == 2 else None
        if clips is None:
            raise ValueError(
                f"CAMPPlus.inference expects audio [samples] or [batch, samples], got shape "
                f"{tuple(wavs.shape)}; mix multichannel audio down to mono first"
            )
    if not clips:
        raise ValueError("CAMPPlus.inference got no audio clips")
    for i, clip in enumerate(clips):
        if clip.ndim != 1:
            raise ValueError(f"clip {i}: expected 1-D audio, got shape {tuple(clip.shape)}")
        if clip.shape[0] < min_samples:
            raise ValueError(
                f"clip {i}: {clip.shape[0]} samples is too short for the speaker encoder "
                f"(needs at least {min_samples} at 16 kHz); give a longer clip"
            )
        if not mx.all(mx.isfinite(clip)).item():
            raise ValueError(f"clip {i}: audio contains NaN or infinite samples")
    return clips


_RENAMES = [
    (re.compile(r"\.tdnnd(\d+)\."), lambda m: f".layers.{int(m.group(1)) - 1}."),
    (re.compile(r"^xvector\.block(\d+)\."), lambda m: f"xvector.blocks.{int(m.group(1)) - 1}."),
    (re.compile(r"^xvector\.transit(\d+)\."), lambda m: f"xvector.transits.{int(m.group(1)) - 1}."),
]


def sanitize(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """``speaker_encoder.*`` tensors of ``s3gen*.safetensors`` (prefix stripped) -> CAMPPlus.

    Drops BatchNorm's ``num_batches_tracked``; conv weights become channels-last;
    ``blockN`` / ``transitN`` / ``tdnndN`` become list entries."""
    out = {}
    for key, value in weights.items():
        if key.endswith("num_batches_tracked"):
            continue
        for pattern, repl in _RENAMES:
            key = pattern.sub(repl, key)
        if key.endswith(".weight") and value.ndim == 3:
            value = conv1d_weight(value)
        elif key.endswith(".weight") and value.ndim == 4:
            # torch [out, in, k_freq, k_time] -> [out, k_time, k_freq, in] (maps are [B, T, F, C])
            value = conv2d_weight(value).transpose(0, 2, 1, 3)
        out[key] = value
    return out

"""S3Tokenizer V2 (25 tokens/s): 16 kHz speech -> discrete speech token ids.

Spec: the ``s3tokenizer`` package's ``model_v2.py`` (``S3TokenizerV2``) wrapped by
Chatterbox's ``models/s3tokenizer/s3tokenizer.py`` (``S3Tokenizer.forward``).
A Whisper-style 128-bin log-mel (100 frames/s) goes through two stride-2 convolutions,
transformer blocks whose attention adds rotary position embeddings and an FSMN memory
(a depthwise convolution over the values), and an FSQ quantizer: 8 dims, 3 levels each,
read as a base-3 number in [0, 6561).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..constants import S3_SR, TOKENS_PER_SECOND
from .config_utils import from_dict
from .layers import GELU, Conv1d, attention, fsmn_memory, gelu
from .weights import conv1d_weight

S3_HOP = 160  # mel frames: 100 per second

# Long inputs are cut into 30 s windows with 4 s overlap (``_quantize_mixed_batch``).
MAX_FRAMES = 3000
WINDOW_FRAMES = 3000
OVERLAP_SECONDS = 4
STRIDE_FRAMES = WINDOW_FRAMES - OVERLAP_SECONDS * S3_SR // S3_HOP


@dataclass
class S3TokenizerConfig:
    n_mels: int = 128
    n_audio_state: int = 1280
    n_audio_head: int = 20
    n_audio_layer: int = 6
    fsmn_kernel_size: int = 31
    rope_dim: int = 64  # the reference's rotary table is fixed at 64 dims x 2048 positions
    rope_max_positions: int = 2048
    fsq_levels: int = 3
    fsq_dims: int = 8

    @classmethod
    def from_dict(cls, params: dict) -> S3TokenizerConfig:
        """This config's fields, refused by name when unknown or mistyped. The ``s3tokenizer``
        package's ``ModelConfig`` is accepted too: its ``n_audio_ctx`` and ``use_sdpa`` do not
        change the model and are dropped, its ``n_codebook_size`` must equal the FSQ's."""
        params = dict(params)
        params.pop("n_audio_ctx", None)
        params.pop("use_sdpa", None)
        codebook = params.pop("n_codebook_size", None)
        config = from_dict(cls, params)
        if codebook is not None and codebook != config.fsq_levels**config.fsq_dims:
            raise ValueError(
                f"S3TokenizerConfig: n_codebook_size {codebook} is not fsq_levels ** fsq_dims "
                f"({config.fsq_levels}**{config.fsq_dims})"
            )
        return config

    @property
    def head_dim(self) -> int:
        return self.n_audio_state // self.n_audio_head

    def __post_init__(self):
        if self.n_audio_state % self.n_audio_head:
            raise ValueError(
                f"S3TokenizerConfig: n_audio_state {self.n_audio_state} is not divisible by "
                f"n_audio_head {self.n_audio_head}"
            )
        if self.head_dim != self.rope_dim:
            raise ValueError(
                f"S3TokenizerConfig: head dim {self.head_dim} must equal rope_dim "
                f"{self.rope_dim} (the reference applies a fixed 64-dim rotary table)"
            )


def rotary_tables(dim: int, positions: int, theta: float = 10000.0):
    """cos/sin ``[positions, dim]`` as ``precompute_freqs_cis`` builds them: float32
    angles, the half-dim frequency table repeated twice (rotate-half convention)."""
    exponents = np.arange(0, dim, 2, dtype=np.float32)[: dim // 2] / np.float32(dim)
    freqs = (1.0 / np.power(np.float32(theta), exponents)).astype(np.float32)
    angles = np.outer(np.arange(positions, dtype=np.float32), freqs).astype(np.float32)
    angles = np.concatenate([angles, angles], axis=-1).astype(np.float64)
    return mx.array(np.cos(angles).astype(np.float32)), mx.array(np.sin(angles).astype(np.float32))


def apply_rotary(x: mx.array, cos: mx.array, sin: mx.array) -> mx.array:
    """x ``[B, T, H, D]``; cos/sin ``[T, D]``."""
    half = x.shape[-1] // 2
    rotated = mx.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[:, None, :] + rotated * sin[:, None, :]


def non_pad_mask(lengths: mx.array, max_len: int) -> mx.array:
    """``[B, max_len]`` float mask, 1 on the first ``lengths[b]`` steps."""
    return (mx.arange(max_len)[None, :] < lengths[:, None]).astype(mx.float32)


def conv_out_len(lengths, stride: int = 2):
    """Output length of the kernel-3, padding-1 convolutions."""
    return (lengths + 2 - 2 - 1) // stride + 1


class FSMNMultiHeadAttention(nn.Module):
    def __init__(self, dims: int, n_head: int, kernel_size: int):
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(dims, dims)
        self.key = nn.Linear(dims, dims, bias=False)
        self.value = nn.Linear(dims, dims)
        self.out = nn.Linear(dims, dims)
        self.fsmn_block = nn.Conv1d(dims, dims, kernel_size, groups=dims, bias=False)
        self.left_padding = (kernel_size - 1) // 2
        self.right_padding = kernel_size - 1 - self.left_padding

    def fsmn_memory(self, v: mx.array, mask: mx.array) -> mx.array:
        """Depthwise conv over time of the (masked) values, plus the values, masked."""
        weight = self.fsmn_block.weight[:, :, 0]  # [C, K]
        return fsmn_memory(v * mask, weight, self.left_padding, self.right_padding) * mask

    def __call__(self, x, bias, mask, cos, sin):
        batch, length, dims = x.shape
        head_dim = dims // self.n_head
        q = self.query(x).reshape(batch, length, self.n_head, head_dim)
        k = self.key(x).reshape(batch, length, self.n_head, head_dim)
        v = self.value(x)
        q = apply_rotary(q, cos, sin).transpose(0, 2, 1, 3)
        k = apply_rotary(k, cos, sin).transpose(0, 2, 1, 3)
        memory = self.fsmn_memory(v, mask)
        v = v.reshape(batch, length, self.n_head, head_dim).transpose(0, 2, 1, 3)
        attended = attention(q, k, v, head_dim**-0.5, bias)
        attended = attended.transpose(0, 2, 1, 3).reshape(batch, length, dims)
        return self.out(attended) + memory


class ResidualAttentionBlock(nn.Module):
    def __init__(self, dims: int, n_head: int, kernel_size: int):
        super().__init__()
        self.attn = FSMNMultiHeadAttention(dims, n_head, kernel_size)
        self.attn_ln = nn.LayerNorm(dims, eps=1e-5)
        self.mlp = [nn.Linear(dims, 4 * dims), GELU(), nn.Linear(4 * dims, dims)]
        self.mlp_ln = nn.LayerNorm(dims, eps=1e-5)

    def __call__(self, x, bias, mask, cos, sin):
        x = x + self.attn(self.attn_ln(x), bias, mask, cos, sin)
        h = self.mlp_ln(x)
        for layer in self.mlp:
            h = layer(h)
        return x + h


class AudioEncoderV2(nn.Module):
    def __init__(self, config: S3TokenizerConfig):
        super().__init__()
        dims = config.n_audio_state
        self.conv1 = Conv1d(config.n_mels, dims, kernel_size=3, stride=2, padding=1)
        self.conv2 = Conv1d(dims, dims, kernel_size=3, stride=2, padding=1)
        self.blocks = [
            ResidualAttentionBlock(dims, config.n_audio_head, config.fsmn_kernel_size)
            for _ in range(config.n_audio_layer)
        ]
        self._cos, self._sin = rotary_tables(config.rope_dim, config.rope_max_positions)

    def __call__(self, mel: mx.array, mel_len: mx.array) -> tuple[mx.array, mx.array]:
        """mel ``[B, T, n_mels]``, mel_len ``[B]`` -> hidden ``[B, T/4, dims]``, lengths."""
        x = gelu(self.conv1(mel * non_pad_mask(mel_len, mel.shape[1])[..., None]))
        lengths = conv_out_len(mel_len)
        x = gelu(self.conv2(x * non_pad_mask(lengths, x.shape[1])[..., None]))
        lengths = conv_out_len(lengths)
        length = x.shape[1]
        if length > self._cos.shape[0]:
            raise ValueError(
                f"S3Tokenizer: {length} tokens exceed the rotary table "
                f"({self._cos.shape[0]} positions); split the input"
            )
        mask = non_pad_mask(lengths, length)
        bias = ((1.0 - mask) * -1.0e10)[:, None, None, :]
        cos, sin = self._cos[:length], self._sin[:length]
        for block in self.blocks:
            x = block(x, bias, mask[..., None], cos, sin)
        return x, lengths


class FSQQuantizer(nn.Module):
    def __init__(self, config: S3TokenizerConfig):
        super().__init__()
        self.levels = config.fsq_levels
        self.project_down = nn.Linear(config.n_audio_state, config.fsq_dims)

    def __call__(self, hidden: mx.array) -> mx.array:
        """hidden ``[B, T, dims]`` -> token ids ``[B, T]`` (int32)."""
        h = mx.tanh(self.project_down(hidden)) * 0.9990000128746033
        digits = mx.round(h) + 1  # each in {0, 1, 2}
        powers = mx.power(float(self.levels), mx.arange(digits.shape[-1], dtype=mx.float32))
        return mx.sum(digits * powers, axis=-1).astype(mx.int32)


class S3TokenizerV2(nn.Module):
    def __init__(self, config: S3TokenizerConfig | None = None):
        super().__init__()
        self.config = config or S3TokenizerConfig()
        self.encoder = AudioEncoderV2(self.config)
        self.quantizer = FSQQuantizer(self.config)

    def _encode_tokens(self, mel: mx.array, mel_len: mx.array) -> tuple[mx.array, mx.array]:
        hidden, lengths = self.encoder(mel, mel_len)
        return self.quantizer(hidden), lengths

    def __call__(self, mel: mx.array, mel_len) -> tuple[mx.array, mx.array]:
        """``quantize``: log-mel ``[B, T, n_mels]`` and frame counts ``[B]`` -> token ids
        ``[B, T']`` (int32) and token counts ``[B]``. Inputs longer than 30 s are tokenized
        in 30 s windows with 4 s overlap and merged, as the reference does."""
        mel_len = mx.array(np.asarray(mel_len, dtype=np.int32))
        if mel.ndim != 3 or mel.shape[-1] != self.config.n_mels:
            raise ValueError(
                f"S3Tokenizer expects a log-mel [batch, frames, {self.config.n_mels}], "
                f"got shape {tuple(mel.shape)}"
            )
        lengths = np.array(mel_len).tolist()
        if max(lengths) > MAX_FRAMES:
            return self._quantize_long(mel, lengths)
        return self._encode_tokens(mel, mel_len)

    def _quantize_long(self, mel: mx.array, lengths: list[int]) -> tuple[mx.array, mx.array]:
        """``_quantize_mixed_batch``: every item becomes one or more 3000-frame segments,
        all encoded as one batch; long items keep the middle of overlapping segments."""
        segments, segment_lens, owners = [], [], []
        for b, n in enumerate(lengths):
            starts = range(0, n, STRIDE_FRAMES) if n > MAX_FRAMES else [0]
            for start in starts:
                end = min(start + WINDOW_FRAMES, n)
                seg = mel[b, start:end]
                seg = mx.pad(seg, [(0, WINDOW_FRAMES - seg.shape[0]), (0, 0)])
                segments.append(seg)
                segment_lens.append(end - start)
                owners.append(b)
        codes, code_lens = self._encode_tokens(mx.stack(segments), mx.array(segment_lens))
        codes, code_lens = np.array(codes), np.array(code_lens)

        per_item: dict[int, list[list[int]]] = {}
        for i, b in enumerate(owners):
            per_item.setdefault(b, []).append(codes[i, : code_lens[i]].tolist())
        drop = (OVERLAP_SECONDS // 2) * TOKENS_PER_SECOND
        merged = []
        for b, n in enumerate(lengths):
            parts = per_item[b]
            if n <= MAX_FRAMES:
                merged.append(parts[0])
                continue
            tokens = []
            for i, part in enumerate(parts):
                left = 0 if i == 0 else drop
                right = len(part) - drop if i != len(parts) - 1 else len(part)
                tokens.extend(part[left:right])
            merged.append(tokens)
        width = max(len(t) for t in merged)
        out = np.zeros((len(lengths), width), dtype=np.int32)
        for b, tokens in enumerate(merged):
            out[b, : len(tokens)] = tokens
        return mx.array(out), mx.array([len(t) for t in merged], dtype=mx.int32)

    def tokenize(self, wavs, max_len: int | None = None) -> tuple[mx.array, mx.array]:
        """``S3Tokenizer.forward``: a list of 16 kHz mono waveforms -> token ids ``[B, T']``
        and counts ``[B]``. ``max_len`` truncates to that many tokens (4 mel frames each)."""
        from ..audio import whisper_log_mel

        if not isinstance(wavs, (list, tuple)):
            wavs = [wavs]
        mels = []
        for wav in wavs:
            wav = mx.array(np.asarray(wav, dtype=np.float32))
            if wav.ndim == 2 and wav.shape[0] == 1:
                wav = wav[0]
            if wav.ndim != 1 or wav.shape[0] == 0:
                raise ValueError(
                    f"S3Tokenizer.tokenize expects non-empty mono 16 kHz waveforms, got shape "
                    f"{tuple(wav.shape)}"
                )
            mel = whisper_log_mel(wav[None], n_mels=self.config.n_mels)[0]
            if max_len is not None:
                mel = mel[: max_len * 4]
            mels.append(mel)
        lengths = [m.shape[0] for m in mels]
        width = max(lengths)
        batch = mx.stack([mx.pad(m, [(0, width - m.shape[0]), (0, 0)]) for m in mels])
        return self(batch, lengths)


def pad_to_token_multiple(wav: np.ndarray, sr: int) -> np.ndarray:
    """``S3Tokenizer.pad``: right-pad with zeros to a whole number of 40 ms tokens."""
    n_tokens = math.ceil(wav.shape[-1] / sr * TOKENS_PER_SECOND)
    target = int(n_tokens * (sr / TOKENS_PER_SECOND))
    pad = [(0, 0)] * (wav.ndim - 1) + [(0, target - wav.shape[-1])]
    return np.pad(wav, pad)


def sanitize(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """``tokenizer.`` tensors of ``s3gen*.safetensors`` (prefix stripped) -> MLX names.

    ``_mel_filters`` and ``window`` are dropped whether present or not: the log-mel is
    computed by ``chatterbox_mlx.audio.whisper_log_mel`` from rebuilt filters."""
    out = {}
    for key, value in weights.items():
        if key in ("_mel_filters", "window"):
            continue
        if key.startswith("quantizer._codebook."):
            key = "quantizer." + key[len("quantizer._codebook.") :]
        if key.endswith(("conv1.weight", "conv2.weight")) or key.endswith("fsmn_block.weight"):
            value = conv1d_weight(value)
        out[key] = value
    return out

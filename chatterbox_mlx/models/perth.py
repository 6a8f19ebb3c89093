"""PerthNet, Resemble AI's implicit (neural) audio watermark, in MLX.

The network works on a normalized log-magnitude spectrogram at 32 kHz (n_fft 2048, hop 320,
periodic Hann). The encoder adds a learned residual to the lowest ``subband`` bins (up to
2 kHz) of the frames loud enough to carry it; the phase is kept, so the marked signal is the
inverse STFT of the new magnitude with the old phase. The decoder reads the same bins at
three time scales (x1.25, x1, x0.75) and returns one confidence per signal (about 1 when
marked, about 0 when not).

Arrays are channels-last: spectrograms are ``[batch, frames, bins]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import mlx.core as mx
import mlx.nn as nn

from .. import audio
from .config_utils import from_dict
from .weights import conv1d_weight

MASK_FRACTION = 0.05  # frames quieter than 5% of the loudest frame carry no watermark
HEADROOM_DB = 15.0
DECODER_SCALES = (1.25, 1.0, 0.75)  # time stretch of the slow, normal and fast branches


@dataclass
class PerthConfig:
    sample_rate: int = 32000
    n_fft: int = 2048
    hop_size: int = 320
    window_size: int = 2048
    window_fn: str = "hann"
    stft_magnitude_min: float = 1e-9
    max_wmark_freq: float = 2000.0
    hidden_size: int = 256

    @classmethod
    def from_dict(cls, values: dict) -> PerthConfig:
        """From ``hparams.yaml``: its training-only entries (batch size, lr, loss) are
        ignored, the model's own are checked by ``config_utils.from_dict``."""
        names = {f.name for f in fields(cls)}
        config = from_dict(cls, {k: v for k, v in values.items() if k in names})
        if config.window_fn != "hann" or config.window_size != config.n_fft:
            raise ValueError(
                f"PerthNet config with window_fn={config.window_fn!r}, window_size="
                f"{config.window_size}, n_fft={config.n_fft} is not supported; only the "
                "released model's Hann window of length n_fft is"
            )
        return config

    @property
    def subband(self) -> int:
        """Number of low STFT bins that carry the watermark."""
        n_freq = self.n_fft // 2 + 1
        return int(round(n_freq * self.max_wmark_freq / (self.sample_rate / 2)))

    @property
    def min_level_db(self) -> float:
        return 20 * math.log10(self.stft_magnitude_min)


class ConvStack(nn.Module):
    """1x1 conv, five 7-tap convs, 1x1 conv; LeakyReLU(0.01) after all but the last."""

    def __init__(self, in_channels: int, hidden: int, out_channels: int):
        super().__init__()
        self.layers = [
            nn.Conv1d(in_channels, hidden, 1),
            *[nn.Conv1d(hidden, hidden, 7, padding=3) for _ in range(5)],
            nn.Conv1d(hidden, out_channels, 1),
        ]

    def __call__(self, x: mx.array) -> mx.array:
        for layer in self.layers[:-1]:
            x = nn.leaky_relu(layer(x), 0.01)
        return self.layers[-1](x)


def loud_frames(magspec: mx.array) -> mx.array:
    """``[B, T, F] -> [B, T]`` float mask of frames whose summed level exceeds 5% of the max."""
    level = magspec.sum(axis=-1)
    threshold = level.max(axis=-1, keepdims=True) * MASK_FRACTION
    return (level > threshold).astype(magspec.dtype)


def _linear_resize(x: mx.array, size: int) -> mx.array:
    """``F.interpolate(mode="linear", align_corners=True)`` along time of ``[B, T, C]``,
    with torch's float32 source positions."""
    n = x.shape[1]
    scale = (n - 1) / (size - 1) if size > 1 else 0.0
    pos = mx.arange(size, dtype=mx.float32) * mx.array(scale, mx.float32)
    lo = mx.minimum(mx.floor(pos), n - 1)
    hi = mx.where(lo < n - 1, lo + 1, lo)
    frac = mx.clip(pos - lo, 0, 1)[None, :, None]  # exact: pos and lo are float32
    return x[:, lo.astype(mx.int32)] * (1 - frac) + x[:, hi.astype(mx.int32)] * frac


def _nearest_resize(x: mx.array, size: int) -> mx.array:
    """``F.interpolate(mode="nearest")`` along time of ``[B, T]``: index floor(i * T / size)."""
    n = x.shape[1]
    if size == n:
        return x
    if size == 2 * n:
        index = mx.arange(size) // 2
    else:
        scale = mx.array(n, mx.float32) / mx.array(size, mx.float32)
        index = mx.floor(mx.arange(size, dtype=mx.float32) * scale).astype(mx.int32)
        index = mx.minimum(index, n - 1)
    return x[:, index]


def _masked_mean(x: mx.array, mask: mx.array) -> mx.array:
    return (x * mask).sum(axis=1) / mask.sum(axis=1)


class Encoder(nn.Module):
    def __init__(self, config: PerthConfig):
        super().__init__()
        self.subband = config.subband
        self.layers = ConvStack(self.subband, config.hidden_size, self.subband)

    def __call__(self, magspec: mx.array) -> mx.array:
        """Normalized magnitude ``[B, T, F]`` -> marked magnitude, same shape."""
        mask = loud_frames(magspec)[..., None]
        low = magspec[..., : self.subband]
        low = low + self.layers(low) * mask
        return mx.concatenate([low, magspec[..., self.subband :]], axis=-1)


class Decoder(nn.Module):
    def __init__(self, config: PerthConfig):
        super().__init__()
        self.subband = config.subband
        hidden = config.hidden_size
        self.slow_layers = ConvStack(self.subband, hidden, 2)
        self.normal_layers = ConvStack(self.subband, hidden, 2)
        self.fast_layers = ConvStack(self.subband, hidden, 2)

    def __call__(self, magspec: mx.array) -> mx.array:
        """Normalized magnitude ``[B, T, F]`` -> watermark confidence ``[B]``."""
        mask = loud_frames(magspec)
        low = magspec[..., : self.subband]
        frames = low.shape[1]
        branches = (self.slow_layers, self.normal_layers, self.fast_layers)
        attn, marks = [], []
        for layers, scale in zip(branches, DECODER_SCALES, strict=True):
            size = int(frames * scale)
            x = low if size == frames else _linear_resize(low, size)
            out = layers(x)  # [B, size, 2]: attention logit, watermark value
            m = _nearest_resize(mask, size)
            attn.append(_masked_mean(out[..., 0], m))
            marks.append(_masked_mean(out[..., 1], m))
        weights = mx.softmax(mx.stack(attn, axis=-1), axis=-1)
        return (mx.stack(marks, axis=-1) * weights).sum(axis=-1)


class PerthNet(nn.Module):
    """Encoder + decoder with the STFT front-end; signals are ``[B, T]`` at ``sample_rate``."""

    def __init__(self, config: PerthConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self._window = audio.hann_window(config.n_fft, periodic=True)

    def _stft(self, signal: mx.array) -> mx.array:
        c = self.config
        return audio.stft(signal, c.n_fft, c.hop_size, self._window)

    def magnitude(self, spec: mx.array) -> mx.array:
        """Complex spectrum -> level in dB mapped to [0, ~1] (0 at ``stft_magnitude_min``)."""
        c = self.config
        db = 20 * mx.log10(mx.maximum(mx.abs(spec), c.stft_magnitude_min))
        return (db - c.min_level_db) / (HEADROOM_DB - c.min_level_db)

    def spectrum(self, magspec: mx.array, spec: mx.array) -> mx.array:
        """Normalized magnitude with the phase of ``spec`` -> complex spectrum."""
        c = self.config
        db = magspec * (HEADROOM_DB - c.min_level_db) + c.min_level_db
        mag = mx.power(10.0, mx.minimum(db / 20, 10.0))
        size = mx.abs(spec)
        # exp(i * angle(spec)); angle(0) is 0, so a zero bin gets phase 1
        safe = mx.where(size > 0, size, 1.0)
        unit_real = mx.where(size > 0, spec.real / safe, 1.0)
        unit_imag = spec.imag / safe
        return mag * unit_real + 1j * (mag * unit_imag)

    def embed(self, signal: mx.array) -> mx.array:
        """``[B, T]`` -> marked ``[B, (T // hop) * hop]`` (the reference's iSTFT length)."""
        c = self.config
        spec = self._stft(signal)
        marked = self.encoder(self.magnitude(spec))
        # Only the watermark band changes. The reference also round-trips the bins above it
        # through dB and back, which changes them only by float32 rounding (and lifts bins
        # below stft_magnitude_min to it), so those are kept as they are.
        band = c.subband
        low = self.spectrum(marked[..., :band], spec[..., :band])
        spec = mx.concatenate([low, spec[..., band:]], axis=-1)
        return audio.istft(spec, c.n_fft, c.hop_size, self._window)

    def detect(self, signal: mx.array) -> mx.array:
        """``[B, T]`` -> unclipped watermark confidence ``[B]``."""
        return self.decoder(self.magnitude(self._stft(signal)))


def sanitize(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """``perth_net_*.pth.tar`` ``model`` entries -> PerthNet parameters.

    ``encoder.layers.N.conv.weight [out, in, k]`` becomes ``encoder.layers.layers.N.weight
    [out, k, in]``; the audio processor's buffers (``ap.*``: windows, phase advance) are
    rebuilt from the config and dropped."""
    out = {}
    for key, value in weights.items():
        if key.startswith("ap."):
            continue
        net, stack, index, _conv, param = key.split(".")
        value = mx.array(value) if not isinstance(value, mx.array) else value
        if param == "weight":
            value = conv1d_weight(value)
        out[f"{net}.{stack}.layers.{index}.{param}"] = value
    return out

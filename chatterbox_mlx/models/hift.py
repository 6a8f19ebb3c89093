"""HiFT vocoder (S3Gen's ``mel2wav``): 80-bin mel at 50 Hz -> 24 kHz waveform.

A neural source-filter + iSTFT generator (HiFTNet): an F0 predictor drives a harmonic
sine source, whose STFT is fused into a HiFi-GAN style upsampler at every scale; the
network predicts a 16-point STFT (log-magnitude, phase) that the inverse STFT turns into
audio. Spec: the reference's ``models/s3gen/hifigan.py``, ``f0_predictor.py`` and the
waveform part of ``S3Token2Wav`` in ``s3gen.py``.

Channels-last: mel ``[B, T, 80]``; waveform and source ``[B, T * 480]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from .. import audio
from ..constants import S3GEN_SR
from .config_utils import from_dict
from .layers import (
    Conv1d,
    ConvTranspose1d,
    cycle_phase,
    elu,
    polar_spectrum,
    random_normal,
    sin,
    snake,
    snake_conv1d,
    tanh,
)
from .weights import (
    CheckpointError,
    conv1d_weight,
    conv_transpose1d_weight,
    fold_weight_norms,
    load_safetensors,
    load_strict,
    strip_prefix,
)

MAX_MAGNITUDE = 1e2  # the reference's clip of the predicted STFT magnitude


@dataclass
class HiFTConfig:
    in_channels: int = 80
    base_channels: int = 512
    nb_harmonics: int = 8
    sampling_rate: int = S3GEN_SR
    nsf_alpha: float = 0.1
    nsf_sigma: float = 0.003
    nsf_voiced_threshold: float = 10.0
    upsample_rates: tuple[int, ...] = (8, 5, 3)
    upsample_kernel_sizes: tuple[int, ...] = (16, 11, 7)
    n_fft: int = 16
    hop_length: int = 4
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5),) * 3
    source_resblock_kernel_sizes: tuple[int, ...] = (7, 7, 11)
    source_resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5),) * 3
    lrelu_slope: float = 0.1
    audio_limit: float = 0.99
    f0_cond_channels: int = 512
    f0_num_class: int = 1

    @classmethod
    def s3gen(cls) -> HiFTConfig:
        """The vocoder every Chatterbox variant uses (``S3Token2Wav.mel2wav``)."""
        return cls()

    @classmethod
    def from_dict(cls, d: dict) -> HiFTConfig:
        """From our field names, or the reference constructor's (``istft_params``)."""
        d = dict(d)
        if "istft_params" in d:
            params = d.pop("istft_params")
            d["n_fft"], d["hop_length"] = params["n_fft"], params["hop_len"]
        for key in (
            "upsample_rates",
            "upsample_kernel_sizes",
            "resblock_kernel_sizes",
            "source_resblock_kernel_sizes",
        ):
            if key in d:
                d[key] = tuple(d[key])
        for key in ("resblock_dilation_sizes", "source_resblock_dilation_sizes"):
            if key in d:
                d[key] = tuple(tuple(x) for x in d[key])
        return from_dict(cls, d)

    @property
    def upsample_factor(self) -> int:
        """Waveform samples per mel frame (480 at 24 kHz)."""
        return math.prod(self.upsample_rates) * self.hop_length


class ELU(nn.Module):
    """torch's ELU (alpha 1), computed with expm1 as torch does."""

    def __call__(self, x: mx.array) -> mx.array:
        return elu(x)


class Snake(nn.Module):
    """Snake activation, x + sin^2(alpha x) / alpha, one alpha per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = mx.ones((channels,))

    def __call__(self, x: mx.array) -> mx.array:
        return snake(x, self.alpha)


class ResBlock(nn.Module):
    """HiFi-GAN residual block: per dilation, Snake -> dilated conv -> Snake -> conv."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = [
            Conv1d(channels, channels, kernel_size, dilation=d, padding=d * (kernel_size - 1) // 2)
            for d in dilations
        ]
        self.convs2 = [
            Conv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2)
            for _ in dilations
        ]
        self.activations1 = [Snake(channels) for _ in dilations]
        self.activations2 = [Snake(channels) for _ in dilations]

    def __call__(self, x: mx.array) -> mx.array:
        for conv1, conv2, act1, act2 in zip(
            self.convs1, self.convs2, self.activations1, self.activations2, strict=True
        ):
            x = snake_conv1d(snake_conv1d(x, act1.alpha, conv1), act2.alpha, conv2, residual=x)
        return x


class ConvRNNF0Predictor(nn.Module):
    """Mel ``[B, T, in]`` -> F0 in Hz ``[B, T]``: five convs with ELU, a linear, abs."""

    def __init__(self, in_channels: int = 80, cond_channels: int = 512, num_class: int = 1):
        super().__init__()
        # Indices as in the reference's nn.Sequential: convs at 0, 2, .., ELUs between.
        self.condnet = []
        for i in range(5):
            channels = in_channels if i == 0 else cond_channels
            self.condnet += [Conv1d(channels, cond_channels, 3, padding=1), ELU()]
        self.classifier = nn.Linear(cond_channels, num_class)

    def __call__(self, mel: mx.array) -> mx.array:
        x = mel
        for layer in self.condnet:
            x = layer(x)
        return mx.abs(self.classifier(x).squeeze(-1))


class SourceModuleHnNSF(nn.Module):
    """Harmonic sine source (the reference's ``SineGen``) merged by linear + tanh."""

    def __init__(self, config: HiFTConfig):
        super().__init__()
        self.harmonics = config.nb_harmonics + 1
        self.sampling_rate = config.sampling_rate
        self.sine_amp = config.nsf_alpha
        self.noise_std = config.nsf_sigma
        self.voiced_threshold = config.nsf_voiced_threshold
        self.l_linear = nn.Linear(self.harmonics, 1)

    def sine_waves(
        self, f0: mx.array, phase: mx.array | None = None, noise: mx.array | None = None
    ) -> mx.array:
        """``SineGen``: f0 ``[B, L]`` (Hz, per sample) -> ``[B, L, harmonics]``.

        ``phase`` ``[B, harmonics]`` is the random initial phase (uniform in [-pi, pi);
        harmonic 0's entry is ignored and set to 0, as in the reference), ``noise``
        ``[B, L, harmonics]`` the standard normal draw; each is drawn from ``mx.random``
        when not given.
        """
        batch, length = f0.shape
        shape = (batch, length, self.harmonics)
        if phase is None:
            phase = mx.random.uniform(-math.pi, math.pi, (batch, self.harmonics))
        if noise is None:
            noise = random_normal(shape)
        _check_shape("phase", phase, (batch, self.harmonics))
        _check_shape("noise", noise, shape)

        order = mx.arange(1, self.harmonics + 1, dtype=mx.float32)
        theta = 2 * math.pi * cycle_phase(f0[..., None] * order / self.sampling_rate)
        phase = mx.concatenate([mx.zeros((batch, 1)), phase[:, 1:]], axis=1)
        sines = self.sine_amp * sin(theta + phase[:, None, :])

        uv = (f0 > self.voiced_threshold).astype(mx.float32)[..., None]
        noise_amp = uv * self.noise_std + (1 - uv) * self.sine_amp / 3
        return sines * uv + noise_amp * noise

    def __call__(
        self, f0: mx.array, phase: mx.array | None = None, noise: mx.array | None = None
    ) -> mx.array:
        """f0 ``[B, L]`` -> excitation ``[B, L]``."""
        return tanh(self.l_linear(self.sine_waves(f0, phase, noise))).squeeze(-1)


def _check_shape(name: str, x: mx.array, shape: tuple[int, ...]) -> None:
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(x.shape)}")


def nearest_upsample(x: mx.array, factor: int) -> mx.array:
    """``nn.Upsample(scale_factor=factor)`` (nearest) along axis 1 of ``[B, T]``.

    Uses torch's float32 index rule ``floor(i * float32(1 / factor))``."""
    length = x.shape[1] * factor
    index = mx.floor(mx.arange(length, dtype=mx.float32) * (1.0 / factor)).astype(mx.int32)
    return x[:, mx.minimum(index, x.shape[1] - 1)]


class HiFTGenerator(nn.Module):
    def __init__(self, config: HiFTConfig):
        super().__init__()
        self.config = config
        c = config
        self.m_source = SourceModuleHnNSF(c)
        self.f0_predictor = ConvRNNF0Predictor(c.in_channels, c.f0_cond_channels, c.f0_num_class)
        self.conv_pre = Conv1d(c.in_channels, c.base_channels, 7, padding=3)

        self.ups = [
            ConvTranspose1d(
                c.base_channels // 2**i, c.base_channels // 2 ** (i + 1), k, u, padding=(k - u) // 2
            )
            for i, (u, k) in enumerate(zip(c.upsample_rates, c.upsample_kernel_sizes, strict=True))
        ]

        # The source STFT (n_fft + 2 channels at hop_length) is brought to each scale's rate.
        bins = c.n_fft + 2
        rates = [1, *c.upsample_rates[::-1][:-1]]
        down = [math.prod(rates[: i + 1]) for i in range(len(rates))][::-1]
        self.source_downs = []
        self.source_resblocks = []
        for i, (u, k, d) in enumerate(
            zip(
                down,
                c.source_resblock_kernel_sizes,
                c.source_resblock_dilation_sizes,
                strict=True,
            )
        ):
            ch = c.base_channels // 2 ** (i + 1)
            if u == 1:
                self.source_downs.append(Conv1d(bins, ch, 1))
            else:
                self.source_downs.append(Conv1d(bins, ch, u * 2, u, padding=u // 2))
            self.source_resblocks.append(ResBlock(ch, k, d))

        self.resblocks = []
        for i in range(len(self.ups)):
            ch = c.base_channels // 2 ** (i + 1)
            for k, d in zip(c.resblock_kernel_sizes, c.resblock_dilation_sizes, strict=True):
                self.resblocks.append(ResBlock(ch, k, d))
        self.conv_post = Conv1d(ch, bins, 7, padding=3)
        self._window = audio.hann_window(c.n_fft)

    def f0(self, mel: mx.array) -> mx.array:
        """mel ``[B, T, in_channels]`` -> F0 in Hz ``[B, T]``."""
        return self.f0_predictor(mel)

    def source(
        self,
        f0: mx.array,
        phase: mx.array | None = None,
        noise: mx.array | None = None,
    ) -> mx.array:
        """F0 per frame ``[B, T]`` -> excitation signal ``[B, T * upsample_factor]``."""
        f0 = nearest_upsample(f0, self.config.upsample_factor)
        return self.m_source(f0, phase, noise)

    def source_stft(self, source: mx.array) -> mx.array:
        """``[B, L]`` -> ``[B, L / hop + 1, n_fft + 2]``: real parts then imaginary parts."""
        c = self.config
        spec = audio.stft(source, c.n_fft, c.hop_length, self._window)
        return mx.concatenate([spec.real, spec.imag], axis=-1)

    def decode(self, mel: mx.array, source: mx.array) -> mx.array:
        """mel ``[B, T, in]`` and excitation ``[B, L]`` -> waveform ``[B, L]``."""
        c = self.config
        s = self.source_stft(source)
        x = self.conv_pre(mel)
        n_kernels = len(c.resblock_kernel_sizes)
        for i, up in enumerate(self.ups):
            x = up(nn.leaky_relu(x, c.lrelu_slope))
            if i == len(self.ups) - 1:
                x = mx.concatenate([x[:, 1:2], x], axis=1)  # ReflectionPad1d((1, 0))
            x = x + self.source_resblocks[i](self.source_downs[i](s))
            blocks = self.resblocks[i * n_kernels : (i + 1) * n_kernels]
            xs = blocks[0](x)
            for block in blocks[1:]:
                xs = xs + block(x)
            x = xs / n_kernels
        x = self.conv_post(nn.leaky_relu(x, 0.01))

        spec = polar_spectrum(x, c.n_fft // 2 + 1, MAX_MAGNITUDE)
        wav = audio.istft(spec, c.n_fft, c.hop_length, self._window)
        return mx.clip(wav, -c.audio_limit, c.audio_limit)

    def __call__(
        self,
        mel: mx.array,
        cache_source: mx.array | None = None,
        phase: mx.array | None = None,
        noise: mx.array | None = None,
    ) -> tuple[mx.array, mx.array]:
        """The reference's ``HiFTGenerator.inference``: mel ``[B, T, in]`` ->
        (waveform ``[B, T * 480]``, excitation ``[B, T * 480]``).

        ``cache_source`` ``[B, n]`` (the excitation returned by the previous chunk)
        replaces the first ``n`` source samples so that streamed chunks join smoothly.
        ``phase``/``noise``: the source's random draws (see ``SourceModuleHnNSF``)."""
        c = self.config
        if mel.ndim != 3 or mel.shape[-1] != c.in_channels:
            raise ValueError(
                f"mel must be [batch, frames, {c.in_channels}] (channels-last), got "
                f"{tuple(mel.shape)}; transpose a torch-layout [batch, {c.in_channels}, frames]"
            )
        source = self.source(self.f0(mel), phase, noise)
        if cache_source is not None and cache_source.size:
            if cache_source.ndim == 3:  # the reference's [B, 1, n]
                cache_source = cache_source.reshape(cache_source.shape[0], -1)
            n = cache_source.shape[1]
            if cache_source.shape[0] != source.shape[0] or n > source.shape[1]:
                raise ValueError(
                    f"cache_source {tuple(cache_source.shape)} must be [batch, n] with "
                    f"n <= {source.shape[1]} (this chunk's source length)"
                )
            source = mx.concatenate([cache_source.astype(source.dtype), source[:, n:]], axis=1)
        return self.decode(mel, source), source


def trim_fade(sample_rate: int = S3GEN_SR) -> mx.array:
    """``S3Token2Wav.trim_fade``: 20 ms of silence, then a 20 ms raised-cosine fade-in."""
    n_trim = sample_rate // 50
    ramp = (mx.cos(mx.linspace(math.pi, 0, n_trim)) + 1) / 2
    return mx.concatenate([mx.zeros((n_trim,)), ramp])


def fade_in(wav: mx.array, sample_rate: int = S3GEN_SR) -> mx.array:
    """Apply ``trim_fade`` to the start of ``wav`` ``[B, L]``, as ``S3Token2Wav.inference``."""
    fade = trim_fade(sample_rate)
    n = min(fade.shape[0], wav.shape[1])
    return mx.concatenate([wav[:, :n] * fade[:n], wav[:, n:]], axis=1)


def sanitize(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """Real ``mel2wav.*`` tensors (prefix stripped) -> ``HiFTGenerator`` parameters.

    Folds weight norm and converts torch conv layouts to channels-last, written out
    row-major (the folded weight is a new array anyway; the CPU's BLAS paths read the
    taps in place)."""
    out = {}
    for key, value in fold_weight_norms(weights).items():
        if key.endswith(".weight") and value.ndim == 3:
            if key.startswith("ups."):
                value = conv_transpose1d_weight(value)
            else:
                value = mx.contiguous(conv1d_weight(value))
        out[key] = value
    return out


def load(
    path_or_weights, config: HiFTConfig | None = None, prefix: str = "mel2wav."
) -> HiFTGenerator:
    """Build a ``HiFTGenerator`` from ``s3gen*.safetensors`` (or its loaded dict)."""
    w = path_or_weights
    if not isinstance(w, dict):
        w = load_safetensors(w)
    if prefix:
        w = strip_prefix(w, prefix)
        if not w:
            raise CheckpointError(
                f"no '{prefix}*' tensors in the checkpoint: pass s3gen*.safetensors, or "
                "prefix='' for a dict that already holds the vocoder's tensors"
            )
    model = HiFTGenerator(config or HiFTConfig.s3gen())
    load_strict(model, sanitize(w), "HiFT vocoder (mel2wav)")
    mx.eval(model.parameters())
    return model

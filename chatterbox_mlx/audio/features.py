"""The four feature extractors the networks take (S3Gen's mel, the S3Tokenizer's
Whisper log-mel, the VoiceEncoder's power mel, CAMPPlus's Kaldi fbank), their
filterbanks, and the VoiceEncoder's silence trimming. Channels-last: ``[batch, frames, bins]``."""

from __future__ import annotations

import functools
import math

import mlx.core as mx
import numpy as np

from ..constants import S3_SR, S3GEN_SR
from .common import as_mx
from .spectral import frame_signal, hann_window, reflect_pad, stft


def _hz_to_mel(freq: np.ndarray, htk: bool) -> np.ndarray:
    freq = np.asarray(freq, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + freq / 700.0)
    # Slaney: linear below 1 kHz, logarithmic above
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    mels = freq / f_sp
    above = freq >= min_log_hz
    return np.where(
        above, min_log_mel + np.log(np.maximum(freq, min_log_hz) / min_log_hz) / logstep, mels
    )


def _mel_to_hz(mels: np.ndarray, htk: bool) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    freqs = f_sp * mels
    return np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), freqs)


@functools.lru_cache(maxsize=32)
def _mel_filters_np(sr, n_fft, n_mels, fmin, fmax, htk, norm) -> np.ndarray:
    fmax = sr / 2 if fmax is None else fmax
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sr)
    mel_edges = np.linspace(_hz_to_mel(fmin, htk), _hz_to_mel(fmax, htk), n_mels + 2)
    mel_f = _mel_to_hz(mel_edges, htk)
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:n_mels] / fdiff[:n_mels, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper)).astype(np.float32)
    if norm == "slaney":
        weights *= (2.0 / (mel_f[2:] - mel_f[:n_mels]))[:, None]
    elif norm is not None:
        raise ValueError(f"mel filter norm must be 'slaney' or None, got {norm!r}")
    weights.setflags(write=False)
    return weights


def mel_filters(
    sr: int,
    n_fft: int,
    n_mels: int,
    fmin: float = 0.0,
    fmax: float | None = None,
    htk: bool = False,
    norm: str | None = "slaney",
) -> np.ndarray:
    """``librosa.filters.mel``: float32 ``[n_mels, n_fft // 2 + 1]`` (cached, read-only)."""
    return _mel_filters_np(int(sr), int(n_fft), int(n_mels), float(fmin), fmax, bool(htk), norm)


@functools.lru_cache(maxsize=32)
def _mel_filters_mx(*args) -> mx.array:
    return mx.array(mel_filters(*args).T)  # [bins, n_mels]


def _batched(wav, what: str) -> tuple[mx.array, bool]:
    wav = as_mx(wav)
    if wav.ndim == 1:
        return wav[None], True
    if wav.ndim != 2:
        raise ValueError(f"{what}: expected audio of shape [T] or [B, T], got {tuple(wav.shape)}")
    return wav, False


def s3gen_mel(wav_24k) -> mx.array:
    """S3Gen's 24 kHz log-mel (``s3gen/utils/mel.py:mel_spectrogram`` with its defaults):
    ``[B, T] -> [B, frames, 80]``, frames = T // 480 (for T a multiple of 480)."""
    n_fft, hop = 1920, 480
    wav, squeeze = _batched(wav_24k, "s3gen_mel")
    pad = (n_fft - hop) // 2
    wav = reflect_pad(wav, pad, pad)
    spec = stft(wav, n_fft, hop, hann_window(n_fft), center=False)
    magnitude = mx.sqrt(mx.real(spec) ** 2 + mx.imag(spec) ** 2 + 1e-9)
    mel = magnitude @ _mel_filters_mx(S3GEN_SR, n_fft, 80, 0.0, 8000.0, False, "slaney")
    mel = mx.log(mx.maximum(mel, 1e-5))
    return mel[0] if squeeze else mel


def whisper_log_mel(wav_16k, n_mels: int = 128, padding: int = 0) -> mx.array:
    """The S3Tokenizer's log-mel (``S3Tokenizer.log_mel_spectrogram``): ``[B, T] ->
    [B, frames, n_mels]``, frames = T // 160 (the last STFT frame is dropped).

    The reference processes one utterance at a time, so the ``max - 8`` floor is taken
    per batch item."""
    n_fft, hop = 400, 160
    wav, squeeze = _batched(wav_16k, "whisper_log_mel")
    if padding > 0:
        wav = mx.pad(wav, [(0, 0), (0, padding)])
    spec = stft(wav, n_fft, hop, hann_window(n_fft))[:, :-1]
    power = mx.real(spec) ** 2 + mx.imag(spec) ** 2
    mel = power @ _mel_filters_mx(S3_SR, n_fft, n_mels, 0.0, None, False, "slaney")
    log_spec = mx.log10(mx.maximum(mel, 1e-10))
    floor = mx.max(log_spec, axis=(1, 2), keepdims=True) - 8.0
    log_spec = (mx.maximum(log_spec, floor) + 4.0) / 4.0
    return log_spec[0] if squeeze else log_spec


def voice_encoder_mel(wav_16k) -> mx.array:
    """The VoiceEncoder's 40-bin power mel (``voice_encoder/melspec.py:melspectrogram`` with
    ``VoiceEncConfig``): ``[T] -> [frames, 40]``, frames = 1 + T // 160.

    ``VoiceEncoder.embeds_from_wavs`` trims silence first (``trim_silence(wav, 20)``)."""
    n_fft, hop = 400, 160
    wav, squeeze = _batched(wav_16k, "voice_encoder_mel")
    spec = stft(wav, n_fft, hop, hann_window(n_fft))
    power = mx.real(spec) ** 2 + mx.imag(spec) ** 2
    mel = power @ _mel_filters_mx(S3_SR, n_fft, 40, 0.0, 8000.0, False, "slaney")
    return mel[0] if squeeze else mel


@functools.lru_cache(maxsize=8)
def _kaldi_mel_banks(num_bins, padded_window, sample_freq, low_freq, high_freq) -> mx.array:
    """``torchaudio.compliance.kaldi.get_mel_banks`` (no VTLN) plus its zero Nyquist column,
    transposed: ``[padded_window // 2 + 1, num_bins]``."""
    nyquist = 0.5 * sample_freq
    if high_freq <= 0.0:
        high_freq += nyquist
    if not (0.0 <= low_freq < nyquist and 0.0 < high_freq <= nyquist and low_freq < high_freq):
        raise ValueError(
            f"kaldi_fbank: need 0 <= low_freq < high_freq <= nyquist ({nyquist}), "
            f"got low_freq={low_freq}, high_freq={high_freq}"
        )

    # torchaudio builds the banks in float32 (torch's default dtype)
    f32 = np.float32
    mel_low = 1127.0 * math.log(1.0 + low_freq / 700.0)
    mel_high = 1127.0 * math.log(1.0 + high_freq / 700.0)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = np.arange(num_bins)[:, None]
    left = (mel_low + b * delta).astype(f32)
    center = (mel_low + (b + 1.0) * delta).astype(f32)
    right = (mel_low + (b + 2.0) * delta).astype(f32)
    freqs = f32(sample_freq / padded_window) * np.arange(padded_window // 2, dtype=f32)
    mel = (f32(1127.0) * np.log(f32(1.0) + freqs / f32(700.0)))[None, :]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = np.maximum(f32(0.0), np.minimum(up, down))
    banks = np.pad(banks, [(0, 0), (0, 1)])
    return mx.array(banks.T.astype(np.float32))


def _kaldi_window(window_type: str, size: int) -> np.ndarray:
    k = np.arange(size, dtype=np.float64)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * k / (size - 1))
    windows = {
        "povey": lambda: hann**0.85,
        "hanning": lambda: hann,
        "hamming": lambda: 0.54 - 0.46 * np.cos(2 * np.pi * k / (size - 1)),
        "rectangular": lambda: np.ones(size),
    }
    if window_type not in windows:
        raise ValueError(f"kaldi_fbank: window_type must be one of {sorted(windows)}")
    return windows[window_type]().astype(np.float32)


def kaldi_fbank(
    wav_16k,
    num_mel_bins: int = 80,
    frame_length: float = 25.0,
    frame_shift: float = 10.0,
    sample_frequency: float = float(S3_SR),
    preemphasis_coefficient: float = 0.97,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    energy_floor: float = 1.0,
    window_type: str = "povey",
    remove_dc_offset: bool = True,
    round_to_power_of_two: bool = True,
    snip_edges: bool = True,
    use_energy: bool = False,
    use_log_fbank: bool = True,
    use_power: bool = True,
    subtract_mean: bool = False,
) -> mx.array:
    """``torchaudio.compliance.kaldi.fbank`` (dither 0, no VTLN), as CAMPPlus calls it with
    ``num_mel_bins=80``: ``[T] -> [frames, num_mel_bins (+1 with use_energy)]``."""
    wav = as_mx(wav_16k)
    if wav.ndim == 2 and wav.shape[0] == 1:
        wav = wav[0]
    if wav.ndim != 1:
        raise ValueError(f"kaldi_fbank: expected mono audio [T], got {tuple(wav.shape)}")
    shift = int(sample_frequency * frame_shift * 0.001)
    size = int(sample_frequency * frame_length * 0.001)
    padded = 1 << (size - 1).bit_length() if round_to_power_of_two else size
    if not 2 <= size <= wav.shape[0]:
        raise ValueError(
            f"kaldi_fbank: audio of {wav.shape[0]} samples is shorter than one "
            f"{frame_length} ms frame ({size} samples)"
        )
    if padded % 2:
        raise ValueError("kaldi_fbank: the padded frame size must be even")
    eps = float(np.finfo(np.float32).eps)

    if not snip_edges:  # kaldi reflects the signal at the ends, repeating the edge sample
        n = wav.shape[0]
        reversed_wav = wav[::-1]
        pad = size // 2 - shift // 2
        n_frames = (n + shift // 2) // shift
        if pad > 0:
            wav = mx.concatenate([reversed_wav[n - pad :], wav, reversed_wav])
        else:
            wav = mx.concatenate([wav[-pad:], reversed_wav])
        frames = frame_signal(wav, size, shift)[:n_frames]
    else:
        frames = frame_signal(wav, size, shift)
    if remove_dc_offset:
        frames = frames - mx.mean(frames, axis=1, keepdims=True)
    log_energy = mx.log(mx.maximum(mx.sum(frames * frames, axis=1), eps))
    if preemphasis_coefficient != 0.0:
        previous = mx.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
        frames = frames - preemphasis_coefficient * previous
    frames = frames * mx.array(_kaldi_window(window_type, size))
    if padded != size:
        frames = mx.pad(frames, [(0, 0), (0, padded - size)])
    spectrum = mx.abs(mx.fft.rfft(frames, axis=-1))
    if use_power:
        spectrum = spectrum * spectrum
    banks = _kaldi_mel_banks(
        num_mel_bins, padded, float(sample_frequency), float(low_freq), float(high_freq)
    )
    feats = spectrum @ banks
    if use_log_fbank:
        feats = mx.log(mx.maximum(feats, eps))
    if use_energy:
        if energy_floor != 0.0:
            log_energy = mx.maximum(log_energy, math.log(energy_floor))
        feats = mx.concatenate([log_energy[:, None], feats], axis=1)
    if subtract_mean:
        feats = feats - mx.mean(feats, axis=0, keepdims=True)
    return feats


def trim_silence(
    wav, top_db: float = 20.0, frame_length: int = 2048, hop_length: int = 512
) -> np.ndarray:
    """``librosa.effects.trim(wav, top_db=top_db)[0]``, which ``VoiceEncoder.embeds_from_wavs``
    applies before ``voice_encoder_mel``: drop leading/trailing frames whose RMS is more than
    ``top_db`` below the loudest frame's. ``[T] -> [T']`` float32 numpy."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"trim_silence: expected mono audio [T], got {wav.shape}")
    padded = np.pad(wav, frame_length // 2)
    n_frames = 1 + (padded.shape[0] - frame_length) // hop_length
    frames = np.lib.stride_tricks.as_strided(
        padded,
        (n_frames, frame_length),
        (hop_length * padded.strides[0], padded.strides[0]),
        writeable=False,
    )
    rms = np.sqrt(np.mean(frames * frames, axis=1, dtype=np.float32))
    ref = np.square(rms.max())
    db = 10.0 * np.log10(np.maximum(1e-10, np.square(rms)))
    db = db - 10.0 * np.log10(np.maximum(1e-10, ref))
    loud = np.flatnonzero(db > -top_db)
    if loud.size == 0:
        return wav[:0]
    start = int(loud[0] * hop_length)
    end = min(wav.shape[0], int((loud[-1] + 1) * hop_length))
    return wav[start:end]

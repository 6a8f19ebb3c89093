"""Weight-free audio DSP shared by every network: STFT/iSTFT, the four feature
extractors, resampling, loudness and audio I/O.

Each function reproduces the library call the PyTorch reference makes (torch.stft,
librosa, torchaudio, pyloudnorm), so features and tokens match the reference.
Time-frequency outputs are channels-last: ``[batch, frames, bins]``.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile

import mlx.core as mx
import numpy as np


class AudioError(ValueError):
    """Audio that cannot be used: unreadable, empty, silent or not finite."""


def _as_mx(x, dtype=mx.float32) -> mx.array:
    if isinstance(x, mx.array):
        return x.astype(dtype) if x.dtype != dtype else x
    return mx.array(np.asarray(x, dtype=np.float32 if dtype == mx.float32 else None))


# --------------------------------------------------------------------------- STFT


def hann_window(n: int, periodic: bool = True) -> mx.array:
    """Hann window as ``torch.hann_window`` / ``scipy.signal.get_window("hann", fftbins=True)``."""
    if n <= 0:
        raise ValueError(f"window length must be positive, got {n}")
    if n == 1:
        return mx.ones((1,), dtype=mx.float32)
    denom = n if periodic else n - 1
    k = np.arange(n, dtype=np.float64)
    return mx.array((0.5 - 0.5 * np.cos(2.0 * np.pi * k / denom)).astype(np.float32))


def _check_window(window, n_fft: int) -> mx.array:
    if window is None:
        return mx.ones((n_fft,), dtype=mx.float32)
    window = _as_mx(window)
    if window.shape != (n_fft,):
        raise ValueError(
            f"window must have shape ({n_fft},) (win_length == n_fft), got {tuple(window.shape)}"
        )
    return window


def _reflect_pad(x: mx.array, left: int, right: int) -> mx.array:
    """Reflect-pad the last axis (edge sample not repeated), as torch's ``mode="reflect"``."""
    n = x.shape[-1]
    if left >= n or right >= n:
        raise ValueError(
            f"reflect padding of ({left}, {right}) needs more than {max(left, right)} samples, "
            f"got {n}; pass a longer signal"
        )
    parts = []
    if left:
        parts.append(x[..., 1 : left + 1][..., ::-1])
    parts.append(x)
    if right:
        parts.append(x[..., n - right - 1 : n - 1][..., ::-1])
    return mx.concatenate(parts, axis=-1) if len(parts) > 1 else x


def frame_signal(x: mx.array, frame_length: int, hop_length: int) -> mx.array:
    """``[..., T] -> [..., frames, frame_length]`` with frames = 1 + (T - frame_length) // hop."""
    n = x.shape[-1]
    if n < frame_length:
        raise ValueError(f"signal of {n} samples is shorter than one frame ({frame_length})")
    n_frames = 1 + (n - frame_length) // hop_length
    shape = (*x.shape[:-1], n_frames, frame_length)
    strides = []
    stride = 1
    for size in reversed(x.shape):
        strides.insert(0, stride)
        stride *= size
    strides = (*strides[:-1], hop_length, 1)
    return mx.as_strided(mx.contiguous(x), shape, strides)


def stft(
    x,
    n_fft: int,
    hop_length: int,
    window=None,
    center: bool = True,
    pad_mode: str = "reflect",
) -> mx.array:
    """``torch.stft(x, n_fft, hop_length, n_fft, window, center, pad_mode, return_complex=True)``
    with the frequency axis last: ``[B, T] -> complex64 [B, frames, n_fft // 2 + 1]``."""
    x = _as_mx(x)
    window = _check_window(window, n_fft)
    if center:
        pad = n_fft // 2
        if pad_mode == "reflect":
            x = _reflect_pad(x, pad, pad)
        elif pad_mode == "constant":
            x = mx.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)])
        else:
            raise ValueError(f"pad_mode must be 'reflect' or 'constant', got {pad_mode!r}")
    frames = frame_signal(x, n_fft, hop_length) * window
    return mx.fft.rfft(frames, axis=-1)


def _overlap_add(frames: mx.array, hop_length: int) -> mx.array:
    """``[B, F, n] -> [B, n + hop * (F - 1)]``: sum of the frames placed every ``hop`` samples."""
    batch, n_frames, n = frames.shape
    r = -(-n // hop_length)  # frame length in hops
    if r * hop_length != n:
        frames = mx.pad(frames, [(0, 0), (0, 0), (0, r * hop_length - n)])
    chunks = frames.reshape(batch, n_frames, r, hop_length)
    out = mx.zeros((batch, n_frames + r - 1, hop_length), dtype=frames.dtype)
    for k in range(r):
        out = out + mx.pad(chunks[:, :, k], [(0, 0), (k, r - 1 - k), (0, 0)])
    return out.reshape(batch, -1)[:, : n + hop_length * (n_frames - 1)]


def istft(
    spec,
    n_fft: int,
    hop_length: int,
    window=None,
    center: bool = True,
    length: int | None = None,
) -> mx.array:
    """``torch.istft(spec, n_fft, hop_length, n_fft, window, center, length=length)`` for a
    one-sided spectrum with the frequency axis last: ``[B, frames, n_fft // 2 + 1] -> [B, T]``."""
    spec = spec if isinstance(spec, mx.array) else mx.array(np.asarray(spec, np.complex64))
    if spec.ndim == 2:
        return istft(spec[None], n_fft, hop_length, window, center, length)[0]
    if spec.shape[-1] != n_fft // 2 + 1:
        raise ValueError(
            f"spectrum has {spec.shape[-1]} bins, expected n_fft // 2 + 1 = {n_fft // 2 + 1}"
        )
    window = _check_window(window, n_fft)
    n_frames = spec.shape[1]
    frames = mx.fft.irfft(spec, n=n_fft, axis=-1) * window
    signal = _overlap_add(frames, hop_length)

    start = n_fft // 2 if center else 0
    full = signal.shape[-1]
    end = full - n_fft // 2 if center else full
    if length is not None:
        end = start + length
    envelope = _window_envelope(np.array(window), hop_length, n_frames)[start:end]
    if envelope.size and np.abs(envelope).min() < 1e-11:
        raise ValueError(
            "istft: the window envelope is zero somewhere (window/hop do not satisfy the "
            "NOLA condition); use a window that overlaps, or a smaller hop_length"
        )
    out = signal[:, start:end] / mx.array(envelope)
    if end > full:  # torch zero-pads up to ``length``
        out = mx.pad(out, [(0, 0), (0, end - full)])
    return out


def _window_envelope(window: np.ndarray, hop_length: int, n_frames: int) -> np.ndarray:
    """Overlap-added squared window (float32, as torch sums it)."""
    n = window.shape[0]
    r = -(-n // hop_length)
    square = np.zeros(r * hop_length, dtype=np.float32)
    square[:n] = window * window
    chunks = square.reshape(r, hop_length)
    envelope = np.zeros((n_frames + r - 1, hop_length), dtype=np.float32)
    for k in range(r):
        envelope[k : k + n_frames] += chunks[k]
    return envelope.reshape(-1)[: n + hop_length * (n_frames - 1)]


# --------------------------------------------------------------------------- mel filterbanks


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


# --------------------------------------------------------------------------- feature extractors


def _batched(wav, what: str) -> tuple[mx.array, bool]:
    wav = _as_mx(wav)
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
    wav = _reflect_pad(wav, pad, pad)
    spec = stft(wav, n_fft, hop, hann_window(n_fft), center=False)
    magnitude = mx.sqrt(mx.real(spec) ** 2 + mx.imag(spec) ** 2 + 1e-9)
    mel = magnitude @ _mel_filters_mx(24000, n_fft, 80, 0.0, 8000.0, False, "slaney")
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
    mel = power @ _mel_filters_mx(16000, n_fft, n_mels, 0.0, None, False, "slaney")
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
    mel = power @ _mel_filters_mx(16000, n_fft, 40, 0.0, 8000.0, False, "slaney")
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
    sample_frequency: float = 16000.0,
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
    wav = _as_mx(wav_16k)
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


# --------------------------------------------------------------------------- resampling


def _check_rates(orig_sr, target_sr) -> tuple[int, int]:
    if int(orig_sr) != orig_sr or int(target_sr) != target_sr or orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive integers, got {orig_sr} -> {target_sr}")
    return int(orig_sr), int(target_sr)


def resample(wav, orig_sr: int, target_sr: int) -> np.ndarray:
    """``librosa.resample(wav, orig_sr=..., target_sr=...)`` (what ``librosa.load(sr=...)``
    does): soxr "HQ" along the last axis, then cut/zero-pad to ceil(T * target / orig).

    Returns float32 numpy (this runs once per prompt, on the CPU, in soxr)."""
    orig_sr, target_sr = _check_rates(orig_sr, target_sr)
    wav = np.asarray(wav, dtype=np.float32)
    if orig_sr == target_sr:
        return wav
    try:
        import soxr
    except ImportError as err:
        raise ImportError(
            "resampling needs the `soxr` package (what librosa uses): `pip install soxr`"
        ) from err
    n_out = int(np.ceil(wav.shape[-1] * (float(target_sr) / orig_sr)))
    flat = wav.reshape(-1, wav.shape[-1])
    rows = [soxr.resample(row, orig_sr, target_sr, quality="soxr_hq") for row in flat]
    out = np.zeros((flat.shape[0], n_out), dtype=np.float32)
    for i, row in enumerate(rows):
        n = min(n_out, row.shape[0])
        out[i, :n] = row[:n]
    return out.reshape(*wav.shape[:-1], n_out)


@functools.lru_cache(maxsize=16)
def _sinc_kernel(orig: int, new: int, lowpass_filter_width: int, rolloff: float):
    """``torchaudio.functional._get_sinc_resample_kernel`` (Hann window) for rates already
    divided by their gcd: ``[2 * width + orig, new]`` float32, and ``width``."""
    base_freq = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base_freq)
    idx = np.arange(-width, width + orig, dtype=np.float64)[None, :] / orig
    # torchaudio divides this integer range in float32 (torch's default dtype)
    phase = (np.arange(0, -new, -1)[:, None] / new).astype(np.float32).astype(np.float64)
    t = phase + idx
    t = np.clip(t * base_freq, -lowpass_filter_width, lowpass_filter_width)
    window = np.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        kernels = np.where(t == 0, 1.0, np.sin(t) / t)
    kernels = kernels * window * (base_freq / orig)
    return mx.array(kernels.T.astype(np.float32)), width


def resample_sinc(
    wav,
    orig_sr: int,
    target_sr: int,
    lowpass_filter_width: int = 6,
    rolloff: float = 0.99,
) -> mx.array:
    """``torchaudio.transforms.Resample(orig_sr, target_sr)(wav)`` (sinc_interp_hann), as
    ``S3Token2Mel.embed_ref`` uses it, along the last axis: ``[..., T] -> [..., T']``."""
    orig_sr, target_sr = _check_rates(orig_sr, target_sr)
    wav = _as_mx(wav)
    if orig_sr == target_sr:
        return wav
    gcd = math.gcd(orig_sr, target_sr)
    orig, new = orig_sr // gcd, target_sr // gcd
    kernel, width = _sinc_kernel(orig, new, int(lowpass_filter_width), float(rolloff))
    lead, length = wav.shape[:-1], wav.shape[-1]
    x = mx.pad(wav.reshape(-1, length), [(0, 0), (width, width + orig)])
    frames = frame_signal(x, kernel.shape[0], orig)  # [N, n_frames, taps]
    out = (frames @ kernel).reshape(x.shape[0], -1)
    # torchaudio takes the ceiling of a float32 value
    target_length = int(np.ceil(np.float32(new * length / orig)))
    return out[:, :target_length].reshape(*lead, -1)


# --------------------------------------------------------------------------- loudness


def _biquad(b, a, x: np.ndarray, block: int = 128) -> np.ndarray:
    """``scipy.signal.lfilter(b, a, x)`` for a second-order section, in float64.

    The recursion is split into blocks: inside a block the zero-state response is a
    matmul with the (truncated) impulse response, and only the two-sample state is
    carried from block to block."""
    b = np.asarray(b, np.float64) / a[0]
    a1, a2 = a[1] / a[0], a[2] / a[0]
    n = x.shape[0]
    x = x.astype(np.float64)
    v = b[0] * x
    v[1:] += b[1] * x[:-1]
    v[2:] += b[2] * x[:-2]
    # all-pole part y[n] = v[n] - a1 y[n-1] - a2 y[n-2], zero state and from the two states
    h = np.zeros(block + 2)
    g1 = np.zeros(block + 2)  # response to y[-1] = 1
    g2 = np.zeros(block + 2)  # response to y[-2] = 1
    h[2], g1[1], g2[0] = 1.0, 1.0, 1.0
    for i in range(2, block + 2):
        h[i] += -a1 * h[i - 1] - a2 * h[i - 2]
        g1[i] = -a1 * g1[i - 1] - a2 * g1[i - 2]
        g2[i] = -a1 * g2[i - 1] - a2 * g2[i - 2]
    h, g1, g2 = h[2:], g1[2:], g2[2:]
    n_blocks = -(-n // block)
    v = np.pad(v, (0, n_blocks * block - n)).reshape(n_blocks, block)
    lag = np.arange(block)[:, None] - np.arange(block)[None, :]
    toeplitz = np.where(lag >= 0, h[np.maximum(lag, 0)], 0.0)
    y = v @ toeplitz.T
    # the state entering each block: the true last two outputs of the block before
    state1, state2 = np.zeros(n_blocks), np.zeros(n_blocks)
    prev1 = prev2 = 0.0
    for k in range(n_blocks):
        state1[k], state2[k] = prev1, prev2
        prev1, prev2 = (
            y[k, -1] + prev1 * g1[-1] + prev2 * g2[-1],
            y[k, -2] + prev1 * g1[-2] + prev2 * g2[-2],
        )
    y += state1[:, None] * g1 + state2[:, None] * g2
    return y.reshape(-1)[:n]


def _k_weighting(sr: int):
    """pyloudnorm's K-weighting: a high shelf (+4 dB, 1.5 kHz) then a 38 Hz high-pass."""

    def coefficients(gain_db, q, fc, kind):
        big_a = 10 ** (gain_db / 40.0)
        w0 = 2.0 * np.pi * (fc / sr)
        alpha = np.sin(w0) / (2.0 * q)
        cos, root = np.cos(w0), 2 * np.sqrt(big_a) * alpha
        if kind == "high_shelf":
            b = [
                big_a * ((big_a + 1) + (big_a - 1) * cos + root),
                -2 * big_a * ((big_a - 1) + (big_a + 1) * cos),
                big_a * ((big_a + 1) + (big_a - 1) * cos - root),
            ]
            a = [
                (big_a + 1) - (big_a - 1) * cos + root,
                2 * ((big_a - 1) - (big_a + 1) * cos),
                (big_a + 1) - (big_a - 1) * cos - root,
            ]
        else:  # high_pass
            b = [(1 + cos) / 2, -(1 + cos), (1 + cos) / 2]
            a = [1 + alpha, -2 * cos, 1 - alpha]
        return b, a

    return [
        coefficients(4.0, 1 / np.sqrt(2), 1500.0, "high_shelf"),
        coefficients(0.0, 0.5, 38.0, "high_pass"),
    ]


def loudness_lufs(wav, sr: int, block_size: float = 0.4) -> float:
    """Integrated loudness (ITU-R BS.1770-4) as ``pyloudnorm.Meter(sr).integrated_loudness``.

    ``wav`` is ``[T]`` or ``[T, channels]`` (up to 5). Returns -inf for silence; raises
    AudioError for audio shorter than one 400 ms block."""
    data = np.asarray(wav)
    if not np.issubdtype(data.dtype, np.floating):
        raise AudioError("loudness_lufs: audio must be floating point in [-1, 1]")
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2 or data.shape[1] > 5:
        raise AudioError(f"loudness_lufs: expected [T] or [T, <=5 channels], got {data.shape}")
    n, channels = data.shape
    if n < block_size * sr:
        raise AudioError(
            f"loudness_lufs: {n / sr:.3f} s of audio is shorter than one {block_size} s block"
        )
    filtered = np.empty_like(data)  # pyloudnorm writes back into the input's dtype
    for ch in range(channels):
        y = data[:, ch]
        for b, a in _k_weighting(sr):
            y = _biquad(b, a, y).astype(data.dtype)  # pyloudnorm rounds each stage
        filtered[:, ch] = y

    gains = np.array([1.0, 1.0, 1.0, 1.41, 1.41])[:channels]
    step = 0.25
    n_blocks = int(np.round((n / sr - block_size) / (block_size * step))) + 1
    z = np.zeros((channels, n_blocks))
    for j in range(n_blocks):
        lo = int(block_size * (j * step) * sr)
        hi = int(block_size * (j * step + 1) * sr)
        z[:, j] = np.sum(np.square(filtered[lo:hi]), axis=0) / (block_size * sr)
    with np.errstate(divide="ignore"):
        block_loudness = -0.691 + 10.0 * np.log10(gains @ z)
        gated = block_loudness >= -70.0
        if not gated.any():
            return float("-inf")
        relative = -0.691 + 10.0 * np.log10(gains @ z[:, gated].mean(axis=1)) - 10.0
        gated = (block_loudness > relative) & (block_loudness > -70.0)
        if not gated.any():
            return float("-inf")
        return float(-0.691 + 10.0 * np.log10(gains @ z[:, gated].mean(axis=1)))


def normalize_loudness(wav, sr: int, target_lufs: float = -27.0) -> np.ndarray:
    """Scale ``wav`` to ``target_lufs`` as ``ChatterboxTurboTTS.norm_loudness`` does.

    Like the reference, audio that cannot be measured (shorter than 400 ms) or is silent
    (-inf LUFS, so an infinite gain) is returned unchanged. float32 out, as with numpy 1."""
    wav = np.asarray(wav, dtype=np.float32)
    try:
        loudness = loudness_lufs(wav, sr)
    except AudioError:
        return wav
    gain = 10.0 ** ((target_lufs - loudness) / 20.0)
    if math.isfinite(gain) and gain > 0.0:
        return (wav * np.float32(gain)).astype(np.float32)
    return wav


# --------------------------------------------------------------------------- audio I/O


def check_audio(wav, sr: int, what: str = "audio") -> np.ndarray:
    """Validate audio passed as an array: ``[T]`` (or ``[C, T]``) samples, finite, not empty,
    not silent, at a positive integer sample rate. Returns it as float32 numpy."""
    if int(sr) != sr or sr <= 0:
        raise AudioError(f"{what}: sample rate must be a positive integer, got {sr!r}")
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim not in (1, 2):
        raise AudioError(
            f"{what}: expected a 1-D array of samples (mono), got shape {wav.shape}; "
            "mix down to mono first (e.g. wav.mean(axis=0))"
        )
    if wav.shape[-1] == 0:
        raise AudioError(f"{what}: the audio is empty (0 samples); pass a recording")
    if not np.all(np.isfinite(wav)):
        raise AudioError(
            f"{what}: the audio contains NaN or infinite samples; fix or re-export the recording"
        )
    if not np.any(wav):
        raise AudioError(f"{what}: the audio is silent (all samples are zero); pass speech")
    return wav


def load_audio(path, sr: int | None = None) -> tuple[np.ndarray, int]:
    """Read any format soundfile (libsndfile) understands, mix down to mono (the channel
    mean, as librosa.load) and, when ``sr`` is given, resample as ``librosa.load(sr=sr)``.

    Returns ``(float32 samples [T], sample rate)``; raises AudioError for a missing,
    unreadable, empty, silent or non-finite file."""
    import soundfile

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise AudioError(f"audio file not found: {path}")
    try:
        data, file_sr = soundfile.read(path, dtype="float32", always_2d=True)
    except Exception as err:  # libsndfile raises LibsndfileError / RuntimeError
        raise AudioError(
            f"cannot read audio file {path}: {err}. Use a format libsndfile reads "
            "(wav, flac, ogg, mp3), or convert it, e.g. `ffmpeg -i in.m4a out.wav`"
        ) from err
    wav = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    wav = check_audio(wav, file_sr, f"audio file {path}")
    if sr is not None and sr != file_sr:
        wav = resample(wav, file_sr, sr)
        file_sr = int(sr)
    return wav, int(file_sr)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_audio(path, wav, sr: int, subtype: str = "PCM_16") -> None:
    """Write ``wav`` (``[T]`` or ``[T, channels]``) as wav/flac (format from the suffix),
    atomically: a temporary file in the same folder, then ``os.replace``."""
    import soundfile

    path = os.fspath(path)
    data = np.asarray(wav, dtype=np.float32)
    if data.ndim == 2 and data.shape[0] == 1:
        data = data[0]
    suffix = os.path.splitext(path)[1].lower()
    formats = {".wav": "WAV", ".flac": "FLAC"}
    if suffix not in formats:
        raise AudioError(f"cannot save {path}: the file name must end in .wav or .flac")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)
    except OSError as err:
        raise AudioError(
            f"cannot write {path}: {err.strerror or err}; check that the folder {folder} "
            "exists and is writable"
        ) from err
    try:
        with os.fdopen(fd, "wb") as f:
            soundfile.write(f, data, int(sr), subtype=subtype, format=formats[suffix])
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; use the usual permissions
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise AudioError(f"cannot write {path}: {err}") from err
        raise

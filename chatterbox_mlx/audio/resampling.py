"""Resampling as the reference does it: librosa's soxr "HQ" (``resample``) and
torchaudio's windowed-sinc ``Resample`` (``resample_sinc``)."""

from __future__ import annotations

import functools
import math

import mlx.core as mx
import numpy as np

from .common import as_mx
from .spectral import frame_signal


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
    wav = as_mx(wav)
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

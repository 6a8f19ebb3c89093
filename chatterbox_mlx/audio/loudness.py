"""Integrated loudness (ITU-R BS.1770-4, as pyloudnorm) and Turbo's loudness normalization."""

from __future__ import annotations

import math

import numpy as np

from .common import AudioError


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

"""STFT and iSTFT as ``torch.stft`` / ``torch.istft`` compute them, frequency axis last,
and the framing and padding they are built from."""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from .common import as_mx


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
    window = as_mx(window)
    if window.shape != (n_fft,):
        raise ValueError(
            f"window must have shape ({n_fft},) (win_length == n_fft), got {tuple(window.shape)}"
        )
    return window


def reflect_pad(x: mx.array, left: int, right: int) -> mx.array:
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
    x = as_mx(x)
    window = _check_window(window, n_fft)
    if center:
        pad = n_fft // 2
        if pad_mode == "reflect":
            x = reflect_pad(x, pad, pad)
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

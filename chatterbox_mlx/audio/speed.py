"""Speed control: a pitch-preserving time stretch of generated speech.

``time_stretch(wav, sr, speed)`` plays ``wav`` ``speed`` times as fast (0.5 to 2.0;
2.0 halves the duration) with the pitch and the formants kept, through Rubber Band's
R3 ("finer") engine as Spotify's ``pedalboard`` ships it (``high_quality=True``).

Why this library (``benchmarks/speed.py``, raw output in
``benchmarks/results/speed-cpu.txt``): on espeak-ng speech it gave the output duration
exactly ``input / speed``, kept the pitch within 0.1 %, and was closest to the
time-scaled input spectrum of the candidates measured (Rubber Band R2, Signalsmith
Stretch, two WSOLAs, librosa's phase vocoder), for 10-35 ms per second of audio on a
2-core x86 VM (under 1 % of Turbo's generation time). It installs as one wheel with
numpy as its only dependency (2.5 MB on macOS arm64, 5 MB on Linux x86-64/aarch64).
Its licence is the GPLv3 (Rubber Band's and JUCE's).

Apply it before the watermark: stretching a watermarked waveform would move the
watermark's frequency pattern.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

MIN_SPEED = 0.5
MAX_SPEED = 2.0
_MIN_SAMPLES = 2048  # shorter input is padded with silence, and the output cut


def check_speed(speed) -> float:
    """``speed`` as a float, or ValueError unless it is a finite number in [0.5, 2.0]."""
    accepted = f"a number from {MIN_SPEED} to {MAX_SPEED} (1.0 = unchanged, 2.0 = twice as fast)"
    if isinstance(speed, bool) or not isinstance(speed, numbers.Real):
        raise ValueError(f"speed must be {accepted}, got {speed!r}")
    value = float(speed)
    if not math.isfinite(value) or not MIN_SPEED <= value <= MAX_SPEED:
        raise ValueError(f"speed must be {accepted}, got {value!r}")
    return value


def time_stretch(wav, sr: int, speed: float) -> np.ndarray:
    """``wav`` (float ``[samples]`` or ``[channels, samples]``) played ``speed`` times as
    fast with its pitch kept: float32 of the same layout, exactly
    ``int(samples / speed + 0.5)`` samples long. ``speed == 1.0`` returns ``wav`` itself, untouched.

    Raises ValueError for a speed outside [0.5, 2.0] (or not a finite number), a sample
    rate that is not a positive integer, or audio that is not finite."""
    speed = check_speed(speed)
    if speed == 1.0:
        return wav
    if isinstance(sr, bool) or not isinstance(sr, numbers.Integral) or sr <= 0:
        raise ValueError(f"time_stretch: sample rate must be a positive integer, got {sr!r}")
    audio = np.asarray(wav, dtype=np.float32)
    if audio.ndim not in (1, 2):
        raise ValueError(
            f"time_stretch: expected [samples] or [channels, samples], got shape {audio.shape}"
        )
    if audio.shape[-1] == 0:
        return audio.copy()
    if not np.all(np.isfinite(audio)):
        raise ValueError("time_stretch: the audio contains NaN or infinite samples")
    try:
        import pedalboard
    except ImportError as err:
        raise ImportError(
            "speed control needs the `pedalboard` package (Rubber Band): pip install pedalboard"
        ) from err
    frames = audio if audio.ndim == 2 else audio[None]
    n_in = frames.shape[-1]
    n_out = int(n_in / speed + 0.5)
    if n_in < _MIN_SAMPLES:  # Rubber Band returns nothing for a few ms of input
        frames = np.pad(frames, [(0, 0), (0, _MIN_SAMPLES - n_in)])
    out = pedalboard.time_stretch(
        np.ascontiguousarray(frames), float(sr), stretch_factor=speed, high_quality=True
    )
    out = np.asarray(out, dtype=np.float32)[:, :n_out]
    if out.shape[-1] < n_out:  # within a sample of n_out already; make it exact
        out = np.pad(out, [(0, 0), (0, n_out - out.shape[-1])])
    return out if audio.ndim == 2 else out[0]

"""Audio files: reading (any format libsndfile reads, mixed to mono, resampled on
request), validating arrays, and writing wav/flac atomically."""

from __future__ import annotations

import os

import numpy as np

from .common import AudioError
from .resampling import resample


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

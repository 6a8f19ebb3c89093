"""Audio files: reading (any format libsndfile reads, mixed to mono, resampled on
request), validating arrays, and writing wav/flac atomically."""

from __future__ import annotations

import os
import tempfile
from errno import ENOSPC
from io import BytesIO  # the standard library's (this module is audio.io)

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


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FORMATS = {".wav": "WAV", ".flac": "FLAC"}


def _encode(path: str, data: np.ndarray, sr: int, subtype: str, file_format: str) -> bytes:
    """The whole file, rendered in memory by libsndfile. Writing it out is then one plain
    ``os.write`` loop, so a full disk or an I/O error is one ``OSError`` (libsndfile's
    callbacks into a Python file object would print a traceback for each failed call)."""
    import soundfile

    buffer = BytesIO()
    try:
        soundfile.write(buffer, data, int(sr), subtype=subtype, format=file_format)
    except soundfile.LibsndfileError as err:
        raise AudioError(f"cannot save {path}: libsndfile cannot encode it ({err})") from err
    return buffer.getvalue()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def save_audio(path, wav, sr: int, subtype: str = "PCM_16") -> None:
    """Write ``wav`` (``[T]`` or ``[T, channels]``) as wav/flac (format from the suffix),
    atomically: a temporary file in the same folder, then ``os.replace``.

    Raises AudioError (one line, the file left as it was, no temporary left behind) for
    a wrong suffix, NaN or infinite samples, an unwritable folder or a full disk."""
    path = os.fspath(path)
    data = np.asarray(wav, dtype=np.float32)
    if data.ndim == 2 and data.shape[0] == 1:
        data = data[0]
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in FORMATS:
        raise AudioError(f"cannot save {path}: the file name must end in .wav or .flac")
    finite = np.isfinite(data)
    if not finite.all():
        first = int(np.argmin(finite.reshape(-1)))
        raise AudioError(
            f"cannot save {path}: the audio has {data.size - int(finite.sum())} NaN or "
            f"infinite samples of {data.size} (the first at sample {first}); nothing was written"
        )
    encoded = _encode(path, data, sr, subtype, FORMATS[suffix])
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)
    except OSError as err:
        raise AudioError(
            f"cannot write {path}: {err.strerror or err}; check that the folder {folder} "
            "exists and is writable"
        ) from err
    try:
        try:
            _write_all(fd, encoded)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; use the usual permissions
        os.replace(tmp, path)
    except BaseException as err:
        _remove(tmp)
        if isinstance(err, OSError):
            hint = "; free some space or choose another folder" if err.errno == ENOSPC else ""
            raise AudioError(
                f"cannot write {path}: {err.strerror or err} ({len(encoded)} bytes){hint}"
            ) from err
        raise

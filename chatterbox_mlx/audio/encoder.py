"""The encoders behind ``formats``: the format table, checks of rates, paths and samples,
and ``_Encoder``, which drives libsndfile (through ``soundfile``) into any file object,
whole or as a stream. See ``formats`` for the formats, rates and stream behaviour."""

from __future__ import annotations

import io
import numbers
import os
import struct
from pathlib import Path

import numpy as np

from .common import AudioError

FORMATS = ("wav", "flac", "mp3", "opus", "pcm")
STREAM_FORMATS = ("wav", "mp3", "opus", "pcm")
ALIASES = {"ogg": "opus"}
EXTENSIONS = {
    ".wav": "wav",
    ".flac": "flac",
    ".mp3": "mp3",
    ".opus": "opus",
    ".ogg": "opus",
    ".pcm": "pcm",
    ".raw": "pcm",
}
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
FALLBACK_RATE = 48000

# libsndfile (major format, subtype) of the formats it writes
_LIBSNDFILE = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "opus": ("OGG", "OPUS"),
}
# sf_command codes (sndfile.h) and the values set for streams
_SFC_SET_COMPRESSION_LEVEL = 0x1301
_SFC_SET_OGG_PAGE_LATENCY_MS = 0x1302
_SFC_SET_BITRATE_MODE = 0x1305
_SF_BITRATE_MODE_CONSTANT = 0
_MP3_STREAM_COMPRESSION = 0.5  # 80 kbps constant at 24 kHz
_OPUS_STREAM_PAGE_MS = 100.0


class FormatError(AudioError):
    """Audio that cannot be encoded or written: unknown format, bad audio, bad path."""


def _supported() -> str:
    names = ", ".join(FORMATS)
    exts = ", ".join(EXTENSIONS)
    return f"supported formats: {names} (ogg = opus); file extensions: {exts}"


def resolve_format(path=None, format: str | None = None) -> str:
    """The canonical format name for an explicit ``format`` (wins) or ``path``'s
    extension; ``wav`` when neither is given. FormatError lists the supported ones."""
    if format is not None:
        name = str(format).strip().lower().lstrip(".")
        name = ALIASES.get(name, name)
        if name not in FORMATS:
            raise FormatError(f"unknown audio format {format!r}; {_supported()}")
        return name
    if path is None:
        return "wav"
    suffix = Path(os.fspath(path)).suffix.lower()
    if suffix not in EXTENSIONS:
        raise FormatError(
            f"cannot tell the audio format of {os.fspath(path)!r} from its extension "
            f"{suffix or '(none)'}; name one with format=, {_supported()}"
        )
    return EXTENSIONS[suffix]


def output_rate(format: str, sr: int) -> int:
    """The sample rate ``format`` stores audio of rate ``sr`` at (48 kHz where the codec
    has no such rate: Opus outside 8/12/16/24/48 kHz, MP3 outside MPEG's nine rates)."""
    name = resolve_format(format=format)
    sr = _check_rate(sr)
    if (name == "opus" and sr not in OPUS_RATES) or (name == "mp3" and sr not in MP3_RATES):
        return FALLBACK_RATE
    return sr


def _check_rate(sr) -> int:
    if isinstance(sr, bool) or not isinstance(sr, numbers.Real) or int(sr) != sr or sr <= 0:
        raise FormatError(f"sample rate must be a positive integer, got {sr!r}")
    return int(sr)


def _mono(wav, what: str) -> np.ndarray:
    """float32 ``[samples]`` from ``[samples]`` or ``[1, samples]``, finite, clipped."""
    x = np.asarray(wav, dtype=np.float32)
    if x.ndim == 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 1:
        raise FormatError(f"{what}: expected mono audio [samples] or [1, samples], got {x.shape}")
    finite = np.isfinite(x)
    if not finite.all():
        first = int(np.argmin(finite))
        raise FormatError(
            f"{what}: the audio contains NaN or infinite samples (first at sample {first}); "
            "nothing was written"
        )
    return np.clip(x, -1.0, 1.0)


def _int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 32768.0), -32768, 32767).astype("<i2")


def _wav_stream_header(sr: int) -> bytes:
    """RIFF/WAVE header of a 16-bit mono stream of unknown length (sizes 0xFFFFFFFF)."""
    fmt = struct.pack("<HHIIHH", 1, 1, sr, 2 * sr, 2, 16)
    unknown = 0xFFFFFFFF
    return (
        b"RIFF"
        + struct.pack("<I", unknown)
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", unknown)
    )


def _sf_command(handle, command: int, value, ctype: str) -> None:
    import soundfile

    pointer = soundfile._ffi.new(f"{ctype}*", value)
    soundfile._snd.sf_command(handle._file, command, pointer, soundfile._ffi.sizeof(ctype))


class _Sink:
    """Append-only in-memory file for libsndfile: ``take()`` hands out (and forgets) the
    bytes written so far. A write back into bytes already handed out (an encoder's
    header update at the end) is dropped: the stream went out without it."""

    def __init__(self):
        self._buffer = bytearray()
        self._sent = 0  # bytes handed out: the stream offset where _buffer starts
        self._pos = 0

    def write(self, data) -> int:
        data = bytes(data)
        n = len(data)
        start = self._pos - self._sent
        if start < 0:
            data = data[-start:]
            start = 0
        end = start + len(data)
        if end > len(self._buffer):
            self._buffer.extend(bytes(end - len(self._buffer)))
        self._buffer[start:end] = data
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        size = self._sent + len(self._buffer)
        self._pos = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: size}[whence] + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        return b""  # libsndfile reads nothing back from a file it writes

    def take(self) -> bytes:
        out = bytes(self._buffer)
        self._sent += len(out)
        self._buffer.clear()
        return out


class _QuietFile:
    """A file object for libsndfile's callbacks that never raises inside them (cffi would
    print each exception as a traceback): an OSError (a full disk) is kept, the call
    reports nothing written, libsndfile gives up, and the writer raises the kept error."""

    def __init__(self, file):
        self._file = file
        self.error: OSError | None = None

    def _guard(self, call, failed):
        if self.error is not None:
            return failed
        try:
            return call()
        except OSError as err:
            self.error = err
            return failed

    def write(self, data) -> int:
        return self._guard(lambda: self._file.write(data), 0)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._guard(lambda: self._file.seek(offset, whence), -1)

    def tell(self) -> int:
        return self._guard(self._file.tell, -1)

    def read(self, size: int = -1) -> bytes:
        return self._guard(lambda: self._file.read(size), b"")

    def raise_kept(self) -> None:
        if self.error is not None:
            raise self.error


class _Encoder:
    """One mono waveform, chunk by chunk, into a binary file object ``target``: libsndfile
    for wav/flac/mp3/opus (``stream=True``: the settings of a stream, and WAV with the
    unknown-length header), raw 16-bit samples for pcm."""

    def __init__(self, target, format: str, sr: int, stream: bool = False):
        self.format = resolve_format(format=format)
        self.input_rate = _check_rate(sr)
        self.sample_rate = output_rate(self.format, self.input_rate)
        self.samples_in = 0
        self._target = target
        self._resampler = None
        if self.sample_rate != self.input_rate:
            import soxr

            self._resampler = soxr.ResampleStream(
                self.input_rate, self.sample_rate, 1, dtype="float32", quality="HQ"
            )
        self._soundfile = None
        if self.format == "pcm":
            pass
        elif self.format == "wav" and stream:
            target.write(_wav_stream_header(self.sample_rate))
        else:
            import soundfile

            major, subtype = _LIBSNDFILE[self.format]
            self._soundfile = soundfile.SoundFile(
                target, "w", self.sample_rate, 1, subtype=subtype, format=major
            )
            if stream and self.format == "mp3":
                _sf_command(
                    self._soundfile, _SFC_SET_COMPRESSION_LEVEL, _MP3_STREAM_COMPRESSION, "double"
                )
                _sf_command(
                    self._soundfile, _SFC_SET_BITRATE_MODE, _SF_BITRATE_MODE_CONSTANT, "int"
                )
            if stream and self.format == "opus":
                _sf_command(
                    self._soundfile, _SFC_SET_OGG_PAGE_LATENCY_MS, _OPUS_STREAM_PAGE_MS, "double"
                )

    def write(self, chunk, what: str) -> None:
        x = _mono(chunk, what)
        self.samples_in += x.size
        if self._resampler is not None:
            x = self._resampler.resample_chunk(x)
        self._write(x)

    def _write(self, x: np.ndarray) -> None:
        if x.size == 0:
            return
        if self._soundfile is None:
            self._target.write(_int16(x).tobytes())
        elif self._soundfile.subtype == "PCM_16":
            self._soundfile.write(_int16(x))
        else:
            self._soundfile.write(x)

    def close(self) -> None:
        if self._resampler is not None:
            self._write(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
            self._resampler = None
        if self._soundfile is not None:
            self._soundfile.close()
            self._soundfile = None

    def abort(self) -> None:
        """Release libsndfile's handle without caring what it leaves in the target."""
        try:
            self.close()
        except Exception:
            pass


# ---- files --------------------------------------------------------------------------


def check_output_path(path, format: str | None = None) -> str:
    """Before any work: the format ``path`` will be written in, or FormatError when the
    format is unknown, ``path`` is a directory, or its folder is missing or read-only."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise FormatError(f"cannot write {path}: it is a directory; give a file name")
    name = resolve_format(path, format)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise FormatError(f"cannot write {path}: {folder} is not a folder")
    if not os.path.isdir(folder):
        raise FormatError(f"cannot write {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise FormatError(f"cannot write {path}: the folder {folder} is not writable")
    return name

"""Audio output formats: WAV, FLAC, MP3, Ogg/Opus and raw PCM, whole or streamed.

Everything is mono. WAV, FLAC and PCM hold 16-bit samples; MP3 and Opus are encoded by
libsndfile (the one inside the ``soundfile`` wheels: LAME and libopus; MP3 needs
libsndfile >= 1.1, which the wheels since soundfile 0.12 have).

- ``encode_audio(wav, sr, out=None, format=None)``: one waveform to ``bytes``, to a file
  (written atomically: a temporary file in the same folder, then ``os.replace``, so an
  error or Ctrl-C leaves nothing at the path) or to a binary file object.
- ``AudioFileWriter(path, sr, format=None)``: the same file, written chunk by chunk
  (flat memory for long texts), still atomic.
- ``StreamEncoder(format, sr)``: ``push(chunk) -> bytes`` and ``finish() -> bytes``
  whose concatenation is ONE continuous stream (wav | mp3 | opus | pcm), for a server.

Formats (``format=`` or the file name's extension): ``wav`` (.wav), ``flac`` (.flac),
``mp3`` (.mp3), ``opus`` (.opus, .ogg; ``ogg`` is the same format: Ogg/Opus, not
Vorbis) and ``pcm`` (.pcm, .raw: headerless 16-bit little-endian samples, what
OpenAI-compatible servers send as ``pcm``).

Sample rates: Opus codes only 8, 12, 16, 24 and 48 kHz and libsndfile refuses any other
rate; the models' 24 kHz is one of them, so it is written as is. Audio at another rate
is resampled (soxr, high quality) to 48 kHz for Opus; likewise for MP3 at a rate that
MPEG audio lacks (it has 8, 11.025, 12, 16, 22.05, 24, 32, 44.1 and 48 kHz).
``output_rate(format, sr)`` says which rate the encoded audio has.

Samples are clipped to [-1, 1]; 16-bit conversion is ``round(x * 32768)`` clipped to
[-32768, 32767] (the inverse of how libsndfile reads 16-bit samples back as floats).
Non-finite samples are an error, never written.

Streams: WAV is sent with the size fields set to 0xFFFFFFFF (unknown length, as
streaming servers do; libsndfile and Python's ``wave`` read such a stream to its end).
MP3 streams are constant bitrate (80 kbps at 24 kHz, about what the variable-bitrate
files average on speech): a VBR stream cannot carry the header that gives a decoder its
length, and decoders that estimate the length from the first frame then cut it short.
Without that header a decoder also keeps LAME's encoder delay and padding, so an MP3
stream decodes about 50-80 ms longer than the audio (a leading silent frame where the
header would go, the delay, and padding to a whole frame). Opus streams are flushed
every 100 ms of audio (Ogg pages), so each push returns what was encoded. FLAC is not
offered as a stream: it records its length in a header written at the end.
"""

from __future__ import annotations

import io
import os

from ..files import AtomicFile
from .encoder import (
    EXTENSIONS,
    FORMATS,
    STREAM_FORMATS,
    FormatError,
    _Encoder,
    _mono,
    _QuietFile,
    _Sink,
    check_output_path,
    output_rate,
    resolve_format,
)


class AudioFileWriter:
    """Write one waveform to ``path`` chunk by chunk, atomically::

        with AudioFileWriter("book.mp3", 24000) as out:
            for chunk in chunks:
                out.write(chunk)

    The audio goes to a hidden temporary file beside ``path`` (created with the usual
    permissions); leaving the block normally closes it and moves it onto ``path``; an
    exception (or Ctrl-C) deletes it, so ``path`` never holds a partial file. The
    format comes from ``format=`` or the extension (see ``resolve_format``)."""

    def __init__(self, path, sr: int, format: str | None = None):
        self.path = os.fspath(path)
        self.format = check_output_path(self.path, format)
        self.sample_rate = output_rate(self.format, sr)
        self._target = None
        try:
            self._target = AtomicFile(self.path)
        except OSError as err:
            raise self._error(err) from err
        self._file = self._target.file
        self._quiet = _QuietFile(self._file)
        try:
            self._encoder = _Encoder(self._quiet, self.format, sr)
        except BaseException as err:
            self._discard()
            raise self._error(err) from err

    def _error(self, err: BaseException) -> BaseException:
        if isinstance(err, FormatError | KeyboardInterrupt | SystemExit):
            return err
        quiet = getattr(self, "_quiet", None)
        if quiet is not None and quiet.error is not None:
            err = quiet.error  # what libsndfile's failure came from
        if isinstance(err, OSError) and err.strerror:
            folder = os.path.dirname(os.path.abspath(self.path))
            return FormatError(f"cannot write {self.path}: {err.strerror} (in the folder {folder})")
        return FormatError(f"cannot write {self.path}: {err}")

    def _discard(self) -> None:
        if self._target is None:
            return
        if getattr(self, "_encoder", None) is not None:
            self._encoder.abort()
        self._target.discard()
        self._target = None

    def write(self, chunk) -> None:
        """Append float samples ``[n]`` (or ``[1, n]``) at the writer's input rate."""
        if self._target is None:
            raise FormatError(f"{self.path}: the writer is already closed")
        try:
            self._encoder.write(chunk, f"cannot write {self.path}")
            self._quiet.raise_kept()
        except BaseException as err:
            self._discard()
            raise self._error(err) from err

    def close(self) -> None:
        """Finish the file and move it onto ``path``."""
        if self._target is None:
            raise FormatError(f"{self.path}: the writer is already closed")
        try:
            if self._encoder.samples_in == 0:
                raise FormatError(f"cannot write {self.path}: the audio is empty (0 samples)")
            self._encoder.close()
            self._quiet.raise_kept()
            self._target.commit()
            self._target = None
        except BaseException as err:
            self._discard()
            raise self._error(err) from err

    def abort(self) -> None:
        """Give up: delete the temporary file, leave ``path`` as it was."""
        self._discard()

    def __enter__(self) -> AudioFileWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._discard()


def encode_audio(wav, sr: int, out=None, format: str | None = None) -> bytes | None:
    """Encode a mono waveform (float ``[samples]`` or ``[1, samples]`` at rate ``sr``).

    - ``out=None``: return the encoded file as ``bytes`` (``format`` defaults to wav).
    - ``out`` a path: write it atomically (format from ``format=`` or the extension);
      returns None.
    - ``out`` a binary file object (e.g. ``sys.stdout.buffer``): write the bytes to it.

    Raises FormatError for an unknown format (listing the supported ones), audio that
    is empty, not mono or not finite, and a path that cannot be written."""
    if out is not None and not hasattr(out, "write"):
        with AudioFileWriter(out, sr, format) as writer:
            writer.write(wav)
        return None
    name = resolve_format(None, format)
    x = _mono(wav, f"cannot encode {name}")
    if x.size == 0:
        raise FormatError(f"cannot encode {name}: the audio is empty (0 samples)")
    buffer = io.BytesIO()
    encoder = _Encoder(buffer, name, sr)
    encoder.write(x, f"cannot encode {name}")
    encoder.close()
    data = buffer.getvalue()
    if out is None:
        return data
    out.write(data)
    return None


# ---- streams ------------------------------------------------------------------------


class StreamEncoder:
    """Encode audio as it is produced into one continuous stream::

        encoder = StreamEncoder("mp3", 24000)
        for chunk in model.generate_stream(text):
            send(encoder.push(chunk))
        send(encoder.finish())

    ``push`` returns the bytes the encoder produced so far (possibly empty: codecs work
    on whole frames and pages), ``finish`` the rest. ``format``: wav | mp3 | opus | pcm
    (see the module docstring for what each stream holds); ``sample_rate`` is the rate
    of the encoded audio."""

    def __init__(self, format: str, sr: int):
        name = resolve_format(format=format)
        if name not in STREAM_FORMATS:
            raise FormatError(
                f"{name} cannot be streamed (it needs a seekable file); "
                f"stream formats: {', '.join(STREAM_FORMATS)}"
            )
        self._sink = _Sink()
        self._encoder = _Encoder(self._sink, name, sr, stream=True)
        self.format = name
        self.sample_rate = self._encoder.sample_rate
        self._finished = False

    def push(self, chunk) -> bytes:
        if self._finished:
            raise FormatError(f"{self.format} stream: push after finish")
        try:
            self._encoder.write(chunk, f"cannot encode the {self.format} stream")
        except BaseException:
            self._finished = True
            self._encoder.abort()
            raise
        return self._sink.take()

    def finish(self) -> bytes:
        if self._finished:
            raise FormatError(f"{self.format} stream: finish called twice")
        self._finished = True
        self._encoder.close()
        return self._sink.take()


__all__ = [
    "AudioFileWriter",
    "EXTENSIONS",
    "FORMATS",
    "FormatError",
    "STREAM_FORMATS",
    "StreamEncoder",
    "check_output_path",
    "encode_audio",
    "output_rate",
    "resolve_format",
]

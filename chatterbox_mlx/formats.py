"""The documented name of ``chatterbox_mlx.audio.formats`` (output encoders)."""

from .audio.formats import (
    EXTENSIONS,
    FORMATS,
    STREAM_FORMATS,
    AudioFileWriter,
    FormatError,
    StreamEncoder,
    encode_audio,
    output_rate,
    resolve_format,
)

__all__ = [
    "EXTENSIONS",
    "FORMATS",
    "STREAM_FORMATS",
    "AudioFileWriter",
    "FormatError",
    "StreamEncoder",
    "encode_audio",
    "output_rate",
    "resolve_format",
]

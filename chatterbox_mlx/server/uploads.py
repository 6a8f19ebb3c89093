"""An uploaded voice clip, checked before it is prepared: it decodes as wav, flac, mp3
or ogg audio and is at most ``--max-voice-seconds`` long."""

from __future__ import annotations

from pathlib import Path

from .. import audio as audio_mod
from .voices import LibraryError

UPLOAD_FORMATS = {
    "WAV": "wav",
    "WAVEX": "wav",
    "RF64": "wav",
    "FLAC": "flac",
    "MP3": "mp3",
    "OGG": "ogg",
}


def check_clip(path: Path, max_seconds: float) -> Path:
    """An uploaded clip, checked (decodes as wav, flac, mp3 or ogg audio of at most
    ``max_seconds``) and renamed ``source.<ext>`` beside it; LibraryError otherwise."""
    import soundfile

    try:
        info = soundfile.info(str(path))
    except Exception:
        raise LibraryError(
            "the uploaded file is not audio this server can read; upload wav, flac, mp3 or ogg",
            param="file",
            code="invalid_audio",
        ) from None
    kind = UPLOAD_FORMATS.get(info.format)
    if kind is None:
        raise LibraryError(
            f"the uploaded file is {info.format_info}; upload wav, flac, mp3 or ogg",
            param="file",
            code="invalid_audio",
        )

    def too_long(seconds: float) -> LibraryError:
        return LibraryError(
            f"the clip is {seconds:.1f} s long; the limit is {max_seconds:g} s "
            "(--max-voice-seconds): upload 10-30 s of one person speaking",
            param="file",
            code="clip_too_long",
        )

    if info.samplerate > 0 and info.frames / info.samplerate > max_seconds:
        raise too_long(info.frames / info.samplerate)
    try:
        wav, sr = audio_mod.load_audio(path)
    except audio_mod.AudioError as err:
        message = (
            str(err)
            .replace(f"audio file {path}", "the uploaded file")
            .replace(str(path), "the uploaded file")
        )
        raise LibraryError(message, param="file", code="invalid_audio") from None
    if len(wav) / sr > max_seconds:
        raise too_long(len(wav) / sr)
    source = path.with_name(f"source.{kind}")
    path.rename(source)
    return source

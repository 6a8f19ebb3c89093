"""The finished book: its chunks read back in order, with their silences, into one file
(with chapter markers) or a folder of one file per chapter.

By the output's extension: ``.m4b``/``.m4a`` (AAC in MP4, a QuickTime chapter track and
Nero chapters, the title, author and cover), ``.mp3`` (ID3v2 with CHAP frames, APIC cover),
``.opus``/``.ogg`` (Opus in Ogg, chapters as ``CHAPTERnnn`` comments), ``.flac`` (the same
comments), all written by PyAV (FFmpeg; the ``[book]`` extra); ``.wav`` (no chapters: WAV
has none) and the folder's files by ``audio.formats``. A path without an extension, or an
existing folder, is a folder: ``NNN Title.mp3`` per chapter (``--format``) and
``playlist.m3u``. Every file appears whole or not at all; a folder is assembled beside its
path and moved there at the end.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..files import AtomicFile, atomic_write
from .chapters import BookError
from .plan import ChapterPlan

BLOCK_SAMPLES = 24000
# kind -> (FFmpeg container, encoder, bit rate for speech)
AV_KINDS = {
    "m4b": ("mp4", "aac", 64000),
    "m4a": ("mp4", "aac", 64000),
    "mp3": ("mp3", "libmp3lame", 64000),
    "opus": ("ogg", "libopus", 32000),
    "ogg": ("ogg", "libopus", 32000),
    "flac": ("flac", "flac", None),
}
KINDS = (*AV_KINDS, "wav", "folder")
FOLDER_FORMATS = ("mp3", "opus", "flac", "wav")


@dataclass
class Segment:
    samples: int
    source: tuple[int, int] | None = None  # (chapter, chunk) in the work folder; None: silence


@dataclass
class ChapterAudio:
    number: int
    title: str
    segments: list[Segment] = field(default_factory=list)

    @property
    def samples(self) -> int:
        return sum(s.samples for s in self.segments)


@dataclass
class BookAudio:
    title: str
    author: str | None
    cover: bytes | None
    sr: int
    chapters: list[ChapterAudio]

    @property
    def samples(self) -> int:
        return sum(c.samples for c in self.chapters)


def output_kind(path: str | os.PathLike, folder_format: str | None = None) -> str:
    """What ``path`` asks for; BookError for an unknown extension, before any work."""
    given = os.fspath(path)
    path = Path(path)
    suffix = path.suffix.lower().lstrip(".")
    if path.is_dir() or not suffix or given.endswith(("/", os.sep)):
        if not path.absolute().parent.is_dir():
            raise BookError(f"{given}: the folder {path.absolute().parent} does not exist")
        if path.is_dir() and any(path.iterdir()):
            raise BookError(
                f"{path} is a folder with files in it; give a new or empty folder, or a "
                "file name such as book.m4b"
            )
        if folder_format is not None and folder_format not in FOLDER_FORMATS:
            raise BookError(f"--format {folder_format}: a folder takes {', '.join(FOLDER_FORMATS)}")
        return "folder"
    if folder_format is not None:
        raise BookError("--format applies to a folder output; a file's format is its extension")
    if suffix not in KINDS:
        raise BookError(
            f"{path}: unknown output format .{suffix}; use .m4b, .m4a, .mp3, .opus, .ogg, "
            ".flac, .wav, or a folder"
        )
    if not path.parent.is_dir():
        raise BookError(f"{path}: the folder {path.parent} does not exist")
    return suffix


def book_audio(
    plans: list[ChapterPlan],
    records: dict,
    chapter_pause: float,
    sr: int,
    title: str,
    author: str | None,
    cover: bytes | None,
) -> BookAudio:
    """The timeline: each chapter's chunks and silences; the chapter pause ends every
    chapter but the last."""
    chapters = []
    for n, plan in enumerate(plans):
        audio = ChapterAudio(plan.chapter.number, plan.chapter.title)
        if plan.lead_in:
            audio.segments.append(Segment(round(plan.lead_in * sr)))
        for chunk in plan.chunks:
            record = records[chunk.chapter, chunk.index]
            audio.segments.append(Segment(int(record["samples"]), (chunk.chapter, chunk.index)))
            pause = chunk.pause_after + (chapter_pause if chunk is plan.chunks[-1] else 0.0)
            if chunk is plan.chunks[-1] and n == len(plans) - 1:
                pause = chunk.pause_after
            if pause > 0:
                audio.segments.append(Segment(round(pause * sr)))
        chapters.append(audio)
    return BookAudio(title, author, cover, sr, chapters)


def _blocks(segments: list[Segment], read_chunk) -> Iterator[np.ndarray]:
    for segment in segments:
        if segment.source is None:
            for start in range(0, segment.samples, BLOCK_SAMPLES):
                yield np.zeros(min(BLOCK_SAMPLES, segment.samples - start), np.float32)
            continue
        wav = read_chunk(*segment.source)
        if len(wav) != segment.samples:
            raise BookError(
                f"the work folder's chunk {segment.source} has {len(wav)} samples, its record "
                f"{segment.samples}; add --restart to render the book again"
            )
        yield wav


def write_book(
    path: str | os.PathLike,
    kind: str,
    audio: BookAudio,
    read_chunk,
    folder_format: str | None = None,
    bitrate: int | None = None,
) -> None:
    if kind == "folder":
        _write_folder(Path(path), audio, read_chunk, folder_format or "mp3")
    elif kind == "wav":
        from ..audio.formats import AudioFileWriter

        with AudioFileWriter(path, audio.sr, "wav") as writer:
            for chapter in audio.chapters:
                for block in _blocks(chapter.segments, read_chunk):
                    writer.write(block)
    else:
        _write_av(Path(path), kind, audio, read_chunk, bitrate)


# ---- PyAV ---------------------------------------------------------------------------------


def _import_av():
    try:
        import av
    except ImportError:
        raise BookError(
            "writing .m4b, .mp3, .opus and .flac books needs PyAV: pip install "
            "'chatterbox-mlx[book]' (or write a .wav or a folder)"
        ) from None
    return av


def image_size(data: bytes) -> tuple[str, int, int] | None:
    """(codec, width, height) of PNG or JPEG bytes, None for anything else."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return ("png", *struct.unpack(">II", data[16:24]))
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return "mjpeg", width, height
        i += 2 + length
    return None


def _chapter_marks(audio: BookAudio) -> list[dict]:
    marks, start = [], 0
    for n, chapter in enumerate(audio.chapters, 1):
        end = start + chapter.samples
        marks.append(
            {
                "id": n,
                "start": start,
                "end": end,
                "time_base": Fraction(1, audio.sr),
                "metadata": {"title": chapter.title},
            }
        )
        start = end
    return marks


def _tags(audio: BookAudio) -> dict[str, str]:
    tags = {"title": audio.title, "album": audio.title, "genre": "Audiobook"}
    if audio.author:
        tags.update(artist=audio.author, album_artist=audio.author)
    return tags


def _comment_chapters(audio: BookAudio) -> dict[str, str]:
    """Vorbis-comment chapters (``CHAPTER001=00:00:00.000``, ``CHAPTER001NAME=...``)."""
    tags = {}
    for mark in _chapter_marks(audio):
        ms = round(mark["start"] * 1000 / audio.sr)
        hours, rest = divmod(ms, 3_600_000)
        minutes, rest = divmod(rest, 60_000)
        stamp = f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"
        tags[f"CHAPTER{mark['id']:03d}"] = stamp
        tags[f"CHAPTER{mark['id']:03d}NAME"] = mark["metadata"]["title"]
    return tags


def _picture_block(cover: bytes, codec: str, width: int, height: int) -> str:
    """A FLAC picture block (front cover), base64, for Ogg's METADATA_BLOCK_PICTURE."""
    mime = b"image/png" if codec == "png" else b"image/jpeg"
    block = struct.pack(">II", 3, len(mime)) + mime + struct.pack(">I", 0)
    block += struct.pack(">IIIII", width, height, 24, 0, len(cover)) + cover
    return base64.b64encode(block).decode("ascii")


def _write_av(path: Path, kind: str, audio: BookAudio, read_chunk, bitrate) -> None:
    av = _import_av()
    container_format, codec, default_rate = AV_KINDS[kind]
    options = {"id3v2_version": "3"} if container_format == "mp3" else {}
    target = AtomicFile(path)
    container = None
    try:
        container = av.open(str(target.tmp_path), "w", format=container_format, options=options)
        stream = container.add_stream(codec, rate=audio.sr)
        stream.layout = "mono"
        if codec == "flac":
            stream.format = "s16"
        if bitrate or default_rate:
            stream.bit_rate = bitrate or default_rate
        tags = _tags(audio)
        picture = image_size(audio.cover) if audio.cover else None
        if container_format == "ogg":
            tags.update(_comment_chapters(audio))
            if picture:
                tags["METADATA_BLOCK_PICTURE"] = _picture_block(audio.cover, *picture)
            stream.metadata.update(tags)
        else:
            if container_format == "flac":
                tags.update(_comment_chapters(audio))
            else:
                container.set_chapters(_chapter_marks(audio))
            container.metadata.update(tags)
        cover_stream = None
        if picture and container_format != "ogg":
            cover_stream = container.add_mux_stream(picture[0], width=picture[1], height=picture[2])
            cover_stream.disposition = av.stream.Disposition.attached_pic
        _encode(av, container, stream, cover_stream, audio, read_chunk)
        container.close()
        container = None
        target.commit()
    except BaseException:
        if container is not None:
            try:
                container.close()
            except Exception:  # the file is discarded anyway
                pass
        target.discard()
        raise


def _encode(av, container, stream, cover_stream, audio: BookAudio, read_chunk) -> None:
    if cover_stream is not None:
        packet = av.Packet(audio.cover)
        packet.stream = cover_stream
        packet.pts = packet.dts = 0
        container.mux(packet)
    pts = 0
    for chapter in audio.chapters:
        for block in _blocks(chapter.segments, read_chunk):
            block = np.clip(block, -1.0, 1.0).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(block[None, :], format="flt", layout="mono")
            frame.sample_rate = audio.sr
            frame.pts = pts
            pts += len(block)
            container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


# ---- a folder -----------------------------------------------------------------------------


def safe_name(title: str, limit: int = 60) -> str:
    name = re.sub(r'[\\/:*?"<>|\x00-\x1f]+', " ", title)
    name = " ".join(name.split()).strip(" .")
    return name[:limit].rstrip(" .") or "chapter"


def _write_folder(path: Path, audio: BookAudio, read_chunk, fmt: str) -> None:
    from ..audio.formats import AudioFileWriter

    parent = path.parent
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
    try:
        playlist = ["#EXTM3U", f"#PLAYLIST:{audio.title}"]
        width = max(2, len(str(len(audio.chapters))))
        for n, chapter in enumerate(audio.chapters, 1):
            name = f"{n:0{width}d} {safe_name(chapter.title)}.{fmt}"
            segments = _without_trailing_silence(chapter.segments)
            with AudioFileWriter(staging / name, audio.sr, fmt) as writer:
                for block in _blocks(segments, read_chunk):
                    writer.write(block)
            seconds = round(sum(s.samples for s in segments) / audio.sr)
            playlist += [f"#EXTINF:{seconds},{chapter.title}", name]
        with atomic_write(staging / "playlist.m3u") as f:
            f.write(("\n".join(playlist) + "\n").encode("utf-8"))
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(staging, 0o777 & ~mask)  # mkdtemp makes 0700
        if path.is_dir():
            path.rmdir()  # empty (output_kind refuses a folder with files)
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _without_trailing_silence(segments: list[Segment]) -> list[Segment]:
    end = len(segments)
    while end > 1 and segments[end - 1].source is None:
        end -= 1
    return segments[:end]

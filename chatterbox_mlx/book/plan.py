"""What a chapter is spoken as: text chunks, each with the silence after it.

A paragraph is cut into chunks at sentence ends (``text.plan_text``, the pipeline's
limit of 300 characters); ``[pause:...]`` tags in the book add their silence. Between
the chunks of a paragraph goes a short pause, between paragraphs ``paragraph`` seconds,
after a chapter ``chapter`` seconds (not after the last one). Silences are not rendered:
they are added when the output is written, so changing them needs no new synthesis.

Each chunk's random seed is a hash of the book's seed, the chapter, the chunk's place and
the attempt, so a chunk sounds the same however the run was interrupted and resumed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .. import text as text_mod
from .chapters import BookError, Chapter

MAX_CHUNK_CHARS = 300
SENTENCE_PAUSE_S = 0.1  # between the chunks of one paragraph, as the pipeline joins them


@dataclass(frozen=True)
class Pauses:
    paragraph: float = 0.6
    chapter: float = 2.0


@dataclass(frozen=True)
class PlannedChunk:
    chapter: int  # the chapter's number
    index: int  # from 0 within the chapter
    text: str
    pause_after: float  # seconds; the chapter's last chunk gets the chapter pause later

    @property
    def text_sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ChapterPlan:
    chapter: Chapter
    lead_in: float  # pause tags before the first words
    chunks: tuple[PlannedChunk, ...]

    @property
    def characters(self) -> int:
        return sum(len(c.text) for c in self.chunks)


def plan_chapter(chapter: Chapter, pauses: Pauses) -> ChapterPlan:
    chunks: list[PlannedChunk] = []
    lead_in = 0.0

    def add_pause(seconds: float) -> None:
        nonlocal lead_in
        if chunks:
            last = chunks[-1]
            chunks[-1] = PlannedChunk(
                last.chapter, last.index, last.text, last.pause_after + seconds
            )
        else:
            lead_in += seconds

    for paragraph in chapter.paragraphs:
        try:
            items = text_mod.plan_text(paragraph, MAX_CHUNK_CHARS)
        except text_mod.TextError as err:
            raise BookError(f"chapter {chapter.number} ({chapter.title}): {err}") from None
        first = True
        for item in items:
            if isinstance(item, text_mod.Pause):
                add_pause(item.seconds)
                continue
            if not first:
                add_pause(SENTENCE_PAUSE_S)
            chunks.append(PlannedChunk(chapter.number, len(chunks), item, 0.0))
            first = False
        add_pause(pauses.paragraph)
    if chunks:  # the chapter ends with its chunk's fade; the chapter pause comes later
        last = chunks[-1]
        chunks[-1] = PlannedChunk(
            last.chapter, last.index, last.text, max(0.0, last.pause_after - pauses.paragraph)
        )
    return ChapterPlan(chapter, lead_in, tuple(chunks))


def chunk_seed(book_seed: int, chunk: PlannedChunk, attempt: int) -> int:
    """A seed in [0, 2**31) for one attempt at one chunk."""
    key = f"{book_seed}:{chunk.chapter}:{chunk.index}:{attempt}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big") & 0x7FFFFFFF

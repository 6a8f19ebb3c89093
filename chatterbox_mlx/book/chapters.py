"""What a book is made of here: ``Book`` (title, author, cover, chapters) and ``Chapter``
(a title and its paragraphs), and ``BookError``."""

from __future__ import annotations

from dataclasses import dataclass, field

SECONDS_PER_CHARACTER = 1 / 15  # narrated English, about 150 words a minute


class BookError(ValueError):
    """A book that cannot be read: the message names the file and the problem."""


@dataclass
class Chapter:
    """One chapter: ``number`` counts from 1 over every chapter found (front matter
    included), so ``--list`` and ``--chapters`` agree."""

    number: int
    title: str
    paragraphs: list[str]
    front_matter: bool = False  # a cover, a table of contents, a copyright page

    @property
    def characters(self) -> int:
        return sum(len(p) for p in self.paragraphs)

    def estimated_seconds(self, speed: float = 1.0) -> float:
        return self.characters * SECONDS_PER_CHARACTER / speed


@dataclass
class Book:
    title: str
    author: str | None
    chapters: list[Chapter]
    sha256: str  # of the file's bytes: a changed book is a different book
    language: str | None = None
    cover: bytes | None = None  # JPEG or PNG bytes
    metadata: dict = field(default_factory=dict)

"""A book as chapters of paragraphs: from an EPUB (``epub.py``), plain text or Markdown.

Plain text: chapters begin at lines like ``Chapter 1``, ``CHAPTER IV.``, ``Part Two``,
``Prologue`` or ``Epilogue`` (or lines matching ``chapter_regex``); paragraphs are
separated by blank lines and hard-wrapped lines are joined. Project Gutenberg's header
and licence (outside the ``*** START OF`` / ``*** END OF`` lines) are left out.

Markdown: chapters begin at ``#`` headings (at ``##`` when the file has one ``#``
heading, the book's title); YAML front matter's ``title`` and ``author`` are the book's.
Emphasis, links, images, HTML tags and code blocks are reduced to the words read aloud.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from .chapters import Book, BookError, Chapter

TEXT_SUFFIXES = (".txt", ".text")
MARKDOWN_SUFFIXES = (".md", ".markdown")
EPUB_SUFFIXES = (".epub",)


def read_book(path: str | Path, chapter_regex: str | None = None) -> Book:
    """The book at ``path`` (EPUB, plain text or Markdown, by extension); BookError when
    it cannot be read or has nothing to speak."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise BookError(f"cannot read {path}: {err.strerror}") from None
    digest = hashlib.sha256(raw).hexdigest()
    suffix = path.suffix.lower()
    if chapter_regex is not None and suffix not in TEXT_SUFFIXES and suffix:
        raise BookError("--chapter-regex applies to plain text (.txt) books only")
    if suffix in EPUB_SUFFIXES:
        from .epub import read_epub

        book = read_epub(path, raw, digest)
    elif suffix in MARKDOWN_SUFFIXES:
        book = read_markdown(_decoded(raw, path), path.stem, digest)
    elif suffix in TEXT_SUFFIXES or not suffix:
        book = read_text(_decoded(raw, path), path.stem, digest, chapter_regex)
    else:
        raise BookError(
            f"{path}: unknown book format {suffix!r}; give an .epub, a .txt or a .md file"
        )
    if not any(c.paragraphs for c in book.chapters):
        raise BookError(f"{path}: no text to read aloud was found in the book")
    book.chapters = [c for c in book.chapters if c.paragraphs]
    for number, chapter in enumerate(book.chapters, 1):
        chapter.number = number
    return book


def _decoded(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise BookError(
            f"{path} is not valid UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start}); "
            "save the book as UTF-8"
        ) from None


# ---- selection ------------------------------------------------------------------------


def select_chapters(book: Book, spec: str | None, front_matter: bool = False) -> list[Chapter]:
    """``--chapters 3-7,9`` (numbers as ``--list`` shows them); without a spec, every
    chapter except front matter (unless ``front_matter``)."""
    if spec is None:
        return [c for c in book.chapters if front_matter or not c.front_matter]
    by_number = {c.number: c for c in book.chapters}
    chosen: list[int] = []
    for part in spec.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if match is None:
            raise BookError(f"--chapters {spec!r}: write numbers and ranges, e.g. 3-7,9")
        low = int(match.group(1))
        high = int(match.group(2) or low)
        if high < low:
            raise BookError(f"--chapters {spec!r}: the range {low}-{high} runs backwards")
        for number in range(low, high + 1):
            if number not in by_number:
                raise BookError(
                    f"--chapters {spec!r}: there is no chapter {number} (the book has "
                    f"{len(book.chapters)}; see --list)"
                )
            if number not in chosen:
                chosen.append(number)
    return [by_number[n] for n in sorted(chosen)]


# ---- plain text -----------------------------------------------------------------------

_WORDS = (
    "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|"
    "fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|"
    "seventy|eighty|ninety|hundred|first|second|third|fourth|fifth|sixth|seventh|"
    "eighth|ninth|tenth|eleventh|twelfth|last"
)
_NUMBER = rf"(?:\d+|[IVXLCDM]+|[ivxlcdm]+|(?i:(?:{_WORDS})(?:[- ](?:{_WORDS}))?))"
# "Chapter 1", "CHAPTER IV.", "Part Two: The Return", "Chapter 3 The Storm", "Prologue"
DEFAULT_CHAPTER_LINE = re.compile(
    rf"(?:Chapter|CHAPTER|Part|PART|Book|BOOK)\s+{_NUMBER}(?:[.:\-\u2013\u2014]\s*.*|"
    r"\s+[A-Z\"'\u201c].*|)|(?:Prologue|PROLOGUE|Epilogue|EPILOGUE|Preface|PREFACE|"
    r"Introduction|INTRODUCTION|Foreword|FOREWORD|Afterword|AFTERWORD)(?:[.:\-\u2013\u2014]"
    r"\s*.*)?"
)
_GUTENBERG_START = re.compile(r"^\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG.*$", re.M)
_GUTENBERG_END = re.compile(r"^\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG.*$", re.M)
_BLANK = re.compile(r"\n[ \t]*\n")


def _paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in _BLANK.split(text) if p.strip()]


def _without_gutenberg_licence(text: str) -> str:
    start, end = _GUTENBERG_START.search(text), _GUTENBERG_END.search(text)
    if start:
        text = text[start.end() :]
        end = _GUTENBERG_END.search(text)
    return text[: end.start()] if end else text


def read_text(text: str, name: str, digest: str, chapter_regex: str | None = None) -> Book:
    text = _without_gutenberg_licence(text.replace("\r\n", "\n").replace("\r", "\n"))
    pattern = _compiled(chapter_regex) if chapter_regex else DEFAULT_CHAPTER_LINE
    chapters: list[Chapter] = []
    lead: list[str] = []
    for paragraph in _paragraphs(text):
        is_heading = len(paragraph) <= 80 and pattern.fullmatch(paragraph) is not None
        if is_heading:
            chapters.append(Chapter(0, paragraph, [paragraph]))
        elif chapters:
            chapters[-1].paragraphs.append(paragraph)
        else:
            lead.append(paragraph)
    for chapter in chapters:
        _title_from_next_line(chapter)
    title = lead[0] if lead and len(lead[0]) <= 80 else name
    if lead:
        front = Chapter(0, lead[0][:60] if chapters else name, lead, front_matter=bool(chapters))
        chapters.insert(0, front)
    return Book(title=title, author=None, chapters=chapters, sha256=digest)


def _title_from_next_line(chapter: Chapter) -> None:
    """``CHAPTER I.`` followed by a short line without an ending stop is its title:
    ``CHAPTER I. Down the Rabbit-Hole``."""
    heading = chapter.paragraphs[0]
    if len(chapter.paragraphs) < 2 or len(heading.split()) > 3:
        return
    following = chapter.paragraphs[1]
    if len(following) <= 60 and not following.rstrip().endswith((".", "!", "?", ",", ";")):
        chapter.title = f"{heading.rstrip(' .:')}: {following}"


def _compiled(chapter_regex: str) -> re.Pattern:
    try:
        return re.compile(chapter_regex)
    except re.error as err:
        raise BookError(f"--chapter-regex {chapter_regex!r} is not a valid regex: {err}") from None


# ---- Markdown -------------------------------------------------------------------------

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
_SETEXT = re.compile(r"^(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^[ \t]*(```|~~~)")
_INLINE = [
    (re.compile(r"!\[[^\]]*\]\([^)]*\)"), ""),  # images
    (re.compile(r"\[([^\]]*)\]\([^)]*\)"), r"\1"),  # links: their text
    (re.compile(r"\[([^\]]*)\]\[[^\]]*\]"), r"\1"),  # reference links
    (re.compile(r"<[^>\n]+>"), ""),  # HTML tags
    (re.compile(r"`([^`]*)`"), r"\1"),
    (re.compile(r"(\*\*|__|\*|_|~~)(?=\S)(.+?)(?<=\S)\1"), r"\2"),
    (re.compile(r"^\s{0,3}(?:>\s?)+", re.M), ""),  # block quotes
    (re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+", re.M), ""),  # list markers
    (re.compile(r"^\s*\|?(?:\s*:?-+:?\s*\|)+\s*$", re.M), ""),  # table rules
    (re.compile(r"\|"), " "),
]
_RULE = re.compile(r"^\s*(?:[-*_]\s*){3,}$")


def _plain(markdown: str) -> str:
    for pattern, replacement in _INLINE:
        markdown = pattern.sub(replacement, markdown)
    return markdown


def _front_matter(text: str) -> tuple[dict, str]:
    match = re.match(r"---[ \t]*\n(.*?\n)---[ \t]*\n", text, re.S)
    if match is None:
        return {}, text
    fields = {}
    for line in match.group(1).splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            fields[key.strip().lower()] = value.strip().strip("\"'")
    return fields, text[match.end() :]


def _blocks(text: str) -> list[tuple[int, str]]:
    """(heading level or 0, text) per heading and paragraph; code blocks dropped."""
    blocks: list[tuple[int, str]] = []
    lines: list[str] = []
    fenced = False

    def flush() -> None:
        if lines:
            blocks.append((0, "\n".join(lines)))
            lines.clear()

    for line in text.split("\n"):
        if _FENCE.match(line):
            fenced = not fenced
            flush()
            continue
        if fenced:
            continue
        heading = _HEADING.match(line)
        setext = _SETEXT.match(line)
        if heading:
            flush()
            blocks.append((len(heading.group(1)), heading.group(2)))
        elif setext and len(lines) == 1:
            blocks.append((1 if line.strip()[0] == "=" else 2, lines.pop()))
        elif _RULE.match(line) or not line.strip():
            flush()
        else:
            lines.append(line)
    flush()
    return blocks


def read_markdown(text: str, name: str, digest: str) -> Book:
    fields, body = _front_matter(text.replace("\r\n", "\n").replace("\r", "\n"))
    blocks = _blocks(body)
    levels = [level for level, _ in blocks if level]
    level = min(levels) if levels else 0
    title = fields.get("title")
    if level and levels.count(level) == 1 and any(lv > level for lv in levels):
        level_title = next(t for lv, t in blocks if lv == level)
        title = title or " ".join(_plain(level_title).split())
        level = min(lv for lv in levels if lv > level)
    chapters: list[Chapter] = []
    lead: list[str] = []
    for block_level, block in blocks:
        words = " ".join(_plain(block).split())
        if not words:
            continue
        if block_level == level and level:
            chapters.append(Chapter(0, words, [words]))
        elif chapters:
            chapters[-1].paragraphs.append(words)
        else:
            lead.append(words)
    if lead:
        chapters.insert(0, Chapter(0, title or name, lead))
    return Book(
        title=title or name,
        author=fields.get("author"),
        chapters=chapters,
        sha256=digest,
        language=fields.get("language") or fields.get("lang"),
    )

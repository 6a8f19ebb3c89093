"""Long text: cutting at sentence (then clause) ends, and the plan of chunks and pauses
a pipeline synthesizes."""

from __future__ import annotations

import re

from .errors import TextError
from .pauses import Pause, parse_pauses


def plan_text(text: str, max_chars: int = 300) -> list[str | Pause]:
    """What a pipeline synthesizes, in order: text chunks (``chunk_text`` of each piece
    between pause tags, never across a pause) and ``Pause`` silences. TextError for
    malformed pause tags or text with nothing to speak; the whole text is checked here,
    before any synthesis."""
    plan: list[str | Pause] = []
    for item in parse_pauses(text):
        plan.extend([item] if isinstance(item, Pause) else chunk_text(item, max_chars))
    if not any(isinstance(item, str) for item in plan):
        raise TextError("the text has only pause tags; give some words to speak")
    return plan


# Sentence end: a run of . ! ? … (and CJK 。！？), closing quotes or brackets, then
# whitespace and something that does not start in lowercase (so "Wait... what" and
# "e.g. this" are not cut), or the end. CJK enders need no whitespace after them.
_CLOSERS = re.escape("\"'”’)]}»」』】》）")
_SENTENCE_END = re.compile(
    rf"[.!?…]+[{_CLOSERS}]*(?=\s+(?![a-z])|\Z)|[。！？]+[{_CLOSERS}]*|\n[ \t]*(?=\n)"
)
_CLAUSE_END = re.compile(rf"[,;:，、；：][{_CLOSERS}]*(?=\s)|[，、；：]")
_BRACKETED = re.compile(r"\[[^\[\]\n]*\]")


def sentence_ends(text: str) -> list[int]:
    """Offsets just past each sentence end in ``text``, by the rule ``chunk_text`` cuts at
    first. An end that the lookahead decided on the end of ``text`` alone (nothing after
    it yet) is among them: a caller reading text as it arrives waits for more."""
    return [m.end() for m in _SENTENCE_END.finditer(text)]


_LOOKAHEAD = 200  # characters past the limit a match may need to see (its lookahead)


def _cuts(text: str, pattern: re.Pattern, start: int, end: int, limit: int) -> list[int]:
    """Ends of ``pattern``'s matches in ``(start, min(limit, end - 1)]``."""
    scan = pattern.finditer(text, start, min(end, limit + _LOOKAHEAD))
    return [m.end() for m in scan if start < m.end() <= limit and m.end() < end]


def _skip_space(text: str, i: int, stop: int) -> int:
    while i < stop and text[i].isspace():
        i += 1
    return i


def _pieces(text: str, start: int, stop: int, max_chars: int) -> list[tuple[int, int]]:
    """Spans of ``text[start:stop]`` (no whitespace at either end) of at most ``max_chars``
    characters, cut as late as possible at a sentence end, else a clause end (comma...),
    else whitespace (never inside ``[...]``, so ``[clear throat]`` stays whole), else
    anywhere."""
    spans = []
    start = _skip_space(text, start, stop)
    while start < stop:
        end = stop
        while end > start and text[end - 1].isspace():
            end -= 1
        if end - start <= max_chars:
            spans.append((start, end))
            break
        limit = start + max_chars
        cut = None
        for pattern in (_SENTENCE_END, _CLAUSE_END):
            found = _cuts(text, pattern, start, end, limit)
            if found:
                cut = found[-1]
                break
        if cut is None:
            window = min(end, limit + _LOOKAHEAD)
            inside = [(m.start(), m.end()) for m in _BRACKETED.finditer(text, start, window)]
            spaces = [
                i
                for i in range(start + 1, min(limit, end - 1) + 1)
                if text[i].isspace() and not any(a < i < b for a, b in inside)
            ]
            cut = spaces[-1] if spaces else limit
        piece_end = cut
        while piece_end > start and text[piece_end - 1].isspace():
            piece_end -= 1
        spans.append((start, piece_end))
        start = _skip_space(text, cut, stop)
    return spans


def chunk_text(text: str, max_chars: int = 300) -> list[str]:
    """Pieces of ``text`` for the tokenizer, each at most ``max_chars`` characters.

    Text that fits (``len(text) <= max_chars``) is returned whole, the very string
    given, so it reaches the tokenizer exactly as upstream gives it. Longer text is cut
    by slicing the original string: at the last sentence end (``.!?…`` followed by any
    closing quotes or brackets and whitespace, ``。！？``, or a blank line) that keeps a
    piece within the limit; a sentence longer than the limit at a comma or other clause
    end, then at whitespace, then anywhere. Only the whitespace at a cut is dropped:
    the pieces and the whitespace between them make up the original text."""
    if not isinstance(text, str) or not text.strip():
        raise TextError("text is empty: give some words to speak")
    if len(text) <= max_chars:
        return [text]
    return [text[a:b] for a, b in _pieces(text, 0, len(text), max_chars)]

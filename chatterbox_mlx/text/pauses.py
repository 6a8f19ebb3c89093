"""Pause tags: ``[pause:500ms]`` and friends split the text into pieces and silences."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import TextError

MAX_PAUSE_S = 10.0
PAUSE_FORMS = "[pause:500ms], [pause:1.5s] or [pause:2 s] (a number, then ms or s; up to 10 s)"
# Anything that starts like a pause tag; _PAUSE says whether it is a well-formed one.
_PAUSE_LIKE = re.compile(r"\[\s*pause\b[^\]\[]*\]?", re.IGNORECASE)
_PAUSE = re.compile(r"\[\s*pause\s*:\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s)\s*\]", re.IGNORECASE)


@dataclass(frozen=True)
class Pause:
    """Silence of ``seconds`` between the text pieces around a ``[pause:...]`` tag."""

    seconds: float


def parse_pauses(text: str) -> list[str | Pause]:
    """Split ``text`` at its pause tags into text pieces (stripped; empty ones dropped)
    and ``Pause`` items (adjacent tags add up). Text without a pause tag comes back as
    ``[text]``, the very string given.

    Grammar: ``[pause:N ms]`` or ``[pause:N s]``, N a decimal number (``500``, ``1.5``,
    ``.5``) greater than 0; the word ``pause`` in any case, spaces allowed around ``:``
    and the number; at most 10 s a tag. Anything else starting ``[pause`` (``[pause]``,
    ``[pause:abc]``, ``[pause:-1s]``, ``[pause:500]``, ``[pause:20s]``, a missing ``]``)
    is a TextError naming the tag and these forms. Other bracketed text (Turbo's
    ``[laugh]``, ``[clear throat]``...) is left in the text for the tokenizer."""
    matches = list(_PAUSE_LIKE.finditer(text))
    if not matches:
        return [text]
    out: list[str | Pause] = []
    start = 0
    for match in matches:
        tag = match.group(0)
        good = _PAUSE.fullmatch(tag)
        if not tag.endswith("]"):
            shown = re.match(r"\[\s*pause\s*:?\s*[^\s\]]*", tag, re.IGNORECASE).group(0)
            raise TextError(f"unclosed pause tag {shown!r} (no ']' after it); write {PAUSE_FORMS}")
        if good is None:
            raise TextError(f"malformed pause tag {tag!r}; write {PAUSE_FORMS}")
        value = float(good.group(1))
        seconds = value / 1000 if good.group(2).lower() == "ms" else value
        if not 0 < seconds <= MAX_PAUSE_S:
            raise TextError(
                f"pause tag {tag!r} asks for {seconds:g} s; a pause must be more than 0 "
                f"and at most {MAX_PAUSE_S:g} s: {PAUSE_FORMS}"
            )
        piece = text[start : match.start()].strip()
        if piece:
            out.append(piece)
        if out and isinstance(out[-1], Pause):
            out[-1] = Pause(out[-1].seconds + seconds)
        else:
            out.append(Pause(seconds))
        start = match.end()
    piece = text[start:].strip()
    if piece:
        out.append(piece)
    return out

"""Text that arrives in pieces (as a language model writes it), cut into what can be
spoken now: everything up to the last complete sentence end, by the same rule that cuts
long text (``chatterbox_mlx.text.chunking``).

A sentence end counts once something other than whitespace follows it, since the rule
looks ahead (``"It costs 3."`` may go on ``"5 euros"``; ``"Wait... what"`` is one
sentence). Text that runs past ``max_chars`` with no sentence end is cut where
``chunk_text`` would cut it (a clause end, else whitespace), so a long unpunctuated
reply does not wait for its end.
"""

from __future__ import annotations

from ..text.chunking import chunk_text, sentence_ends

MAX_WAITING_CHARS = 300  # the pipeline's own chunk size (pipeline.MAX_CHUNK_CHARS)


class SentenceBuffer:
    """``add(piece)`` returns the text that became speakable (or None); ``finish()`` the
    rest once the text is complete."""

    def __init__(self, max_chars: int = MAX_WAITING_CHARS):
        self.max_chars = max_chars
        self._text = ""

    def add(self, piece: str) -> str | None:
        self._text += piece
        text = self._text
        decided = [end for end in sentence_ends(text) if text[end:].strip()]
        if decided:
            cut = decided[-1]
        elif len(text.strip()) > self.max_chars:
            last = chunk_text(text, self.max_chars)[-1]
            cut = len(text.rstrip()) - len(last)
        else:
            return None
        ready, self._text = text[:cut].strip(), text[cut:]
        return ready or None

    def finish(self) -> str | None:
        rest, self._text = self._text.strip(), ""
        return rest or None

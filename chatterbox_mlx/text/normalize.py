"""Text checks and upstream's punctuation clean-up (``punc_norm``), one table per front
end; the grapheme tokenizers' special tokens."""

from __future__ import annotations

from .errors import TextError

SOT = "[START]"
EOT = "[STOP]"
UNK = "[UNK]"
SPACE = "[SPACE]"

# Upstream's punc_norm replacement tables, one per variant (order matters).
_QUOTES = [("“", '"'), ("”", '"'), ("‘", "'"), ("’", "'")]
_PUNC_ENGLISH = [
    ("...", ", "), ("…", ", "), (":", ","), (" - ", ", "), (";", ", "),
    ("—", "-"), ("–", "-"), (" ,", ","), *_QUOTES,
]  # fmt: skip
_PUNC_TURBO = [("…", ", "), (":", ","), ("—", "-"), ("–", "-"), (" ,", ","), *_QUOTES]
_ENDERS = (".", "!", "?", "-", ",")
_ENDERS_MULTILINGUAL = _ENDERS + ("、", "，", "。", "？", "！")

_PUNC_RULES = {
    "english": (_PUNC_ENGLISH, _ENDERS),
    "turbo": (_PUNC_TURBO, _ENDERS),
    "multilingual": (_PUNC_ENGLISH, _ENDERS_MULTILINGUAL),
}


def punc_norm(text: str, variant: str = "english") -> str:
    """Upstream's punctuation clean-up for ``variant`` (english | turbo | multilingual).

    Like upstream, empty text becomes a fixed sentence; the pipelines reject empty
    text before getting here."""
    if variant == "nano":
        variant = "turbo"
    replacements, enders = _PUNC_RULES[variant]
    if len(text) == 0:
        return "You need to add some text for me to talk."
    if text[0].islower():
        text = text[0].upper() + text[1:]
    text = " ".join(text.split())
    for old, new in replacements:
        text = text.replace(old, new)
    text = text.rstrip(" ")
    if not text.endswith(enders):
        text += "."
    return text


def check_text(text, where: str, max_chars: int | None = None) -> str:
    """``text`` unchanged, or TextError naming ``where`` it came from (``"--text"``,
    ``"standard input"``, a file name) when it is not a string, is empty or only
    whitespace, holds a character UTF-8 cannot encode (a lone surrogate such as
    ``"\\ud800"``, what undecodable bytes become), or is longer than ``max_chars``."""
    if not isinstance(text, str):
        raise TextError(f"{where}: expected text (a string), got {type(text).__name__}")
    if not text.strip():
        raise TextError(f"{where}: the text is empty or only whitespace; give some words to speak")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        char = text[err.start]
        raise TextError(
            f"{where}: invalid character U+{ord(char):04X} at position {err.start} "
            "(a lone surrogate: the input was not valid UTF-8?); fix or re-save the text as UTF-8"
        ) from None
    if max_chars is not None and len(text) > max_chars:
        raise TextError(
            f"{where}: the text has {len(text):,} characters, over the limit of {max_chars:,}"
        )
    return text

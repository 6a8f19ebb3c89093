"""What the two grapheme front ends (English, Multilingual) share: loading a
``tokenizers`` file, ``[SPACE]`` for spaces, and refusing characters that become ``[UNK]``."""

from __future__ import annotations

from pathlib import Path

from .errors import TextError
from .normalize import EOT, SOT, SPACE, UNK


def load_tokenizer(path: str | Path):
    from tokenizers import Tokenizer

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file not found: {path}")
    tokenizer = Tokenizer.from_file(str(path))
    vocab = tokenizer.get_vocab()
    for token in (SOT, EOT):
        if token not in vocab:
            raise TextError(f"{path}: tokenizer has no {token} token; is this the right file?")
    return tokenizer


def _check_unknown(tokenizer, ids: list[int], unk_id: int | None, text: str) -> None:
    """Raise TextError naming the characters that encode to ``[UNK]``."""
    if unk_id is None or unk_id not in ids:
        return
    bad = sorted(c for c in set(text) if not c.isspace() and unk_id in tokenizer.encode(c).ids)
    raise TextError(
        f"the tokenizer cannot encode {''.join(bad) or 'some characters'!r} in the text; "
        "remove or replace them (for other languages use the multilingual model)"
    )


def encode_graphemes(tokenizer, unk_id: int | None, text: str, strict: bool) -> list[int]:
    """The grapheme tokenizers' ids, spaces as ``[SPACE]``; ``strict`` refuses ``[UNK]``."""
    ids = tokenizer.encode(text.replace(" ", SPACE)).ids
    if strict:
        _check_unknown(tokenizer, ids, unk_id, text)
    return ids


def decode_graphemes(tokenizer, ids) -> str:
    text = tokenizer.decode(list(map(int, ids)), skip_special_tokens=False)
    return text.replace(" ", "").replace(SPACE, " ").replace(EOT, "").replace(UNK, "")

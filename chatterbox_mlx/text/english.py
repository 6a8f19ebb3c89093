"""The English front end: upstream's ``EnTokenizer`` (a BPE over graphemes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .graphemes import decode_graphemes, encode_graphemes, load_tokenizer
from .normalize import EOT, SOT, UNK, punc_norm


class EnTokenizer:
    """English: ``[SPACE]`` for spaces, then the BPE (upstream ``EnTokenizer``)."""

    def __init__(self, path: str | Path):
        self.tokenizer = load_tokenizer(path)
        vocab = self.tokenizer.get_vocab()
        self.unk_id = vocab.get(UNK)
        self.sot_id = vocab[SOT]
        self.eot_id = vocab[EOT]

    framed = True  # T3 reads [start text token, *ids, stop text token]

    @classmethod
    def from_dir(cls, directory: str | Path) -> EnTokenizer:
        return cls(Path(directory) / "tokenizer.json")

    def t3_ids(self, text: str, language_id: str | None = None) -> list[int]:
        """What T3 reads of ``text``: upstream's English ``punc_norm``, then strict ids."""
        return self.encode(punc_norm(text, "english"), strict=True)

    def encode(self, text: str, strict: bool = False) -> list[int]:
        """Ids of ``text``; ``strict`` refuses characters that would become ``[UNK]``."""
        return encode_graphemes(self.tokenizer, self.unk_id, text, strict)

    def decode(self, ids) -> str:
        return decode_graphemes(self.tokenizer, ids)

    def text_to_tokens(self, text: str) -> np.ndarray:
        """``[1, N]`` int32 ids, as upstream's ``text_to_tokens``."""
        return np.array([self.encode(text)], dtype=np.int32)

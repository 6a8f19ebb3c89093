"""The Turbo and Nano front end: GPT-2's byte-level BPE with the paralinguistic tags."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import TextError
from .normalize import punc_norm

TURBO_TAGS = (
    "[laugh]", "[chuckle]", "[sigh]", "[gasp]", "[cough]", "[clear throat]", "[sniff]",
    "[groan]", "[shush]", "[whispering]", "[angry]", "[happy]", "[sarcastic]", "[surprised]",
    "[fear]", "[crying]", "[dramatic]", "[narration]", "[advertisement]",
)  # fmt: skip


class TurboTokenizer:
    """GPT-2 byte-level BPE from ``vocab.json`` + ``merges.txt`` + ``added_tokens.json``,
    encoding exactly as transformers' ``GPT2TokenizerFast`` built from those files."""

    def __init__(self, directory: str | Path):
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

        directory = Path(directory)
        missing = [f for f in ("vocab.json", "merges.txt") if not (directory / f).is_file()]
        if missing:
            raise FileNotFoundError(f"GPT-2 tokenizer files missing in {directory}: {missing}")
        tokenizer_json = directory / "tokenizer.json"
        if tokenizer_json.is_file():
            self.tokenizer = Tokenizer.from_file(str(tokenizer_json))
        else:
            bpe = models.BPE.from_file(
                str(directory / "vocab.json"), str(directory / "merges.txt"), fuse_unk=False
            )
            self.tokenizer = Tokenizer(bpe)
            self.tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            self.tokenizer.decoder = decoders.ByteLevel()
        added_path = directory / "added_tokens.json"
        if added_path.is_file():
            added = json.loads(added_path.read_text(encoding="utf-8"))
            for content, token_id in sorted(added.items(), key=lambda kv: kv[1]):
                if self.tokenizer.token_to_id(content) is None:
                    self.tokenizer.add_tokens([AddedToken(content, normalized=True)])
                if self.tokenizer.token_to_id(content) != token_id:
                    raise TextError(
                        f"{added_path}: token {content!r} should have id {token_id}, "
                        f"got {self.tokenizer.token_to_id(content)}"
                    )

    framed = False  # T3 reads the ids as they are

    @classmethod
    def from_dir(cls, directory: str | Path) -> TurboTokenizer:
        return cls(directory)

    def t3_ids(self, text: str, language_id: str | None = None) -> list[int]:
        """What T3 reads of ``text``: Turbo's ``punc_norm``, then the GPT-2 ids."""
        return self.encode(punc_norm(text, "turbo"))

    def __len__(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        return self.tokenizer.decode(list(map(int, ids)), skip_special_tokens=False)

    def text_to_tokens(self, text: str) -> np.ndarray:
        return np.array([self.encode(text)], dtype=np.int32)

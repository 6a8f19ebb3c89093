"""Synthetic tokenizer files with the real files' formats (the real ones need the hub).

Used both here and in the reference venv (only needs `tokenizers`), so the golden
script and the tests encode with identical files. Built by construction, no training:
the same bytes every time.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

SPECIALS = ["[STOP]", "[UNK]", "[SPACE]", "[START]", "[PAD]", "[SEP]", "[CLS]", "[MASK]"]
LANGS = (
    "ar da de el en es fi fr he hi it ja ko ms nl no pl pt ru sv sw tr zh".split()
)  # fmt: skip
TURBO_TAGS = [
    "[laugh]", "[chuckle]", "[sigh]", "[gasp]", "[cough]", "[clear throat]", "[sniff]",
    "[groan]", "[shush]", "[whispering]", "[angry]", "[happy]", "[sarcastic]", "[surprised]",
    "[fear]", "[crying]", "[dramatic]", "[narration]", "[advertisement]",
]  # fmt: skip

# Characters of the test sentences in every script (after lowercase + NFKD).
SCRIPTS = [
    (0x20, 0x7F),  # ASCII
    (0xC0, 0x250),  # Latin-1 + Latin Extended
    (0x300, 0x370),  # combining diacritics (NFKD output)
    (0x370, 0x400),  # Greek
    (0x400, 0x500),  # Cyrillic
    (0x590, 0x600),  # Hebrew
    (0x600, 0x700),  # Arabic
    (0x900, 0x980),  # Devanagari
    (0x1100, 0x1200),  # Hangul Jamo
    (0x3000, 0x3100),  # CJK punctuation, hiragana, katakana
    (0xFF00, 0xFF20),  # full-width punctuation
]

MERGES_EN = [("t", "h"), ("th", "e"), ("i", "n"), ("a", "n"), ("e", "r"), ("o", "n"), ("r", "e")]


def _bpe_json(chars: list[str], extra_tokens: list[str], merges) -> Tokenizer:
    """Ids as in the real files: [STOP]=0, [UNK]=1, [SPACE]=2 and [START]=255 (the ids
    T3Config uses), the other specials after it."""
    ordinary = [t for t in extra_tokens + chars if t not in SPECIALS]
    ordinary += [a + b for a, b in merges]
    vocab = {"[STOP]": 0, "[UNK]": 1, "[SPACE]": 2}
    rest = iter(dict.fromkeys(ordinary))
    while len(vocab) < 255:
        vocab[next(rest, f"[unused{len(vocab)}]")] = len(vocab)
    vocab["[START]"] = 255
    for tok in [*SPECIALS[4:], *rest]:
        vocab.setdefault(tok, len(vocab))
    model = models.BPE(vocab=vocab, merges=list(merges), unk_token="[UNK]")
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens([AddedToken(t, special=True) for t in SPECIALS + extra_tokens])
    return tokenizer


def write_english_tokenizer(path: str | Path) -> Path:
    chars = [chr(c) for c in range(0x21, 0x7F)]
    tokenizer = _bpe_json(chars, [], MERGES_EN)
    tokenizer.save(str(path))
    return Path(path)


def write_mtl_tokenizer(path: str | Path) -> Path:
    chars = [chr(c) for lo, hi in SCRIPTS for c in range(lo, hi) if not chr(c).isspace()]
    extra = [f"[{lang}]" for lang in LANGS] + [f"[cj_{c}]" for c in "abcdefghijklmnopqrstuvwxyz."]
    tokenizer = _bpe_json(chars, extra, MERGES_EN)
    tokenizer.save(str(path))
    return Path(path)


def write_cangjie(path: str | Path) -> Path:
    """A few ``"glyph\\tcode"`` entries in Cangjie5_TC.json's format, with a shared code."""
    entries = ["我\thqi", "爱\tbbpe", "北\tlmp", "京\tyrf", "天\tmk", "安\tjv", "门\tlse",
               "你\tonf", "好\tvnd", "中\tl", "文\tyk", "今\toin", "日\ta", "曰\ta"]  # fmt: skip
    Path(path).write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    return Path(path)


def write_gpt2_tokenizer(directory: str | Path) -> Path:
    """vocab.json / merges.txt / added_tokens.json / special_tokens_map.json /
    tokenizer_config.json: a byte-level BPE with 256 byte symbols, a few merges and the
    19 Turbo tags appended after the base vocabulary (as in chatterbox-turbo)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    byte_symbols = pre_tokenizers.ByteLevel.alphabet()
    vocab = {sym: i for i, sym in enumerate(sorted(byte_symbols))}
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("e", "r"), ("o", "u")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab["<|endoftext|>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (directory / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )
    added = {tag: len(vocab) + i for i, tag in enumerate(TURBO_TAGS)}
    (directory / "added_tokens.json").write_text(json.dumps(added), encoding="utf-8")
    eos = "<|endoftext|>"
    (directory / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": eos, "eos_token": eos, "unk_token": eos})
    )
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "GPT2Tokenizer",
                "add_prefix_space": False,
                "bos_token": eos,
                "eos_token": eos,
                "unk_token": eos,
                "model_max_length": 1024,
            }
        )
    )
    return directory

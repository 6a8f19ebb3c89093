"""Text front-ends: punctuation clean-up and tokenizers for every variant.

Each variant keeps upstream's own ``punc_norm`` (they differ) and tokenizer:
- English: a `tokenizers` BPE (``tokenizer.json``), spaces become ``[SPACE]``,
  framed by ``[START]`` / ``[STOP]``.
- Multilingual: the grapheme tokenizer (``grapheme_mtl_merged_expanded_v1.json``)
  after lowercase -> NFKD -> a per-language step -> ``[lang]`` prefix.
- Turbo / Nano: GPT-2 byte-level BPE plus 19 paralinguistic tags, no framing.

Turbo's paralinguistic tags, written in the text as they are: ``[laugh]``,
``[chuckle]``, ``[sigh]``, ``[cough]``, ``[gasp]``, ``[groan]``, ``[sniff]``, ``[shush]``,
``[clear throat]`` (and, in the tokenizer too, ``[whispering]``, ``[angry]``,
``[happy]``, ``[sarcastic]``, ``[surprised]``, ``[fear]``, ``[crying]``, ``[dramatic]``,
``[narration]``, ``[advertisement]``). Each reaches T3 as the single added token
upstream's tokenizer gives it, also with no space around it (``word[laugh]word``); the
tags are lowercase and exact: ``[Laugh]`` is plain text. The other variants' tokenizers
have no such tokens and read the brackets as text.

Pause tags, in every variant: ``[pause:500ms]``, ``[pause:1.5s]``, ``[pause:2 s]``
insert that much silence; the text on each side is synthesized separately (never across
a pause). Grammar: ``[pause:`` + a decimal number (``500``, ``1.5``, ``.5``) + ``ms`` or
``s`` + ``]``; case-insensitive, spaces allowed around ``:`` and the number; more than 0
and at most 10 s; adjacent pauses add up. A bracket starting with ``pause`` in any
other form (``[pause]``, ``[pause:abc]``, ``[pause:-1s]``, a number without a unit,
over 10 s, no closing ``]``) is a TextError naming it (``parse_pauses``, ``plan_text``).

Long text (``chunk_text``, ``plan_text``): text within the chunk limit goes to the
tokenizer exactly as given; longer text is sliced at sentence ends (see ``chunk_text``).
``check_text`` refuses empty, over-long or unencodable text (lone surrogates) with a
message naming where it came from.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

SOT = "[START]"
EOT = "[STOP]"
UNK = "[UNK]"
SPACE = "[SPACE]"

SUPPORTED_LANGUAGES = {
    "ar": "Arabic",
    "da": "Danish",
    "de": "German",
    "el": "Greek",
    "en": "English",
    "es": "Spanish",
    "fi": "Finnish",
    "fr": "French",
    "he": "Hebrew",
    "hi": "Hindi",
    "it": "Italian",
    "ja": "Japanese",
    "ko": "Korean",
    "ms": "Malay",
    "nl": "Dutch",
    "no": "Norwegian",
    "pl": "Polish",
    "pt": "Portuguese",
    "ru": "Russian",
    "sv": "Swedish",
    "sw": "Swahili",
    "tr": "Turkish",
    "zh": "Chinese",
}

TURBO_TAGS = (
    "[laugh]", "[chuckle]", "[sigh]", "[gasp]", "[cough]", "[clear throat]", "[sniff]",
    "[groan]", "[shush]", "[whispering]", "[angry]", "[happy]", "[sarcastic]", "[surprised]",
    "[fear]", "[crying]", "[dramatic]", "[narration]", "[advertisement]",
)  # fmt: skip

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


class TextError(ValueError):
    """Text that cannot be synthesized (empty, or not encodable)."""


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


def _load_tokenizer(path: str | Path):
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


def _encode_graphemes(tokenizer, unk_id: int | None, text: str, strict: bool) -> list[int]:
    """The grapheme tokenizers' ids, spaces as ``[SPACE]``; ``strict`` refuses ``[UNK]``."""
    ids = tokenizer.encode(text.replace(" ", SPACE)).ids
    if strict:
        _check_unknown(tokenizer, ids, unk_id, text)
    return ids


def _decode_graphemes(tokenizer, ids) -> str:
    text = tokenizer.decode(list(map(int, ids)), skip_special_tokens=False)
    return text.replace(" ", "").replace(SPACE, " ").replace(EOT, "").replace(UNK, "")


class EnTokenizer:
    """English: ``[SPACE]`` for spaces, then the BPE (upstream ``EnTokenizer``)."""

    def __init__(self, path: str | Path):
        self.tokenizer = _load_tokenizer(path)
        vocab = self.tokenizer.get_vocab()
        self.unk_id = vocab.get(UNK)
        self.sot_id = vocab[SOT]
        self.eot_id = vocab[EOT]

    def encode(self, text: str, strict: bool = False) -> list[int]:
        """Ids of ``text``; ``strict`` refuses characters that would become ``[UNK]``."""
        return _encode_graphemes(self.tokenizer, self.unk_id, text, strict)

    def decode(self, ids) -> str:
        return _decode_graphemes(self.tokenizer, ids)

    def text_to_tokens(self, text: str) -> np.ndarray:
        """``[1, N]`` int32 ids, as upstream's ``text_to_tokens``."""
        return np.array([self.encode(text)], dtype=np.int32)


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

    def __len__(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        return self.tokenizer.decode(list(map(int, ids)), skip_special_tokens=False)

    def text_to_tokens(self, text: str) -> np.ndarray:
        return np.array([self.encode(text)], dtype=np.int32)


# ---- multilingual language steps ------------------------------------------------------

# Module -> how to get it. Each is needed for one language only.
_OPTIONAL_EXTRAS = {
    "pykakasi": "pip install 'chatterbox-mlx[ja]'",
    "spacy_pkuseg": "pip install 'chatterbox-mlx[zh]'",
    "dicta_onnx": "pip install 'chatterbox-mlx[he]'",
    "russian_text_stresser": "install russian_text_stresser from its source (not on PyPI)",
}
_warned: set[str] = set()


def _warn_missing(module: str, what: str) -> None:
    if module not in _warned:
        _warned.add(module)
        logger.warning(
            "%s is not installed, so %s is skipped (as upstream does); to enable it: %s",
            module,
            what,
            _OPTIONAL_EXTRAS[module],
        )


def _is_kanji(c: str) -> bool:
    return 19968 <= ord(c) <= 40959


def _is_katakana(c: str) -> bool:
    return 12449 <= ord(c) <= 12538


_kakasi = None


def hiragana_normalize(text: str) -> str:
    """Japanese: kanji phrases to hiragana, katakana kept, then NFKD (upstream)."""
    global _kakasi
    try:
        import pykakasi
    except ImportError:
        _warn_missing("pykakasi", "Japanese kanji-to-hiragana conversion")
        return text
    if _kakasi is None:
        _kakasi = pykakasi.kakasi()
    out = []
    for part in _kakasi.convert(text):
        orig, hira = part["orig"], part["hira"]
        if any(_is_kanji(c) for c in orig):
            if hira and hira[0] in ("は", "へ"):
                hira = " " + hira
            out.append(hira)
        else:
            out.append(orig)  # katakana and everything else unchanged
    return unicodedata.normalize("NFKD", "".join(out))


def korean_normalize(text: str) -> str:
    """Korean: Hangul syllables to conjoining Jamo (upstream's arithmetic decomposition)."""

    def decompose(char: str) -> str:
        if not ("\uac00" <= char <= "\ud7af"):
            return char
        base = ord(char) - 0xAC00
        initial = chr(0x1100 + base // (21 * 28))
        medial = chr(0x1161 + (base % (21 * 28)) // 28)
        final = chr(0x11A7 + base % 28) if base % 28 > 0 else ""
        return initial + medial + final

    return "".join(decompose(c) for c in text).strip()


def add_hebrew_diacritics(text: str) -> str:
    try:
        from dicta_onnx import Dicta
    except ImportError:
        _warn_missing("dicta_onnx", "Hebrew diacritization")
        return text
    try:
        return Dicta().add_diacritics(text)
    except Exception as err:  # upstream logs and falls back, so do we
        logger.warning("Hebrew diacritization failed: %s", err)
        return text


def add_russian_stress(text: str) -> str:
    try:
        from russian_text_stresser.text_stresser import RussianTextStresser
    except ImportError:
        _warn_missing("russian_text_stresser", "Russian stress marking")
        return text
    try:
        return RussianTextStresser().stress_text(text)
    except Exception as err:
        logger.warning("Russian stress labeling failed: %s", err)
        return text


def _default_segmenter() -> Callable[[str], list[str]] | None:
    try:
        from spacy_pkuseg import pkuseg
    except ImportError:
        _warn_missing("spacy_pkuseg", "Chinese word segmentation")
        return None
    try:
        return pkuseg().cut
    except Exception as err:  # its model is downloaded on first use
        logger.warning("Chinese word segmentation unavailable (%s); skipping it.", err)
        return None


class CangjieConverter:
    """Chinese: optional word segmentation, then each CJK letter becomes its Cangjie
    code as ``[cj_x]`` tokens closed by ``[cj_.]`` (upstream ``ChineseCangjieConverter``)."""

    def __init__(self, mapping_path: str | Path | None, segmenter="default"):
        self.word2cj: dict[str, str] = {}
        self.cj2word: dict[str, list[str]] = {}
        if mapping_path is not None and Path(mapping_path).is_file():
            entries = json.loads(Path(mapping_path).read_text(encoding="utf-8"))
            for entry in entries:
                word, code = entry.split("\t")[:2]
                self.word2cj[word] = code
                self.cj2word.setdefault(code, []).append(word)
        else:
            logger.warning(
                "Cangjie mapping %s not found; Chinese text is not converted.", mapping_path
            )
        self.segment = _default_segmenter() if segmenter == "default" else segmenter

    def _encode_glyph(self, glyph: str) -> str | None:
        code = self.word2cj.get(glyph)
        if code is None:
            return None
        index = self.cj2word[code].index(glyph)
        return code + (str(index) if index > 0 else "")

    def __call__(self, text: str) -> str:
        if self.segment is not None:
            text = " ".join(self.segment(text))
        out = []
        for char in text:
            code = self._encode_glyph(char) if unicodedata.category(char) == "Lo" else None
            if code is None:
                out.append(char)
            else:
                out.append("".join(f"[cj_{c}]" for c in code) + "[cj_.]")
        return "".join(out)


def check_language(language_id: str | None) -> str:
    if not language_id or language_id.lower() not in SUPPORTED_LANGUAGES:
        raise TextError(
            f"unsupported language_id {language_id!r}; supported: " + ", ".join(SUPPORTED_LANGUAGES)
        )
    return language_id.lower()


class MTLTokenizer:
    """The multilingual grapheme tokenizer with upstream's per-language steps."""

    def __init__(
        self, path: str | Path, cangjie_path: str | Path | None = None, segmenter="default"
    ):
        self.tokenizer = _load_tokenizer(path)
        vocab = self.tokenizer.get_vocab()
        self.unk_id = vocab.get(UNK)
        self.sot_id = vocab[SOT]
        self.eot_id = vocab[EOT]
        if cangjie_path is None:
            cangjie_path = Path(path).parent / "Cangjie5_TC.json"
        self._cangjie_args = (cangjie_path, segmenter)
        self._cangjie: CangjieConverter | None = None

    def cangjie(self, text: str) -> str:
        if self._cangjie is None:  # built on first Chinese text only
            self._cangjie = CangjieConverter(*self._cangjie_args)
        return self._cangjie(text)

    def preprocess(self, text: str, language_id: str, lowercase=True, nfkd=True) -> str:
        if lowercase:
            text = text.lower()
        if nfkd:
            text = unicodedata.normalize("NFKD", text)
        step = {
            "zh": self.cangjie,
            "ja": hiragana_normalize,
            "he": add_hebrew_diacritics,
            "ko": korean_normalize,
            "ru": add_russian_stress,
        }.get(language_id)
        if step is not None:
            text = step(text)
        return f"[{language_id}]{text}"

    def encode(
        self, text: str, language_id: str, lowercase=True, nfkd=True, strict=False
    ) -> list[int]:
        language_id = check_language(language_id)
        text = self.preprocess(text, language_id, lowercase, nfkd)
        return _encode_graphemes(self.tokenizer, self.unk_id, text, strict)

    def decode(self, ids) -> str:
        return _decode_graphemes(self.tokenizer, ids)

    def text_to_tokens(self, text: str, language_id: str) -> np.ndarray:
        return np.array([self.encode(text, language_id)], dtype=np.int32)


# ---- checking, pause tags and long text ----------------------------------------------


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

"""The Multilingual front end: upstream's ``MTLTokenizer`` with its per-language steps
(Japanese kana, Korean jamo, Hebrew diacritics, Russian stress, Chinese Cangjie)."""

from __future__ import annotations

import json
import logging
import unicodedata
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import TextError
from .graphemes import decode_graphemes, encode_graphemes, load_tokenizer
from .normalize import EOT, SOT, UNK, punc_norm

logger = logging.getLogger(__name__)

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
        self.tokenizer = load_tokenizer(path)
        vocab = self.tokenizer.get_vocab()
        self.unk_id = vocab.get(UNK)
        self.sot_id = vocab[SOT]
        self.eot_id = vocab[EOT]
        if cangjie_path is None:
            cangjie_path = Path(path).parent / "Cangjie5_TC.json"
        self._cangjie_args = (cangjie_path, segmenter)
        self._cangjie: CangjieConverter | None = None

    framed = True  # T3 reads [start text token, *ids, stop text token]

    @classmethod
    def from_dir(cls, directory: str | Path) -> MTLTokenizer:
        return cls(Path(directory) / "grapheme_mtl_merged_expanded_v1.json")

    def t3_ids(self, text: str, language_id: str | None) -> list[int]:
        """What T3 reads of ``text``: the multilingual ``punc_norm``, then strict ids."""
        return self.encode(punc_norm(text, "multilingual"), language_id, strict=True)

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
        return encode_graphemes(self.tokenizer, self.unk_id, text, strict)

    def decode(self, ids) -> str:
        return decode_graphemes(self.tokenizer, ids)

    def text_to_tokens(self, text: str, language_id: str) -> np.ndarray:
        return np.array([self.encode(text, language_id)], dtype=np.int32)

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

from .chunking import chunk_text, plan_text
from .english import EnTokenizer
from .errors import TextError
from .multilingual import (
    SUPPORTED_LANGUAGES,
    CangjieConverter,
    MTLTokenizer,
    add_hebrew_diacritics,
    add_russian_stress,
    check_language,
    hiragana_normalize,
    korean_normalize,
)
from .normalize import EOT, SOT, SPACE, UNK, check_text, punc_norm
from .pauses import MAX_PAUSE_S, PAUSE_FORMS, Pause, parse_pauses
from .turbo import TURBO_TAGS, TurboTokenizer

# Every front end has ``from_dir(checkpoint_dir)``, ``t3_ids(text, language_id)`` (what T3
# reads: upstream's punc_norm for that front end, then its tokenizer) and ``framed`` (whether
# T3 puts its start and stop text tokens around those ids).
FRONT_ENDS = {"english": EnTokenizer, "multilingual": MTLTokenizer, "turbo": TurboTokenizer}


def load_front_end(name: str, directory):
    """The text front end ``name`` (a variant's ``text_frontend``) from a checkpoint folder."""
    return FRONT_ENDS[name].from_dir(directory)


__all__ = [
    "CangjieConverter",
    "EOT",
    "EnTokenizer",
    "FRONT_ENDS",
    "MAX_PAUSE_S",
    "MTLTokenizer",
    "PAUSE_FORMS",
    "Pause",
    "SOT",
    "SPACE",
    "SUPPORTED_LANGUAGES",
    "TURBO_TAGS",
    "TextError",
    "TurboTokenizer",
    "UNK",
    "add_hebrew_diacritics",
    "add_russian_stress",
    "check_language",
    "check_text",
    "chunk_text",
    "hiragana_normalize",
    "korean_normalize",
    "load_front_end",
    "parse_pauses",
    "plan_text",
    "punc_norm",
]

"""Goldens for the text front-ends: upstream punc_norm of each variant and token ids of
the English, multilingual (all 23 languages) and Turbo tokenizers, on synthetic
tokenizer files with the real formats (tests/helpers/tokenizer_files.py); Turbo's
paralinguistic tags in sentences; texts that a pipeline hands over whole (quotes,
brackets, ellipses, CJK punctuation) and the pieces around pause tags.

Run: .refenv/bin/python tests/reference/gen_text.py
"""

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import chatterbox.models.tokenizers.tokenizer as ref_tok  # noqa: E402
from chatterbox import mtl_tts, tts, tts_turbo  # noqa: E402
from common import save_golden  # noqa: E402

from tests.helpers import tokenizer_files as tf  # noqa: E402

PUNC_CASES = [
    "", "hello world", "Wait... what?  Really…", "A: b; c - d — e – f , g",
    "“Quoted” and ‘single’", "No ending", "Ends with comma,", "你好。", "你好，",
    "  lots   of\tspace  ", "ok?!", "Dash at end -",
]  # fmt: skip

SENTENCES = {
    "ar": "مرحبا بالعالم، كيف حالك؟",
    "da": "Hej verden, hvordan går det?",
    "de": "Größere Häuser über der Straße.",
    "el": "Γειά σου κόσμε, τι κάνεις;",
    "en": "Hello there, how are you today?",
    "es": "¿Dónde está la biblioteca? ¡Allí!",
    "fi": "Hyvää päivää, mitä kuuluu?",
    "fr": "Ça va très bien, merci à vous.",
    "he": "שלום עולם, מה שלומך?",
    "hi": "नमस्ते दुनिया, आप कैसे हैं?",
    "it": "Però è già così, perché no?",
    "ja": "日本語の文章です。カタカナもあります。",
    "ko": "안녕하세요 세계, 잘 지내요?",
    "ms": "Selamat pagi, apa khabar?",
    "nl": "Hoe gaat het met je vandaag?",
    "no": "Hvordan går det med deg? Blåbær.",
    "pl": "Zażółć gęślą jaźń, proszę.",
    "pt": "Não há ação sem coração.",
    "ru": "Привет, мир! Как дела?",
    "sv": "Hur mår du? Åsa äter ärtor.",
    "sw": "Habari ya asubuhi, rafiki yangu.",
    "tr": "Günaydın, nasılsınız? İyiyim.",
    "zh": "我爱北京天安门，今日你好。",
}

ENGLISH_CASES = ["Hello world.", "The weather is nice, isn't it?", "Numbers 123 and ~weird~ chars!"]
TURBO_CASES = [
    "Hello there.", "Oh, that's hilarious! [chuckle] Anyway.", "[clear throat] Ahem, the end.",
    "Unicode: café — naïve.", "  spaces   inside  ",
]  # fmt: skip

# Turbo's paralinguistic tags in sentences: each must reach T3 as its one added token.
TURBO_TAG_CASES = [
    "[laugh] That was the best joke I have heard all week.",
    "Oh, that's hilarious! [chuckle] Anyway, back to work.",
    "I suppose we have to start again. [sigh]",
    "Excuse me, [cough] the next slide please.",
    "[gasp] You found it!",
    "Monday again [groan] already.",
    "It smells like rain [sniff] outside.",
    "Quiet now, [shush] the baby is asleep.",
    "[clear throat] Ladies and gentlemen, welcome.",
    "Two tags[laugh][chuckle]together and inside words[sigh]too.",
    "A [Laugh] with a capital is plain text, as is [giggle].",
    "No tags at all in this sentence, just words.",
]
# Texts a pipeline gets whole (shorter than a chunk): upstream tokenizes them as given.
CHUNK_CASES = [
    'She said "Yes." Then she left!',
    "He paused (briefly.) Then: 'Go on...' she said. Wait... what?",
    "今天天气很好。欢迎收听每周新闻！",
    "Line one.\n\nLine two after a blank line.",
]
# The text pieces around pause tags (see PAUSE_TEXT in tests/test_text.py).
PAUSE_PIECES = ["Hello there.", "And now, after a pause, the rest [laugh] of it."]


class HalfSegmenter:
    """Deterministic stand-in for pkuseg (its model needs a download): words of 2 chars."""

    def cut(self, text):
        return [text[i : i + 2] for i in range(0, len(text), 2)]


def main():
    out = {}
    for variant, fn in (
        ("english", tts.punc_norm),
        ("turbo", tts_turbo.punc_norm),
        ("multilingual", mtl_tts.punc_norm),
    ):
        out[f"punc_{variant}"] = json.dumps([fn(t) for t in PUNC_CASES], ensure_ascii=False)
    out["punc_cases"] = json.dumps(PUNC_CASES, ensure_ascii=False)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        en = ref_tok.EnTokenizer(str(tf.write_english_tokenizer(tmp / "tokenizer.json")))
        out["english"] = json.dumps({t: en.encode(tts.punc_norm(t)) for t in ENGLISH_CASES})

        mtl_path = tf.write_mtl_tokenizer(tmp / "grapheme_mtl_merged_expanded_v1.json")
        cangjie = tf.write_cangjie(tmp / "Cangjie5_TC.json")
        ref_tok.hf_hub_download = lambda **kw: str(cangjie)  # no hub: the local mapping
        results = {}
        for seg_name, segmenter in (("none", None), ("half", HalfSegmenter())):
            ref_tok.ChineseCangjieConverter._init_segmenter = lambda self, s=segmenter: setattr(
                self, "segmenter", s
            )
            mtl = ref_tok.MTLTokenizer(str(mtl_path))
            for lang, sentence in SENTENCES.items():
                if seg_name == "half" and lang != "zh":
                    continue
                text = mtl_tts.punc_norm(sentence)
                results[f"{lang}/{seg_name}"] = mtl.encode(text, language_id=lang)
        out["multilingual"] = json.dumps(results)
        out["sentences"] = json.dumps(SENTENCES, ensure_ascii=False)

        from transformers import AutoTokenizer

        gpt2 = AutoTokenizer.from_pretrained(str(tf.write_gpt2_tokenizer(tmp / "turbo")))
        out["turbo_len"] = len(gpt2)
        out["turbo"] = json.dumps({t: gpt2(tts_turbo.punc_norm(t)).input_ids for t in TURBO_CASES})
        turbo_ids = {
            t: gpt2(tts_turbo.punc_norm(t)).input_ids
            for t in TURBO_TAG_CASES + CHUNK_CASES + PAUSE_PIECES
        }
        out["turbo_tags"] = json.dumps(turbo_ids, ensure_ascii=False)
        out["turbo_tag_ids"] = json.dumps({t: gpt2.convert_tokens_to_ids(t) for t in tf.TURBO_TAGS})
        out["chunk_english"] = json.dumps(
            {t: en.encode(tts.punc_norm(t)) for t in CHUNK_CASES + PAUSE_PIECES}, ensure_ascii=False
        )
        # no word segmentation, as the tests' MTLTokenizer(segmenter=None)
        ref_tok.ChineseCangjieConverter._init_segmenter = lambda self: setattr(
            self, "segmenter", None
        )
        mtl = ref_tok.MTLTokenizer(str(mtl_path))
        out["chunk_multilingual"] = json.dumps(
            {
                f"{lang}/{t}": mtl.encode(mtl_tts.punc_norm(t), language_id=lang)
                for t in CHUNK_CASES
                for lang in ("en", "zh")
            },
            ensure_ascii=False,
        )
    out["english_cases"] = json.dumps(ENGLISH_CASES)
    out["turbo_cases"] = json.dumps(TURBO_CASES)
    out["turbo_tag_cases"] = json.dumps(TURBO_TAG_CASES)
    out["chunk_cases"] = json.dumps(CHUNK_CASES, ensure_ascii=False)
    out["pause_pieces"] = json.dumps(PAUSE_PIECES)
    save_golden(
        "text",
        out,
        "tests/reference/gen_text.py",
        notes="pykakasi installed in the refenv for ja; pkuseg replaced by a 2-char "
        "segmenter (its model needs a download); Cangjie from the synthetic mapping",
    )


if __name__ == "__main__":
    main()

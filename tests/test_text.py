"""Text front-ends against upstream's (goldens from tests/reference/gen_text.py).

Token ids must be identical; the tokenizer files are synthetic with the real formats."""

import json

from chatterbox_mlx import text as T

import pytest

from tests.helpers import tokenizer_files as tf
from tests.helpers.golden import load_golden

GOLDEN = load_golden("text")


def _json(key):
    return json.loads(str(GOLDEN[key]))


@pytest.mark.parametrize("variant", ["english", "turbo", "multilingual"])
def test_punc_norm_matches_upstream(variant):
    cases = _json("punc_cases")
    assert [T.punc_norm(c, variant) for c in cases] == _json(f"punc_{variant}")


def test_english_tokenizer_ids(tmp_path):
    tok = T.EnTokenizer(tf.write_english_tokenizer(tmp_path / "tokenizer.json"))
    for text, ids in _json("english").items():
        assert tok.encode(T.punc_norm(text, "english")) == ids, text


def test_english_decode_round_trip(tmp_path):
    tok = T.EnTokenizer(tf.write_english_tokenizer(tmp_path / "tokenizer.json"))
    text = "The weather, in another town."
    assert tok.decode(tok.encode(text)) == text


def test_turbo_tokenizer_ids(tmp_path):
    tok = T.TurboTokenizer(tf.write_gpt2_tokenizer(tmp_path / "turbo"))
    assert len(tok) == int(GOLDEN["turbo_len"])
    for text, ids in _json("turbo").items():
        assert tok.encode(T.punc_norm(text, "turbo")) == ids, text


class HalfSegmenter:
    def __call__(self, text):
        return [text[i : i + 2] for i in range(0, len(text), 2)]


@pytest.fixture(scope="module")
def mtl_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("mtl")
    tf.write_mtl_tokenizer(d / "grapheme_mtl_merged_expanded_v1.json")
    tf.write_cangjie(d / "Cangjie5_TC.json")
    return d


@pytest.mark.parametrize("lang", list(T.SUPPORTED_LANGUAGES))
def test_multilingual_ids_every_language(mtl_dir, lang):
    expected = _json("multilingual")
    sentence = _json("sentences")[lang]
    tok = T.MTLTokenizer(mtl_dir / "grapheme_mtl_merged_expanded_v1.json", segmenter=None)
    assert tok.encode(T.punc_norm(sentence, "multilingual"), lang) == expected[f"{lang}/none"]


def test_chinese_with_word_segmentation(mtl_dir):
    tok = T.MTLTokenizer(
        mtl_dir / "grapheme_mtl_merged_expanded_v1.json", segmenter=HalfSegmenter()
    )
    sentence = _json("sentences")["zh"]
    assert (
        tok.encode(T.punc_norm(sentence, "multilingual"), "zh") == _json("multilingual")["zh/half"]
    )


def test_unknown_language_lists_supported(mtl_dir):
    tok = T.MTLTokenizer(mtl_dir / "grapheme_mtl_merged_expanded_v1.json", segmenter=None)
    with pytest.raises(T.TextError, match="supported: ar, da"):
        tok.encode("hello", "xx")
    with pytest.raises(T.TextError, match="unsupported language_id None"):
        tok.encode("hello", None)


def test_unencodable_characters_named(tmp_path):
    tok = T.EnTokenizer(tf.write_english_tokenizer(tmp_path / "tokenizer.json"))
    with pytest.raises(T.TextError, match="cannot encode '☃'"):
        tok.encode("snowman ☃", strict=True)
    assert tok.unk_id in tok.encode("snowman ☃")  # upstream behaviour when not strict


def test_missing_tokenizer_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer file not found"):
        T.EnTokenizer(tmp_path / "nope.json")


def test_chunk_text_keeps_sentences_and_limit():
    text = "First sentence here. Second one follows! A third? " * 40
    chunks = T.chunk_text(text, max_chars=120)
    assert all(len(c) <= 120 for c in chunks)
    assert " ".join(chunks) == " ".join(text.split())
    assert all(c.endswith((".", "!", "?")) for c in chunks)


def test_chunk_text_splits_overlong_sentence():
    text = "word, " * 200 + "end."
    chunks = T.chunk_text(text, max_chars=50)
    assert all(len(c) <= 50 for c in chunks)
    assert "".join(chunks).replace(" ", "") == text.replace(" ", "")


def test_chunk_text_handles_100k_characters():
    text = "This is a moderately long sentence for testing. " * 2100
    assert len(text) > 100_000
    chunks = T.chunk_text(text, max_chars=300)
    assert sum(len(c) for c in chunks) + len(chunks) - 1 == len(" ".join(text.split()))


def test_chunk_text_rejects_empty():
    with pytest.raises(T.TextError, match="empty"):
        T.chunk_text("   \n ")

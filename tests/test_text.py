"""Text front-ends against upstream's (goldens from tests/reference/gen_text.py).

Token ids must be identical; the tokenizer files are synthetic with the real formats."""

import json
import random

from chatterbox_mlx import text as T

import pytest

from tests.helpers import tokenizer_files as tf
from tests.helpers.golden import load_golden

GOLDEN = load_golden("text")


def _json(key):
    return json.loads(str(GOLDEN[key]))


@pytest.mark.golden
@pytest.mark.parametrize("variant", ["english", "turbo", "multilingual"])
def test_punc_norm_matches_upstream(variant):
    cases = _json("punc_cases")
    assert [T.punc_norm(c, variant) for c in cases] == _json(f"punc_{variant}")


@pytest.mark.golden
def test_english_tokenizer_ids(tmp_path):
    tok = T.EnTokenizer(tf.write_english_tokenizer(tmp_path / "tokenizer.json"))
    for text, ids in _json("english").items():
        assert tok.encode(T.punc_norm(text, "english")) == ids, text


def test_english_decode_round_trip(tmp_path):
    tok = T.EnTokenizer(tf.write_english_tokenizer(tmp_path / "tokenizer.json"))
    text = "The weather, in another town."
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.golden
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


@pytest.mark.golden
@pytest.mark.parametrize("lang", list(T.SUPPORTED_LANGUAGES))
def test_multilingual_ids_every_language(mtl_dir, lang):
    expected = _json("multilingual")
    sentence = _json("sentences")[lang]
    tok = T.MTLTokenizer(mtl_dir / "grapheme_mtl_merged_expanded_v1.json", segmenter=None)
    assert tok.encode(T.punc_norm(sentence, "multilingual"), lang) == expected[f"{lang}/none"]


@pytest.mark.golden
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


# ---- chunking keeps what T3 reads ------------------------------------------------------

WHOLE = [
    'She said "Yes." Then she left!',
    "今天天气很好。欢迎收听每周新闻！",
    "He paused (briefly.) Then: 'Go on...' she said. Wait... what?",
    "  leading and trailing spaces, a tab\tand a newline\n",
    "Line one.\n\nLine two after a blank line.",
    "[clear throat] Ahem. [laugh] Done.",
    "x" * 300,
]


@pytest.mark.parametrize("text", WHOLE)
def test_text_that_fits_is_returned_whole_and_unchanged(text):
    chunks = T.chunk_text(text, 300)
    assert chunks == [text] and chunks[0] is text


@pytest.mark.golden
def test_whole_texts_tokenize_as_upstream(tmp_path, mtl_dir):
    """The texts upstream tokenizes whole reach our tokenizers as the one chunk, with
    the ids the reference gives the whole text (the issue's quote and CJK cases)."""
    english = T.EnTokenizer(tf.write_english_tokenizer(tmp_path / "tokenizer.json"))
    turbo = T.TurboTokenizer(tf.write_gpt2_tokenizer(tmp_path / "turbo"))
    mtl = T.MTLTokenizer(mtl_dir / "grapheme_mtl_merged_expanded_v1.json", segmenter=None)
    cases = _json("chunk_cases")
    assert 'She said "Yes." Then she left!' in cases and "今天天气很好。欢迎收听每周新闻！" in cases
    for text in cases:
        [chunk] = T.chunk_text(text, 300)
        assert english.encode(T.punc_norm(chunk, "english")) == _json("chunk_english")[text]
        assert turbo.encode(T.punc_norm(chunk, "turbo")) == _json("turbo_tags")[text]
        for lang in ("en", "zh"):
            ids = mtl.encode(T.punc_norm(chunk, "multilingual"), lang)
            assert ids == _json("chunk_multilingual")[f"{lang}/{text}"], (lang, text)


def _assert_slices(text, chunks, max_chars):
    """Each chunk is a slice of ``text``, within the limit, with no whitespace at its
    ends; only whitespace lies between consecutive chunks and around them."""
    pos = 0
    for chunk in chunks:
        assert 0 < len(chunk) <= max_chars
        assert chunk == chunk.strip()
        found = text.index(chunk, pos)
        assert text[pos:found].strip() == "", (text[pos:found], chunk)
        pos = found + len(chunk)
    assert text[pos:].strip() == ""


PIECES = ['She said "Yes."', "Then she left!", "(It was late.)", "Wait... what happened?",
          "今天天气很好。", "欢迎收听每周新闻！", "“Quoted,” he said.", "[laugh]",
          "[clear throat]", "a comma, then more,", "and words", "Really?!", "End…",
          "3.5 percent.", "\n\n", "\n"]  # fmt: skip


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("max_chars", [25, 60, 120, 300])
def test_long_text_is_cut_by_slicing(seed, max_chars):
    rng = random.Random(seed)
    text = " ".join(rng.choice(PIECES) for _ in range(300))
    chunks = T.chunk_text(text, max_chars)
    assert len(chunks) > 1
    _assert_slices(text, chunks, max_chars)


def test_cuts_keep_closing_quotes_and_brackets():
    text = 'She said "Yes." Then she left! (It was late.) ' * 20
    chunks = T.chunk_text(text, 50)
    _assert_slices(text, chunks, 50)
    assert all(c.endswith(('."', "!", ".)")) for c in chunks)
    assert not any(c.startswith(('"', ")")) for c in chunks)


def test_cjk_sentences_are_cut_without_adding_spaces():
    text = "今天天气很好。欢迎收听每周新闻！" * 20
    chunks = T.chunk_text(text, 40)
    assert "".join(chunks) == text
    assert all(len(c) <= 40 and c.endswith(("。", "！")) for c in chunks)


def test_ellipsis_before_lowercase_is_not_a_sentence_end():
    text = "Wait... what happened? " * 10
    assert T.chunk_text(text, 30) == ["Wait... what happened?"] * 10


def test_overlong_sentence_falls_back_to_commas_then_spaces_never_inside_tags():
    text = "first part, " * 10 + "then words without commas " * 8 + "[clear throat] " * 6
    chunks = T.chunk_text(text, 40)
    _assert_slices(text, chunks, 40)
    assert all(c.endswith(",") for c in chunks[:3])
    joined = " ".join(chunks)
    assert joined.count("[clear throat]") == 6  # never cut at its inner space
    hard = "x" * 1000
    assert T.chunk_text(hard, 300) == ["x" * 300] * 3 + ["x" * 100]


# ---- pause tags --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tag, seconds",
    [("[pause:500ms]", 0.5), ("[pause:1.5s]", 1.5), ("[pause:2s]", 2.0),
     ("[pause:250 ms]", 0.25), ("[PAUSE: .5 S]", 0.5), ("[ pause : 10s ]", 10.0),
     ("[pause:10000ms]", 10.0), ("[pause:1ms]", 0.001)],
)  # fmt: skip
def test_pause_grammar(tag, seconds):
    assert T.parse_pauses(f"Before. {tag} After.") == ["Before.", T.Pause(seconds), "After."]


@pytest.mark.parametrize(
    "tag",
    ["[pause:abc]", "[pause:-1s]", "[pause:500]", "[pause:20s]", "[pause:10001ms]",
     "[pause:0s]", "[pause]", "[pause:1,5s]", "[pause:1.5 sec]", "[pause:1s"],
)  # fmt: skip
def test_malformed_pause_tags_are_named(tag):
    with pytest.raises(T.TextError) as err:
        T.parse_pauses(f"Some text {tag} and more.")
    message = str(err.value)
    assert repr(tag) in message and "[pause:500ms], [pause:1.5s]" in message


def test_text_without_pause_tags_passes_through():
    text = "Oh! [laugh] A [bracket] and [clear throat] stay, as upstream tokenizes them."
    result = T.parse_pauses(text)
    assert result == [text] and result[0] is text


def test_pauses_split_text_and_add_up():
    assert T.parse_pauses("[pause:1s]Hi[pause:200ms] [pause:300ms] there.[pause:2s]") == [
        T.Pause(1.0), "Hi", T.Pause(0.5), "there.", T.Pause(2.0)]  # fmt: skip
    with pytest.raises(T.TextError, match="only pause tags"):
        T.plan_text("[pause:1s] [pause:2s]")


PAUSE_TEXT = "Hello there. [pause:1.5s] And now, after a pause, the rest [laugh] of it."


@pytest.mark.golden
def test_plan_never_crosses_a_pause_and_pieces_tokenize_as_upstream(tmp_path):
    plan = T.plan_text(PAUSE_TEXT)
    assert plan == [*_json("pause_pieces")[:1], T.Pause(1.5), *_json("pause_pieces")[1:]]
    turbo = T.TurboTokenizer(tf.write_gpt2_tokenizer(tmp_path / "turbo"))
    for piece in _json("pause_pieces"):
        assert turbo.encode(T.punc_norm(piece, "turbo")) == _json("turbo_tags")[piece]
    long = ("A first sentence here. " * 8) + "[pause:1s]" + (" Then the second part." * 8)
    plan = T.plan_text(long, 60)
    cut = plan.index(T.Pause(1.0))
    assert all(isinstance(p, str) and "first" in p for p in plan[:cut])
    assert all(isinstance(p, str) and "second" in p for p in plan[cut + 1 :])
    assert all(len(p) <= 60 for p in plan if isinstance(p, str))


# ---- Turbo's paralinguistic tags ---------------------------------------------------------


@pytest.mark.golden
def test_turbo_tags_are_single_tokens_as_upstream(tmp_path):
    turbo = T.TurboTokenizer(tf.write_gpt2_tokenizer(tmp_path / "turbo"))
    reference = _json("turbo_tag_ids")
    assert set(reference) == set(T.TURBO_TAGS)
    for tag, token_id in reference.items():
        assert turbo.encode(tag) == [token_id], tag
    for text in _json("turbo_tag_cases"):
        ids = turbo.encode(T.punc_norm(T.chunk_text(text)[0], "turbo"))
        assert ids == _json("turbo_tags")[text], text
        for tag in T.TURBO_TAGS:
            if tag in text:  # the tag's one id is in there
                assert reference[tag] in ids, (tag, text)


# ---- check_text ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, match",
    [("", "empty or only whitespace"), (" \n\t", "empty or only whitespace"),
     ("\ud800", r"invalid character U\+D800 at position 0 \(a lone surrogate"),
     ("ok \udcff", r"U\+DCFF at position 3"), (None, r"expected text \(a string\), got NoneType"),
     (b"bytes", "got bytes"), ("x" * 11, "11 characters, over the limit of 10")],
)  # fmt: skip
def test_check_text_names_the_problem_and_where(text, match):
    with pytest.raises(T.TextError, match=match) as err:
        T.check_text(text, "--text", max_chars=10)
    assert str(err.value).startswith("--text: ")


def test_check_text_returns_good_text_unchanged():
    text = "Fine text, [laugh] 今天。"
    assert T.check_text(text, "stdin", max_chars=len(text)) is text

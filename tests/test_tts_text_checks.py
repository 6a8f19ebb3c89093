"""Issue 15, library side: the whole text (every chunk, every text of a batch) is checked
before the first chunk's work begins.

Shared short-voice models of tests/conftest.py; T3 is stopped where it would start
(``stop_at_t3``)."""

from __future__ import annotations

from chatterbox_mlx import text as text_mod

import pytest

from tests.helpers.entry_points import ENTRIES, ReachedT3, assert_refused

pytestmark = pytest.mark.pipeline

# two chunks of at most 300 characters; only the second holds a character the English
# tokenizer cannot encode
LONG = "This first part is plain English and easy to encode. " * 6 + "A snowman ☃ waits."


@pytest.mark.parametrize("entry", ENTRIES)
def test_bad_character_in_a_later_chunk_refused_before_the_first(english, stop_at_t3, entry):
    chunks = text_mod.chunk_text(LONG, 300)
    assert len(LONG) > 300 and len(chunks) == 2
    assert "☃" not in chunks[0] and "☃" in chunks[1]
    stop_at_t3(english)
    assert_refused(english, entry, text_mod.TextError, "cannot encode '☃'", LONG,
                   max_new_tokens=3)  # fmt: skip


def test_batch_checks_every_text_before_the_first(english, stop_at_t3):
    stop_at_t3(english)
    try:
        english.generate_batch(["Hello there.", "A snowman ☃ waits."], max_new_tokens=3)
    except ReachedT3:
        pytest.fail(
            "generate_batch started T3 on its first text before it found that its second "
            "cannot be encoded: check every text (as every chunk) first"
        )
    except text_mod.TextError as err:
        assert "cannot encode '☃'" in str(err)
    else:
        pytest.fail("generate_batch accepted a text it cannot encode")

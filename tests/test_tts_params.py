"""Issue 15, library side: every entry point of every variant validates its generation
parameters (chatterbox_mlx.params) before any work, a stream when it is made; the
parameters a variant ignores are warned about.

Shared short-voice models of tests/conftest.py; T3 is stopped where it would start
(``stop_at_t3``), so no generation runs."""

from __future__ import annotations

import math
import re
import warnings

from chatterbox_mlx import text as text_mod
from chatterbox_mlx.params import ParameterError

import pytest

from tests.helpers.entry_points import (
    ENTRIES,
    LANGUAGE,
    TEXT,
    VARIANTS,
    ReachedT3,
    assert_refused,
    call,
)

pytestmark = pytest.mark.pipeline

CFG_VARIANTS = ("english", "multilingual")  # the others are the Turbo family


NAN, INF = math.nan, math.inf
BAD = [  # (parameter, value, fragment of the message)
    ("temperature", -1, "temperature must be > 0"),
    ("temperature", 0, "temperature must be > 0"),
    ("temperature", NAN, "temperature must be a finite number"),
    ("temperature", INF, "temperature must be a finite number"),
    ("top_p", 0, "top_p must be in (0, 1]"),
    ("top_p", 1.5, "top_p must be in (0, 1]"),
    ("top_p", NAN, "top_p must be a finite number"),
    ("min_p", -0.1, "min_p must be in [0, 1)"),
    ("min_p", 1.0, "min_p must be in [0, 1)"),
    ("top_k", -1, "top_k must be an integer >= 0"),
    ("top_k", 2.5, "top_k must be an integer"),
    ("repetition_penalty", 0, "repetition_penalty must be > 0"),
    ("repetition_penalty", -1, "repetition_penalty must be > 0"),
    ("cfg_weight", -0.5, "cfg_weight must be >= 0"),
    ("exaggeration", NAN, "exaggeration must be a finite number"),
    ("exaggeration", 5.0, "exaggeration must be in [0.25, 2]"),
    ("exaggeration", 0.1, "exaggeration must be in [0.25, 2]"),
    ("max_new_tokens", 0, "max_new_tokens must be an integer >= 1"),
    ("max_new_tokens", -1, "max_new_tokens must be an integer >= 1"),
    ("max_new_tokens", 2.5, "max_new_tokens must be an integer"),
    ("max_new_tokens", 10**6, "max_new_tokens must be at most"),
    ("seed", -1, "seed must be an integer >= 0"),
    ("seed", "x", "seed must be an integer >= 0"),
]


@pytest.mark.filterwarnings("ignore:.*is not used by:UserWarning")
@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    "name,value,fragment", BAD, ids=[f"{n}={v!r}" for n, v, _ in BAD]
)  # fmt: skip
def test_bad_parameter_refused_before_any_work(request, stop_at_t3, variant, entry, name,
                                               value, fragment):  # fmt: skip
    """Every variant refuses the same bad values (for Turbo/Nano also those of the
    parameters they ignore: "one validation for every variant"), before T3, and a
    stream refuses when it is created, not at its first chunk."""
    model = request.getfixturevalue(variant)
    stop_at_t3(model)
    note = ""
    if name in model.variant.ignored:
        note = (f" ({variant} ignores {name}, but the issue asks for one validation for every "
                "variant: an out-of-range value is refused whether or not it is used)")  # fmt: skip
    kwargs = {"watermark": False, **LANGUAGE.get(variant, {}), name: value}
    assert_refused(model, entry, ParameterError, fragment, note=note, **kwargs)


BAD_CHUNK_TOKENS = [0, -1, 2.5, "x", "10,50", [], (10, 0), [10, 2.5], [1] * 17]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("chunk_tokens", BAD_CHUNK_TOKENS, ids=repr)
def test_bad_chunk_tokens_refused_when_the_stream_is_created(request, stop_at_t3, variant,
                                                             chunk_tokens):  # fmt: skip
    model = request.getfixturevalue(variant)
    stop_at_t3(model)
    assert_refused(model, "generate_stream", ParameterError, "chunk_tokens must be an integer >= 1",
                   chunk_tokens=chunk_tokens, **LANGUAGE.get(variant, {}))  # fmt: skip


@pytest.mark.parametrize("flow_prompt_tokens", [-1, 2.5, "all"], ids=repr)
def test_bad_flow_prompt_tokens_refused_when_the_stream_is_created(turbo, stop_at_t3,
                                                                   flow_prompt_tokens):  # fmt: skip
    stop_at_t3(turbo)
    assert_refused(turbo, "generate_stream", ParameterError,
                   "flow_prompt_tokens must be an integer >= 0",
                   flow_prompt_tokens=flow_prompt_tokens)  # fmt: skip


GOOD = [  # in range for every variant, and used by every variant (no warning)
    ("temperature", 1e-3),
    ("temperature", 2.0),
    ("top_p", 1.0),
    ("top_p", 0.01),
    ("repetition_penalty", 1.0),
    ("repetition_penalty", 2.0),
    ("max_new_tokens", 1),
    ("seed", 0),
    ("seed", 2**31 - 1),
]
GOOD_CFG = [("min_p", 0.0), ("min_p", 0.99), ("cfg_weight", 0.0), ("cfg_weight", 3.0),
            ("exaggeration", 0.25), ("exaggeration", 2.0)]  # fmt: skip
GOOD_TURBO = [
    ("top_k", 0),
    ("top_k", 50),
    ("min_p", 0.0),
    ("cfg_weight", 0.0),
    ("exaggeration", 0.0),
]  # upstream's own Turbo defaults


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_good_parameters_reach_t3_without_warning(request, stop_at_t3, variant, entry):
    model = request.getfixturevalue(variant)
    stop_at_t3(model)
    table = GOOD + (GOOD_CFG if variant in CFG_VARIANTS else GOOD_TURBO)
    for name, value in table:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(ReachedT3):
                call(model, entry, watermark=False, **LANGUAGE.get(variant, {}), **{name: value})


@pytest.mark.parametrize("variant", VARIANTS)
def test_max_new_tokens_limit_is_the_boundary(request, stop_at_t3, variant):
    """The limit named in the refusal is accepted and one more is refused; the default
    (1000) is within it."""
    model = request.getfixturevalue(variant)
    stop_at_t3(model)
    lang = LANGUAGE.get(variant, {})
    with pytest.raises(ParameterError, match="max_new_tokens must be at most") as refused:
        model.generate(TEXT, max_new_tokens=10**6, **lang)
    limit = int(re.search(r"at most (\d+)", str(refused.value)).group(1))
    assert limit >= 1000
    with pytest.raises(ReachedT3) as reached:
        model.generate(TEXT, max_new_tokens=limit, **lang)
    assert reached.value.kwargs["max_new_tokens"] == limit
    with pytest.raises(ParameterError, match=f"at most {limit} .*got {limit + 1}"):
        model.generate(TEXT, max_new_tokens=limit + 1, **lang)


@pytest.mark.parametrize("entry", ("generate", "generate_stream"))
@pytest.mark.parametrize("variant", ("turbo", "nano"))
@pytest.mark.parametrize("name,value", [("min_p", 0.1), ("cfg_weight", 0.5),
                                        ("exaggeration", 0.7)])  # fmt: skip
def test_turbo_family_warns_about_ignored_parameters(request, stop_at_t3, variant, entry,
                                                     name, value):  # fmt: skip
    model = request.getfixturevalue(variant)
    stop_at_t3(model)
    with pytest.warns(UserWarning, match=f"{name}=.*not used by {variant}"):
        with pytest.raises(ReachedT3):  # a warning, not a refusal
            call(model, entry, **{name: value})


@pytest.mark.parametrize("entry", ("generate", "generate_stream"))
@pytest.mark.parametrize("variant", ("english", "turbo", "nano"))
def test_language_id_warned_where_unused(request, stop_at_t3, variant, entry):
    model = request.getfixturevalue(variant)
    stop_at_t3(model)
    with pytest.warns(UserWarning, match="language_id='de' is not used"):
        with pytest.raises(ReachedT3):
            call(model, entry, language_id="de")


@pytest.mark.parametrize("entry", ENTRIES)
def test_multilingual_needs_language_before_any_work(multilingual, stop_at_t3, entry):
    stop_at_t3(multilingual)
    assert_refused(multilingual, entry, text_mod.TextError, "unsupported language_id None")

"""T3's conditioning prefix (``models/t3/prefix.py``): computed once per voice, reused by
every prompt in that voice, and unable to change a token.

T3 at the reduced sizes of ``test_t3.py``. The prompt is always prefilled in two passes
(conditioning, then text), so a cache hit and a miss run the same arithmetic and must give
identical tokens; against one pass over the whole prompt the logits agree to float32
rounding of products of another shape (1e-5 relative to the largest logit).
"""

from __future__ import annotations

from dataclasses import replace

from chatterbox_mlx.models.t3 import Sampler, T3Cond
from chatterbox_mlx.models.t3.prefix import PrefixCache, prefix_key

import mlx.core as mx
import numpy as np
import pytest

from tests.helpers.golden import assert_close, load_golden
from tests.test_batching import alone, random_row
from tests.test_t3 import build_small

LOGITS_RTOL = 1e-5


@pytest.fixture(scope="module")
def models():
    golden = load_golden("t3")
    return {v: build_small(golden, v) for v in ("llama", "gpt2")}


def sampler_for(model):
    return Sampler.turbo() if model.config.is_gpt2 else Sampler.cfg(cfg_weight=0.5)


@pytest.mark.parametrize("variant", ["llama", "gpt2"])
def test_one_voice_prefix_serves_every_text_and_a_hit_speaks_as_a_miss(models, variant):
    model, rng = models[variant], np.random.default_rng(3)
    sampler = sampler_for(model)
    first = random_row(model, rng, prompt=40, text=12, tokens=12, sampler=sampler, seed=1)
    other = random_row(model, rng, prompt=40, text=20, tokens=12, sampler=sampler, seed=2)
    other = replace(other, cond=first.cond)  # another text in the same voice
    model.clear_prefixes()
    tokens_first = [s.token for s in alone(model, first)]
    assert len(model._prefixes) == 1
    tokens_hit = [s.token for s in alone(model, other)]
    assert len(model._prefixes) == 1, "the same voice was computed again"
    model.clear_prefixes()
    assert [s.token for s in alone(model, other)] == tokens_hit
    assert [s.token for s in alone(model, first)] == tokens_first


@pytest.mark.parametrize("variant", ["llama", "gpt2"])
def test_two_pass_prefill_matches_one_pass(models, variant):
    model, rng = models[variant], np.random.default_rng(4)
    row = random_row(model, rng, prompt=30, text=9, tokens=8, sampler=sampler_for(model), seed=3)
    embeds = model.prompt_embeds(row.cond, row.text_tokens, row.sampler, 8)
    one_pass = model.step_logits(embeds, model.make_cache(embeds.shape[0], embeds.shape[1]))
    model.clear_prefixes()
    for attempt in ("miss", "hit"):
        cache = model.make_cache(embeds.shape[0], embeds.shape[1])
        two_pass = model.prefill_logits(row.cond, embeds, cache)
        assert cache[0].offset == embeds.shape[1]
        assert_close(two_pass, one_pass, LOGITS_RTOL, f"{variant} prefill, {attempt}")


def test_the_key_tells_voices_apart_and_ignores_how_values_are_held():
    speaker = np.random.default_rng(5).standard_normal((1, 256)).astype(np.float32)
    tokens = np.arange(30)[None]
    base = T3Cond(mx.array(speaker), mx.array(tokens), 0.5)
    same = T3Cond(speaker.astype(np.float64), tokens.astype(np.int64), np.float32(0.5))
    assert prefix_key(base, mx.float32) == prefix_key(same, mx.float32)
    others = [
        T3Cond(mx.array(speaker), mx.array(tokens), 0.7),
        T3Cond(mx.array(speaker), mx.array(tokens[:, :-1]), 0.5),
        T3Cond(mx.array(speaker), None, 0.5),
        T3Cond(mx.array(speaker + 1e-3), mx.array(tokens), 0.5),
    ]
    keys = {prefix_key(cond, mx.float32) for cond in [base, *others]}
    assert len(keys) == 1 + len(others)
    assert prefix_key(base, mx.float16) != prefix_key(base, mx.float32)


def test_the_cache_keeps_the_most_recent_voices():
    cache = PrefixCache(capacity=2)
    cache.put(b"a", []), cache.put(b"b", [])
    assert cache.get(b"a") == []  # "a" is now the most recent
    cache.put(b"c", [])
    assert cache.get(b"b") is None and cache.get(b"a") == [] and cache.get(b"c") == []
    assert len(cache) == 2


def test_new_weights_clear_the_prefixes(models):
    model, rng = models["gpt2"], np.random.default_rng(6)
    row = random_row(model, rng, prompt=20, text=6, tokens=3, sampler=Sampler.turbo(), seed=4)
    model.clear_prefixes()
    alone(model, row)
    assert len(model._prefixes) == 1
    model.update(model.parameters())
    assert len(model._prefixes) == 0

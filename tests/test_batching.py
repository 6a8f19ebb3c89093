"""Batched T3 (``T3.generate_batch``): each row of a batch speaks the tokens it speaks alone.

T3 at the reduced sizes of ``test_t3.py`` (same golden layouts, random weights): rows of
very different prompt and text lengths, with and without CFG, different samplers in one
batch, rows that stop at once, rows joining mid-batch; then the cache's padding and
merging on their own, and the pipeline's batched long text and ``generate_batch`` on the
full-size random checkpoints against chunk-by-chunk rendering.

Tolerances: probabilities 1e-5 relative (a batched product sums in another order than a
single row's, ~1e-7 in float32); tokens must be identical (see
``test_near_ties_flip_no_token_over_many_rows`` for how often rounding could flip one).
"""

from __future__ import annotations

from dataclasses import replace

from chatterbox_mlx import cpu
from chatterbox_mlx.models.t3 import Sampler, T3Cond
from chatterbox_mlx.models.t3.batch import (
    FILTERED,
    MAX_NEW_TOKENS,
    STOP_TOKEN,
    BatchRow,
    DecodeBatch,
)
from chatterbox_mlx.models.t3.cache import BatchKVCache
from chatterbox_mlx.params import ParameterError
from chatterbox_mlx.variants import get_variant

import mlx.core as mx
import numpy as np
import pytest

from tests.helpers.golden import assert_close, load_golden
from tests.test_t3 import build_small

PROBS_RTOL = 1e-5


@pytest.fixture(scope="module")
def models():
    golden = load_golden("t3")
    return {v: build_small(golden, v) for v in ("llama", "gpt2")}


def random_row(model, rng, *, prompt: int, text: int, tokens: int, sampler, seed: int):
    cfg = model.config
    ids = rng.integers(1, min(cfg.text_vocab_size, 600), text).tolist()
    if not cfg.is_gpt2:
        ids = [cfg.start_text_token, *ids, cfg.stop_text_token]
    cond = T3Cond(
        speaker_emb=mx.array(rng.standard_normal((1, cfg.speaker_embed_size)), mx.float32),
        cond_prompt_speech_tokens=mx.array(rng.integers(0, 500, (1, prompt))),
        emotion_adv=None if cfg.is_gpt2 else float(rng.uniform(0.3, 0.9)),
    )
    return BatchRow(cond, mx.array([ids]), sampler, tokens, key=mx.random.key(seed))


def alone(model, row: BatchRow):
    return list(
        model.generate_steps(
            row.cond,
            row.text_tokens,
            row.sampler,
            max_new_tokens=row.max_new_tokens,
            key=row.key,
            noise=row.noise,
        )  # fmt: skip
    )


def batched(model, rows, batch_size):
    """Each row's steps and how it finished, from one ``generate_batch`` run."""
    steps = {i: [] for i in range(len(rows))}
    finished = {}
    for event in model.generate_batch(rows, batch_size=batch_size):
        assert event.row not in finished, "a finished row went on"
        if event.step is not None:
            assert event.step.index == len(steps[event.row])
            steps[event.row].append(event.step)
        if event.finished is not None:
            finished[event.row] = event.finished
    assert sorted(finished) == list(range(len(rows)))
    return steps, finished


def assert_rows_match(model, rows, batch_size):
    steps, finished = batched(model, rows, batch_size)
    for i, row in enumerate(rows):
        solo = alone(model, row)
        assert [s.token for s in steps[i]] == [s.token for s in solo], f"row {i}"
        for mine, theirs in zip(steps[i], solo, strict=True):
            assert_close(mine.probs, theirs.probs, PROBS_RTOL, f"row {i} step {mine.index}")
    return steps, finished


def samplers(variant: str, cfg_weight: float):
    if variant == "gpt2":
        return [Sampler.turbo(), Sampler.turbo(temperature=1.2, top_k=50, top_p=0.9,
                                               repetition_penalty=1.5)]  # fmt: skip
    return [Sampler.cfg(cfg_weight=cfg_weight),
            Sampler.cfg(cfg_weight=cfg_weight, temperature=1.3, min_p=0.02, top_p=0.8,
                        repetition_penalty=2.0)]  # fmt: skip


CASES = [("llama", 0.5), ("llama", 0.0), ("gpt2", 0.0)]


@pytest.mark.parametrize(("variant", "cfg_weight"), CASES)
def test_rows_of_different_lengths_speak_what_they_speak_alone(models, variant, cfg_weight):
    model = models[variant]
    rng = np.random.default_rng(1)
    first, second = samplers(variant, cfg_weight)
    shapes = [(10, 3, 12), (2, 40, 7), (30, 12, 16), (5, 25, 3), (18, 1, 10)]
    rows = [
        random_row(
            model, rng, prompt=p, text=t, tokens=n, sampler=(first, second)[i % 2], seed=10 + i
        )  # fmt: skip
        for i, (p, t, n) in enumerate(shapes)
    ]
    # batch 2 of 5 rows: rows join as others leave, at different cache lengths
    _, finished = assert_rows_match(model, rows, batch_size=2)
    assert set(finished.values()) <= {STOP_TOKEN, MAX_NEW_TOKENS}
    steps, _ = batched(model, rows, batch_size=8)  # all at once: the same again
    assert [len(steps[i]) for i in range(len(rows))] == [len(alone(model, r)) for r in rows]


def stop_noise(model, at: int, steps: int) -> mx.array:
    """Exp(1) draws that make the stop token win at step ``at`` (its draw is tiny)."""
    vocab = model.config.speech_vocab_size
    noise = np.random.default_rng(at).exponential(size=(steps, vocab)).astype(np.float32)
    noise[at, model.config.stop_speech_token] = 1e-30
    return mx.array(noise)


@pytest.mark.parametrize(("variant", "cfg_weight"), CASES)
def test_a_row_that_stops_at_once_leaves_and_the_others_go_on(models, variant, cfg_weight):
    model = models[variant]
    rng = np.random.default_rng(2)
    # no filtering, so the stop token is always a candidate
    if variant == "gpt2":
        open_sampler = Sampler.turbo(top_k=0, top_p=1.0)
    else:
        open_sampler = Sampler.cfg(cfg_weight=cfg_weight, min_p=0.0, top_p=1.0)
    first_stop = open_sampler.first_stop_index  # Turbo never stops on its first draw
    rows = [random_row(model, rng, prompt=8, text=6, tokens=9, sampler=open_sampler, seed=s)
            for s in range(4)]  # fmt: skip
    rows[1] = replace(rows[1], noise=stop_noise(model, first_stop, 9))
    rows[2] = replace(rows[2], noise=stop_noise(model, 4, 9))
    steps, finished = assert_rows_match(model, rows, batch_size=3)
    assert len(steps[1]) == first_stop + 1 and finished[1] == STOP_TOKEN
    assert len(steps[2]) == 5 and finished[2] == STOP_TOKEN
    stop = model.config.stop_speech_token
    for i in (0, 3):  # random weights may also draw the stop token
        ended_on_stop = steps[i][-1].token == stop and len(steps[i]) > first_stop
        assert finished[i] == (STOP_TOKEN if ended_on_stop else MAX_NEW_TOKENS)
        assert ended_on_stop or len(steps[i]) == 9


def test_a_single_row_is_its_solo_run(models):
    model = models["llama"]
    row = random_row(model, np.random.default_rng(3), prompt=6, text=8, tokens=10,
                     sampler=Sampler.cfg(), seed=5)  # fmt: skip
    assert_rows_match(model, [row], batch_size=1)
    assert_rows_match(model, [row, row, row], batch_size=1)  # one after another


@pytest.mark.parametrize("variant", ["llama", "gpt2"])
def test_the_mlx_formulation_batches_alike(models, variant):
    """With the CPU paths off (what a GPU runs) the rows also match their solo runs."""
    model = models[variant]
    rng = np.random.default_rng(4)
    sampler = samplers(variant, 0.5)[0]
    rows = [random_row(model, rng, prompt=p, text=t, tokens=8, sampler=sampler, seed=p)
            for p, t in [(3, 20), (20, 2), (9, 9)]]  # fmt: skip
    with cpu.switch(False):
        assert_rows_match(model, rows, batch_size=2)


def test_near_ties_flip_no_token_over_many_rows(models):
    """24 rows of 20 tokens at batch 8 (and with rows joining): every token is the solo
    one. Rounding of batched products could flip a near-tie between two candidates'
    ``probs / noise``; this counts flips over 480 tokens and allows none."""
    model = models["gpt2"]
    rng = np.random.default_rng(5)
    sampler = Sampler.turbo(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0)
    rows = [random_row(model, rng, prompt=int(rng.integers(1, 30)), text=int(rng.integers(1, 30)),
                       tokens=20, sampler=sampler, seed=100 + i)
            for i in range(24)]  # fmt: skip
    steps, _ = batched(model, rows, batch_size=8)
    flips = 0
    for i, row in enumerate(rows):
        mine = [s.token for s in steps[i]]
        solo = [s.token for s in alone(model, row)]
        flips += next((1 for a, b in zip(mine, solo, strict=False) if a != b), 0)
    assert flips == 0


def test_filtered_rows_end_without_a_token(models):
    """A step whose processors filter everything ends the row with no token, as alone."""
    model = models["gpt2"]
    row = random_row(model, np.random.default_rng(6), prompt=4, text=4, tokens=5,
                     sampler=Sampler.turbo(), seed=1)  # fmt: skip
    nothing = Sampler(processors=(lambda logits, seen: mx.full(logits.shape, -mx.inf),))
    rows = [row, replace(row, sampler=nothing), row]
    steps, finished = batched(model, rows, batch_size=3)
    assert finished[1] == FILTERED and steps[1] == [] and alone(model, rows[1]) == []
    assert [s.token for s in steps[0]] == [s.token for s in steps[2]]


def test_bad_batch_size_is_refused(models):
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        list(models["gpt2"].generate_batch([], batch_size=0))


# ----------------------------------------------------------------------------- the cache


def test_cache_merge_and_filter_keep_each_rows_keys():
    rng = np.random.default_rng(7)

    def filled(rows: int, length: int) -> tuple[BatchKVCache, np.ndarray]:
        keys = rng.standard_normal((rows, 2, length, 4)).astype(np.float32)
        cache = BatchKVCache.empty(rows, 2, 4, length + 3, mx.float32)
        cache.update(mx.array(keys), mx.array(-keys))
        return cache, keys

    a, keys_a = filled(2, 5)
    b, keys_b = filled(1, 9)
    a.merge(b)
    assert a.offset == 9 and a.left_padding == [4, 4, 0]
    k, v = a.update(mx.zeros((3, 2, 1, 4)), mx.zeros((3, 2, 1, 4)))
    np.testing.assert_array_equal(np.array(k[:2, :, 4:9]), keys_a)
    np.testing.assert_array_equal(np.array(k[2, :, :9]), keys_b[0])
    np.testing.assert_array_equal(np.array(v[2, :, :9]), -keys_b[0])
    np.testing.assert_array_equal(np.array(a.positions(1))[:, 0], [6, 6, 10])
    mask = np.array(a.mask(1))
    assert mask.shape == (3, 1, 1, 11)
    assert np.isneginf(mask[0, 0, 0, :4]).all() and (mask[0, 0, 0, 4:] == 0).all()
    assert (mask[2] == 0).all()
    a.filter([1])  # the long row leaves: the padding goes with it
    assert a.offset == 6 and a.left_padding == [0]
    np.testing.assert_array_equal(np.array(a.keys[0, :, :5]), keys_a[1])
    assert a.mask(1) is None and a.mask(3) == "causal"


def test_rows_merged_together_equal_rows_merged_one_by_one():
    rng = np.random.default_rng(8)

    sources = []

    def filled(rows: int, length: int, capacity: int) -> BatchKVCache:
        keys = rng.standard_normal((rows, 2, length, 4)).astype(np.float32)
        sources.append(keys)
        cache = BatchKVCache.empty(rows, 2, 4, capacity, mx.float32)
        cache.update(mx.array(keys), mx.array(keys * 2))
        return cache

    parts = [filled(2, 5, 9), filled(1, 9, 10), filled(1, 3, 12)]
    together = BatchKVCache(parts[0].keys, parts[0].values, 5, [1, 0])
    together.merge(*parts[1:])
    one_by_one = BatchKVCache(parts[0].keys, parts[0].values, 5, [1, 0])
    for part in parts[1:]:
        one_by_one.merge(part)
    assert together.offset == one_by_one.offset == 9
    assert together.left_padding == one_by_one.left_padding == [5, 4, 0, 6]
    assert together.keys.shape == one_by_one.keys.shape == (4, 2, 12, 4)
    np.testing.assert_array_equal(np.array(together.keys), np.array(one_by_one.keys))
    np.testing.assert_array_equal(np.array(together.values), np.array(one_by_one.values))
    keys, values = np.array(together.keys), np.array(together.values)
    for rows, start, source in ((slice(0, 2), 4, sources[0]), (slice(2, 3), 0, sources[1]),
                                (slice(3, 4), 6, sources[2])):  # fmt: skip
        np.testing.assert_array_equal(keys[rows, :, start:9], source)
        np.testing.assert_array_equal(values[rows, :, start:9], source * 2)
    assert (keys[3, :, :6] == 0).all() and (keys[:, :, 9:] == 0).all()  # padding, room


def test_cache_grows_past_its_capacity():
    cache = BatchKVCache.empty(1, 1, 2, 2, mx.float32)
    for step in range(5):
        k, _ = cache.update(mx.full((1, 1, 1, 2), float(step)), mx.zeros((1, 1, 1, 2)))
    np.testing.assert_array_equal(np.array(k[0, 0, :, 0]), [0, 1, 2, 3, 4])


def test_padded_prefill_mask_lets_padding_see_itself():
    cache = BatchKVCache.empty(2, 1, 2, 8, mx.float32)
    cache.left_padding = [2, 0]
    mask = np.array(cache.mask(3))[:, 0]  # 3 queries over 3 keys
    row0 = np.isfinite(mask[0])
    assert row0.tolist() == [[True, False, False], [False, True, False], [False, False, True]]
    assert np.isfinite(mask[1]).tolist() == np.tril(np.ones((3, 3), bool)).tolist()


# ----------------------------------------------------------------------------- pipeline

THREE_CHUNKS = "Hi. [pause:100ms] Hello there, my friend. [pause:100ms] Yes."


def as_numpy(wav) -> np.ndarray:
    return np.asarray(wav, dtype=np.float32)


@pytest.mark.parametrize("variant", ["turbo", "english"])
def test_long_text_batched_speaks_as_chunk_by_chunk(request, variant):
    model = request.getfixturevalue(variant)
    kwargs = dict(max_new_tokens=3, seed=7, watermark=False)
    solo = [as_numpy(p) for p in model.generate_pieces(THREE_CHUNKS, batch_size=1, **kwargs)]
    solo_stats = dict(model.last_stats)
    pieces = [as_numpy(p) for p in model.generate_pieces(THREE_CHUNKS, batch_size=2, **kwargs)]
    assert len(pieces) == len(solo) == 5  # three chunks and two pauses, in order
    for mine, theirs in zip(pieces, solo, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert model.last_stats["T3 batch"] == 2 and solo_stats["T3 batch"] == 1
    assert model.last_stats["T3 finished per chunk"] == ["max_new_tokens"] * 3
    whole = model.generate(THREE_CHUNKS, **kwargs)  # the default batch size
    np.testing.assert_array_equal(as_numpy(whole)[0], np.concatenate([p[0] for p in solo]))


@pytest.mark.parametrize(("variant", "cfg_weight"), [("llama", 0.5), ("gpt2", 0.0)])
def test_rows_removed_between_steps_leave_the_others_as_alone(models, variant, cfg_weight):
    """``DecodeBatch`` driven round by round as the server's scheduler does: a row removed
    mid-way (its client left) stops at once, the others speak what they speak alone, and a
    row joining after the removal too."""
    model = models[variant]
    rng = np.random.default_rng(5)
    sampler = samplers(variant, cfg_weight)[0]
    rows = [
        random_row(model, rng, prompt=p, text=t, tokens=8, sampler=sampler, seed=40 + i)
        for i, (p, t) in enumerate([(6, 5), (11, 3), (4, 9), (8, 8)])
    ]
    batch = DecodeBatch(model)
    for i in range(3):
        batch.join(i, rows[i])
    steps = {i: [] for i in range(4)}
    for round_ in range(8):
        if round_ == 3:
            batch.remove({1})
            batch.join(3, rows[3])
        for event in batch.read():
            assert event.row != 1 or round_ < 3, "a removed row went on"
            if event.step is not None:
                steps[event.row].append(event.step.token)
        if batch.actives:
            batch.step()
    for i in (0, 2):
        assert steps[i] == [s.token for s in alone(model, rows[i])], f"row {i}"
    assert steps[1] == [s.token for s in alone(model, rows[1])][:3]
    assert steps[3] == [s.token for s in alone(model, rows[3])][:5]


def test_generate_each_takes_one_seed_per_text(turbo):
    texts = ["Hi.", "Hello there, my friend."]
    each = turbo.generate_each(texts, seed=[9, 4], max_new_tokens=4, watermark=False,
                               batch_size=2)  # fmt: skip
    for text, seed, wav in zip(texts, [9, 4], each, strict=True):
        alone_wav = turbo.generate(text, seed=seed, max_new_tokens=4, watermark=False)
        np.testing.assert_array_equal(as_numpy(wav), as_numpy(alone_wav))
    with pytest.raises(ParameterError, match="2 seeds for 3 texts"):
        turbo.generate_each([*texts, "Yes."], seed=[1, 2])


def test_generate_batch_batches_across_texts(turbo):
    texts = ["Hi.", "Hello there, my friend.", "Yes. [pause:100ms] No."]
    batched_wavs = turbo.generate_batch(texts, seed=3, max_new_tokens=4, watermark=False,
                                        batch_size=3)  # fmt: skip
    for i, text in enumerate(texts):
        alone_wav = turbo.generate(text, seed=3 + i, max_new_tokens=4, watermark=False,
                                   batch_size=1)  # fmt: skip
        np.testing.assert_array_equal(as_numpy(batched_wavs[i]), as_numpy(alone_wav))


def test_t3_says_why_it_stopped(turbo, monkeypatch):
    """``last_stats["T3 finished"]`` (and per chunk): the stop token, or
    ``max_new_tokens`` reached; alone and batched."""
    text = "Hi. [pause:100ms] Yes."
    turbo.generate(text, max_new_tokens=3, seed=0, watermark=False)
    assert turbo.last_stats["T3 finished per chunk"] == [MAX_NEW_TOKENS] * 2
    stop, original = turbo.t3.config.stop_speech_token, turbo.t3.step_logits

    def stop_after_the_prompt(x, cache):  # every step after a prefill draws the stop token
        logits = original(x, cache)
        if x.shape[1] > 1:
            return logits
        return mx.where(mx.arange(logits.shape[-1]) == stop, 1e4, logits)

    monkeypatch.setattr(turbo.t3, "step_logits", stop_after_the_prompt)
    for batch_size in (1, 2):
        turbo.generate(text, max_new_tokens=9, seed=0, watermark=False, batch_size=batch_size)
        assert turbo.last_stats["T3 finished per chunk"] == [STOP_TOKEN] * 2
        assert turbo.last_stats["speech tokens"] == 1 + len(turbo.variant.tail_tokens)


@pytest.mark.parametrize("entry", ["generate", "generate_pieces", "generate_batch"])
def test_bad_batch_size_is_refused_before_any_work(turbo, stop_at_t3, entry):
    stop_at_t3(turbo)
    for bad in (0, 2.5, True, 100):
        with pytest.raises(ValueError, match="batch_size must be"):
            if entry == "generate_batch":
                turbo.generate_batch(["Hi.", "Yes."], batch_size=bad)
            else:
                list(getattr(turbo, entry)("Hi.", batch_size=bad))


def run_cli(*args, stdin=None):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "chatterbox_mlx.generate", *args], input=stdin,
                          capture_output=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip


def test_cli_lines_write_one_file_per_line(tmp_path):
    import soundfile as sf

    from tests.helpers.sources import converted_dir

    source = tmp_path / "lines.txt"
    source.write_text("First line.\n\nSecond line here.\nThird.\n", encoding="utf-8")
    out = tmp_path / "out.wav"
    r = run_cli("--model", str(converted_dir("nano")), "--file", str(source), "--lines",
                "--batch-size", "2", "--max-new-tokens", "2", "--seed", "0", "--no-watermark",
                "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    written = sorted(p.name for p in tmp_path.glob("out-*.wav"))
    assert written == ["out-1.wav", "out-2.wav", "out-3.wav"]
    nano = get_variant("nano")
    tokens = 1 if nano.drop_last_token_audio else 2 + len(nano.tail_tokens)
    for name in written:  # 2 speech tokens each (random weights never stop)
        assert sf.info(tmp_path / name).frames == tokens * 960
    r = run_cli("--model", "nano", "--text", "a\nb", "--lines", "--stream")
    assert r.returncode == 1 and b"--lines writes one file per line" in r.stderr
    r = run_cli("--model", "nano", "--text", "a", "--batch-size", "0")
    assert r.returncode == 2 and b"--batch-size: must be 1 or more" in r.stderr

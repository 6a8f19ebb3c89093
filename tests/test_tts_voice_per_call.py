"""Issue 15, library side: each call keeps its own voice, seed and keys from its start to
its end, from any thread (threads, streams read from other threads, a model loaded in
one thread and served from another), and ``voice=`` leaves the model's voice alone.

Shared short-voice models of tests/conftest.py (Nano for whole generations, capped with
``max_new_tokens``; English stopped at T3 where a call only needs to start)."""

from __future__ import annotations

import threading

from chatterbox_mlx.tts import ChatterboxTurboTTS

import numpy as np
import pytest

from tests.helpers.clips import espeak_file
from tests.helpers.entry_points import TEXT, ReachedT3, T3Finished
from tests.helpers.models import shorten
from tests.helpers.sources import converted_dir

pytestmark = [pytest.mark.pipeline, pytest.mark.slow]

CLIP_TEXTS = {
    "a": (
        "The quick brown fox jumps over the lazy dog, and then it runs far away into "
        "the dark green forest.",
        "en-us",
    ),
    "b": (
        "Some other voice reads this second sentence slowly, so that the clip lasts "
        "well over five seconds.",
        "en-gb",
    ),
}  # each > 5 s, as Turbo/Nano need


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return {k: espeak_file(folder / f"{k}.wav", t, v) for k, (t, v) in CLIP_TEXTS.items()}


@pytest.fixture(scope="module")
def nano_voices(nano, clips):
    return {k: shorten(nano.prepare_voice(str(p))) for k, p in clips.items()}


# (voice: None = the model's, seed, max_new_tokens, chunk_tokens: None = one shot)
CASES = [(None, 1, 3, None), ("a", 2, 3, None), ("b", 3, 5, 2), (None, 4, 5, 2)]


def run_case(model, voices, case) -> np.ndarray:
    voice, seed, max_new_tokens, chunk_tokens = case
    kwargs = dict(max_new_tokens=max_new_tokens, seed=seed, watermark=False)
    if voice is not None:
        kwargs["voice"] = voices[voice]
    if chunk_tokens is None:
        return np.asarray(model.generate(TEXT, **kwargs))
    chunks = [np.asarray(c) for c in model.generate_stream(TEXT, chunk_tokens=chunk_tokens,
                                                           **kwargs)]  # fmt: skip
    return np.concatenate(chunks, axis=1)


@pytest.fixture(scope="module")
def sequential(nano, nano_voices):
    """Each case run alone, one after the other."""
    return [run_case(nano, nano_voices, case) for case in CASES]


def test_threads_with_voices_and_seeds_match_sequential(nano, nano_voices, sequential):
    """4 threads x 3 calls on one model, each call started together with the other
    threads' (a barrier), mixing the model's voice, two ``voice=`` objects, seeds and
    an interleaving stream: every output equals the sequential one bit for bit (the
    same arithmetic on the same inputs; nothing but the order of calls differs)."""
    conds = nano.conds
    n_threads, calls = 4, 3
    barrier = threading.Barrier(n_threads, timeout=300)
    results: dict[tuple[int, int], tuple[int, np.ndarray]] = {}
    errors: list[BaseException] = []

    def worker(t: int):
        try:
            for j in range(calls):
                barrier.wait()
                i = (t + j) % len(CASES)
                results[t, j] = (i, run_case(nano, nano_voices, CASES[i]))
        except BaseException as err:  # reported below
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors, errors
    assert len(results) == n_threads * calls
    for (t, j), (i, wav) in sorted(results.items()):
        assert np.array_equal(wav, sequential[i]), (
            f"thread {t} call {j} (case {CASES[i]}) differs from its sequential result"
        )
    assert nano.conds is conds, "a call with voice= replaced the model's voice"


def test_call_without_voice_keeps_the_voice_it_started_with(nano, nano_voices, sequential,
                                                            monkeypatch):  # fmt: skip
    """While calls without a voice run, the model's voice is replaced (as another thread's
    ``audio_prompt_path=`` or ``prepare_conditionals`` does): each still speaks with the
    voice the model had when the call was made, from T3 to the last HiFT chunk."""
    original, conds = nano.t3.generate_steps, nano.conds

    def switching(*args, **kwargs):
        nano.conds = nano_voices["b"]
        yield from original(*args, **kwargs)

    try:
        with monkeypatch.context() as patch:
            patch.setattr(nano.t3, "generate_steps", switching)
            wav = np.asarray(nano.generate(TEXT, max_new_tokens=3, seed=1, watermark=False))
        assert nano.conds is nano_voices["b"]  # the switch did happen
        assert np.array_equal(wav, sequential[0]), "the call took the voice set mid-call"

        nano.conds = conds
        voice, seed, max_new_tokens, chunk_tokens = CASES[3]
        assert voice is None
        stream = nano.generate_stream(TEXT, max_new_tokens=max_new_tokens, seed=seed,
                                      chunk_tokens=chunk_tokens, watermark=False)  # fmt: skip
        nano.conds = nano_voices["b"]  # after the stream was made, before its first chunk
        chunks = []
        for chunk in stream:
            chunks.append(np.asarray(chunk))
            nano.conds = nano_voices["a"]  # and between its chunks
    finally:
        nano.conds = conds
    assert len(chunks) >= 2
    assert np.array_equal(np.concatenate(chunks, axis=1), sequential[3]), (
        "the stream took a voice set after it was made"
    )


def in_thread(fn):
    """``fn()`` in a new thread: (its result, None) or (None, the exception it raised)."""
    box = {}

    def target():
        try:
            box["result"] = fn()
        except Exception as err:  # handed back to the test
            box["error"] = err

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=600)
    assert not thread.is_alive()
    return box.get("result"), box.get("error")


CROSS_THREAD = (
    "an MLX array the library left unevaluated in one thread cannot be evaluated in "
    "another ('There is no Stream(cpu, 0) in current thread'): evaluate what outlives a "
    "call (loaded and prepared voices, a changed exaggeration, a stream's keys and state "
    "between chunks) in the thread that made it"
)


def test_model_loaded_in_one_thread_serves_another():
    """A server loads the model at start-up and serves from worker threads: the first
    call, made from a worker, speaks as the same call from the loading thread."""
    model = ChatterboxTurboTTS.from_local(converted_dir("nano"), nano=True)  # fresh
    kwargs = dict(max_new_tokens=1, seed=1, watermark=False)
    wav, error = in_thread(lambda: np.asarray(model.generate(TEXT, **kwargs)))
    assert error is None, f"{type(error).__name__}: {error}; {CROSS_THREAD}"
    assert np.array_equal(wav, np.asarray(model.generate(TEXT, **kwargs)))


def test_voice_prepared_in_one_thread_used_in_another(nano, clips):
    """``prepare_voice`` in one thread, ``voice=`` in another (the server's use)."""
    voice = nano.prepare_voice(str(clips["a"]))  # as it comes, not shortened
    kwargs = dict(voice=voice, max_new_tokens=1, seed=2, watermark=False)
    wav, error = in_thread(lambda: np.asarray(nano.generate(TEXT, **kwargs)))
    assert error is None, f"{type(error).__name__}: {error}; {CROSS_THREAD}"
    assert np.array_equal(wav, np.asarray(nano.generate(TEXT, **kwargs)))


def test_stream_consumed_from_other_threads(nano, sequential):
    """A stream made in one thread and read chunk by chunk from others (as a web
    framework's thread pool iterates a response): the same audio as read in one thread."""
    voice, seed, max_new_tokens, chunk_tokens = CASES[3]
    assert voice is None
    stream = iter(nano.generate_stream(TEXT, max_new_tokens=max_new_tokens, seed=seed,
                                       chunk_tokens=chunk_tokens, watermark=False))  # fmt: skip
    chunks = []
    while True:
        chunk, error = in_thread(lambda: next(stream, None))
        assert error is None, f"{type(error).__name__}: {error}; {CROSS_THREAD}"
        if chunk is None:
            break
        chunks.append(np.asarray(chunk))
    assert np.array_equal(np.concatenate(chunks, axis=1), sequential[3])


def test_exaggeration_set_in_one_thread_then_used_in_another(english, stop_at_t3,
                                                             monkeypatch):  # fmt: skip
    """``exaggeration=`` without a voice updates the model's voice (upstream); a later
    call from another thread speaks with it (T3's first step: where it is read)."""
    builtin, original = english.conds, english.t3.generate_steps
    try:
        stop_at_t3(english)
        with pytest.raises(ReachedT3):
            english.generate(TEXT, exaggeration=0.7)
        assert english.conds is not builtin

        def first_step_only(*args, **kwargs):
            for _ in original(*args, **kwargs):
                raise T3Finished
            raise AssertionError("T3 took no step")

        monkeypatch.setattr(english.t3, "generate_steps", first_step_only)
        _, error = in_thread(lambda: english.generate(TEXT, max_new_tokens=1, seed=0))
        assert isinstance(error, T3Finished), f"{type(error).__name__}: {error}; {CROSS_THREAD}"
    finally:
        english.conds = builtin


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory):
    return espeak_file(tmp_path_factory.mktemp("short") / "hello.wav", "Hello there, how are you?")


def test_voice_per_call_leaves_the_model_voice_alone(english, short_clip, monkeypatch):
    """``voice=`` (and its exaggeration) is for that call only; ``audio_prompt_path=``
    and ``exaggeration=`` without a voice update the model's voice, as upstream."""
    seen = []

    def reached(cond, *args, **kwargs):
        seen.append(cond)
        raise ReachedT3(kwargs)

    monkeypatch.setattr(english.t3, "generate_steps", reached)
    builtin = english.conds
    builtin_emotion = np.array(builtin.t3.emotion_adv)
    voice = english.prepare_voice(str(short_clip))
    try:
        with pytest.raises(ReachedT3):
            english.generate(TEXT, voice=voice, exaggeration=0.7)
        assert english.conds is builtin
        np.testing.assert_array_equal(np.array(english.conds.t3.emotion_adv), builtin_emotion)
        np.testing.assert_array_equal(np.array(seen[-1].speaker_emb),
                                      np.array(voice.t3.speaker_emb))  # fmt: skip
        assert float(np.array(seen[-1].emotion_adv).reshape(-1)[0]) == pytest.approx(0.7)
        assert float(np.array(voice.t3.emotion_adv).reshape(-1)[0]) == 0.5  # voice= untouched

        with pytest.raises(ReachedT3):  # no voice: the model's voice, as it was
            english.generate(TEXT)
        np.testing.assert_array_equal(np.array(seen[-1].speaker_emb),
                                      np.array(builtin.t3.speaker_emb))  # fmt: skip

        with pytest.raises(ReachedT3):  # upstream: a clip becomes the model's voice
            english.generate(TEXT, audio_prompt_path=str(short_clip))
        assert english.conds is not builtin
        np.testing.assert_array_equal(np.array(english.conds.t3.speaker_emb),
                                      np.array(voice.t3.speaker_emb))  # fmt: skip
        with pytest.raises(ReachedT3):  # upstream: exaggeration updates the model's voice
            english.generate(TEXT, exaggeration=0.9)
        assert float(np.array(english.conds.t3.emotion_adv).reshape(-1)[0]) == pytest.approx(0.9)
    finally:
        english.conds = builtin

"""Issue 15, library side: every entry point validates before any work, refuses
non-finite output naming the stage, checks the whole text first, gives each call its own
voice and keys (threads, streams), and refuses or warns about near-silent prompts.

Full-size real-layout random checkpoints (``converted_dir``). Random weights never emit
the stop token, so every generation is capped with ``max_new_tokens``. To keep the file
affordable the voices are shortened (10 T3 prompt tokens, 25 S3Gen prompt tokens) and a
call that only needs to get past validation is stopped where T3 would start
(``ReachedT3``)."""

from __future__ import annotations

import contextlib
import math
import re
import subprocess
import threading
import warnings
from dataclasses import replace

from chatterbox_mlx import text as text_mod
from chatterbox_mlx.audio import AudioError
from chatterbox_mlx.params import ParameterError
from chatterbox_mlx.pipeline.checks import NonFiniteError
from chatterbox_mlx.tts import (
    ChatterboxMultilingualTTS,
    ChatterboxTTS,
    ChatterboxTurboTTS,
    ChatterboxVC,
)
from chatterbox_mlx.voice.conditionals import Conditionals

import mlx.core as mx
import numpy as np
import pytest
import soundfile as sf

from tests.helpers.sources import converted_dir

SR = 24000
TEXT = "Hello there."
VARIANTS = ("english", "turbo", "nano", "multilingual")
CFG_VARIANTS = ("english", "multilingual")  # the others are the Turbo family
LANGUAGE = {"multilingual": {"language_id": "fr"}}
T3_PROMPT, GEN_PROMPT = 10, 10  # tokens kept of each voice prompt (speed only)


# ---------------------------------------------------------------------------- helpers


def shorten(conds: Conditionals) -> Conditionals:
    """The same voice with short prompts (a copy; the argument is left as it is)."""
    t3 = replace(
        conds.t3, cond_prompt_speech_tokens=conds.t3.cond_prompt_speech_tokens[:, :T3_PROMPT]
    )
    gen = conds.gen
    n = min(GEN_PROMPT, gen.prompt_token.shape[1])
    gen = replace(
        gen,
        prompt_token=gen.prompt_token[:, :n],
        prompt_token_len=mx.array([n], dtype=mx.int32),
        prompt_feat=gen.prompt_feat[:, : 2 * n],
    )
    # evaluated here, so that these new arrays can be used from any thread (an MLX array
    # left unevaluated can only be evaluated by the thread that made it)
    mx.eval([v for part in (t3, gen) for v in vars(part).values() if isinstance(v, mx.array)])
    return Conditionals(t3, gen)


def load(variant: str):
    if variant == "english":
        model = ChatterboxTTS.from_local(converted_dir("english"))
    elif variant == "multilingual":
        model = ChatterboxMultilingualTTS.from_local(converted_dir("multilingual"))
    else:
        model = ChatterboxTurboTTS.from_local(converted_dir(variant), nano=variant == "nano")
    model.conds = shorten(model.conds)
    return model


@pytest.fixture(scope="module")
def english():
    return load("english")


@pytest.fixture(scope="module")
def turbo():
    return load("turbo")


@pytest.fixture(scope="module")
def nano():
    return load("nano")


@pytest.fixture(scope="module")
def multilingual():
    return load("multilingual")


def espeak_file(path, text: str, voice: str = "en-us"):
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True)
    return path


def espeak_array(tmp_path, text: str) -> np.ndarray:
    """espeak-ng speech at 24 kHz, float32."""
    from chatterbox_mlx import audio

    wav, sr = sf.read(espeak_file(tmp_path / "speech.wav", text), dtype="float32")
    return audio.resample(wav, sr, SR)


def at_level(wav: np.ndarray, dbfs: float) -> np.ndarray:
    """``wav`` scaled to exactly ``dbfs`` RMS (float64 maths, float32 out)."""
    wav = np.asarray(wav, np.float64)
    return (wav * 10 ** (dbfs / 20) / np.sqrt(np.mean(wav**2))).astype(np.float32)


class ReachedT3(Exception):
    """Raised in place of T3: the call got past every check to where the work starts."""

    def __init__(self, kwargs):
        super().__init__(
            "T3 was asked to generate, so the input was NOT refused before the work began"
        )
        self.kwargs = kwargs


class T3Finished(Exception):
    """Raised by a T3 wrapper once the steps a test needs were taken."""


@pytest.fixture
def stop_at_t3(monkeypatch):
    """``stop_at_t3(model)``: T3 raises ``ReachedT3`` instead of generating."""

    def install(model):
        def reached(*args, **kwargs):
            raise ReachedT3(kwargs)

        monkeypatch.setattr(model.t3, "generate_steps", reached)

    return install


def call(model, entry: str, text: str = TEXT, **kwargs):
    """Run one entry point far enough to reach T3 (a stream: its first chunk)."""
    if entry == "generate":
        return model.generate(text, **kwargs)
    if entry in ("generate_stream", "generate_pieces"):
        stream = getattr(model, entry)(text, **kwargs)  # refusals come here, eagerly
        return next(iter(stream))
    if entry == "generate_batch":
        return model.generate_batch([text, text], **kwargs)
    raise AssertionError(entry)


def assert_refused(model, entry: str, error, fragment: str, text: str = TEXT, note: str = "",
                   **kwargs):  # fmt: skip
    """``entry`` raises ``error`` naming ``fragment`` before any work (T3 stopped by
    ``stop_at_t3``); a stream (or pieces) when it is made, before its first chunk."""
    what = f"{entry}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
    try:
        if entry in ("generate_stream", "generate_pieces"):
            stream = getattr(model, entry)(text, **kwargs)
            try:
                next(iter(stream))
            except error:
                pytest.fail(f"{what} was refused at its first chunk, not when it was made")
        else:
            call(model, entry, text, **kwargs)
    except ReachedT3:
        pytest.fail(f"{what} was accepted (T3 started); expected {error.__name__} "
                    f"'{fragment}' before any work{note}")  # fmt: skip
    except error as err:
        assert fragment in str(err), f"{what}: the message {str(err)!r} lacks {fragment!r}"
        return
    except Exception as err:
        pytest.fail(f"{what} raised {type(err).__name__}: {err}; expected {error.__name__} "
                    f"'{fragment}'")  # fmt: skip
    pytest.fail(f"{what} raised nothing; expected {error.__name__} '{fragment}'")


# ---------------------------------------------------------------------------- parameters

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
ENTRIES = ("generate", "generate_stream", "generate_pieces", "generate_batch")


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


# ---------------------------------------------------------------------------- text

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


# ---------------------------------------------------------------------------- finite output


@contextlib.contextmanager
def nan_in(layer, name: str):
    """One NaN in ``layer.<name>`` for the duration; the original array is put back."""
    original = getattr(layer, name)
    poisoned = np.array(original)
    poisoned.reshape(-1)[0] = np.nan
    setattr(layer, name, mx.array(poisoned))
    try:
        yield
    finally:
        setattr(layer, name, original)
        assert getattr(layer, name) is original  # the other tests use this model


STAGES = {  # stage -> (layer, parameter, what the message names)
    "hift": (lambda m: m.s3gen.mel2wav.conv_post, "bias", "HiFT"),
    "flow": (lambda m: m.s3gen.flow.decoder.estimator.final_proj, "weight", "flow's mel"),
    "t3": (lambda m: m.t3.speech_head, "weight", "T3 logits"),
}
INTEGRITY = [
    ("hift", "generate", True),  # the watermark used to blame the user's audio
    ("hift", "generate", False),
    ("hift", "generate_stream", False),
    ("hift", "generate_batch", True),
    ("hift", "vc", True),
    ("flow", "generate", True),
    ("flow", "generate_stream", True),
    ("flow", "generate_batch", False),
    ("flow", "vc", False),
    ("t3", "generate", True),
    ("t3", "generate_stream", False),
    ("t3", "generate_batch", True),
]


@pytest.fixture(scope="module")
def vc_source(tmp_path_factory):
    return espeak_array(tmp_path_factory.mktemp("vc"), "Convert me.")


@pytest.mark.parametrize("stage,entry,watermark", INTEGRITY)
def test_non_finite_output_names_its_stage(nano, vc_source, stage, entry, watermark):
    layer, name, named = STAGES[stage]
    with nan_in(layer(nano), name):
        with pytest.raises(NonFiniteError, match=re.escape(named)):
            if entry == "vc":
                vc = ChatterboxVC(nano.s3gen, ref_dict=nano.conds.gen)
                vc.generate(vc_source, sr=SR, watermark=watermark, seed=0)
            elif entry == "generate_stream":
                for _ in nano.generate_stream(TEXT, max_new_tokens=3, seed=0,
                                              watermark=watermark):  # fmt: skip
                    pass
            else:
                call(nano, entry, max_new_tokens=2, seed=0, watermark=watermark)


# ---------------------------------------------------------------------------- voices

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


# ---------------------------------------------------------------------------- tokens


def spoken_tokens(model, monkeypatch, run) -> tuple[list[int], int]:
    """T3's tokens in ``run()``, and how many HiFT renders ran before the last draw."""
    original_steps, original_hift = model.t3.generate_steps, model.s3gen.hift_inference
    tokens, renders, renders_before_last = [], [0], [0]

    def recording(*args, **kwargs):
        for step in original_steps(*args, **kwargs):
            tokens.append(step.token)
            renders_before_last[0] = renders[0]
            yield step
        raise T3Finished

    def counting_hift(*args, **kwargs):
        renders[0] += 1
        return original_hift(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(model.t3, "generate_steps", recording)
        patch.setattr(model.s3gen, "hift_inference", counting_hift)
        with pytest.raises(T3Finished):
            run()
    return tokens, renders_before_last[0]


MAX_NEW_TOKENS = 8  # seed 3: enough speech tokens that chunk_tokens=2 renders before the end
# (variant, chunk_tokens): 25 (no render before T3 ends) only where T3 is cheap
TOKEN_CASES = [("english", 2), ("multilingual", 2), ("turbo", 2), ("turbo", 25), ("nano", 2),
               ("nano", 25)]  # fmt: skip
ONE_SHOT: dict[str, list[int]] = {}


@pytest.mark.parametrize("variant,chunk_tokens", TOKEN_CASES)
def test_same_seed_same_tokens_one_shot_and_streamed(request, monkeypatch, variant,
                                                     chunk_tokens):  # fmt: skip
    """Seed 3: the tokens T3 speaks do not depend on the flow and HiFT that a stream
    runs between its steps (chunk_tokens 2: renders before the last draw)."""
    model = request.getfixturevalue(variant)
    kwargs = dict(seed=3, max_new_tokens=MAX_NEW_TOKENS, watermark=False,
                  **LANGUAGE.get(variant, {}))  # fmt: skip
    if variant not in ONE_SHOT:
        ONE_SHOT[variant], _ = spoken_tokens(model, monkeypatch,
                                             lambda: model.generate(TEXT, **kwargs))  # fmt: skip
    streamed, renders = spoken_tokens(
        model,
        monkeypatch,
        lambda: list(model.generate_stream(TEXT, chunk_tokens=chunk_tokens, **kwargs)),
    )
    assert len(ONE_SHOT[variant]) == MAX_NEW_TOKENS
    assert streamed == ONE_SHOT[variant]
    assert (renders >= 1) == (chunk_tokens == 2), renders  # the case is what it claims


# ---------------------------------------------------------------------------- prompt level


def test_near_silent_prompt_refused_naming_its_level(english, tmp_path, stop_at_t3):
    stop_at_t3(english)
    noise = at_level(np.random.default_rng(0).standard_normal(2 * SR), -80.0)
    path = tmp_path / "dither.wav"
    sf.write(path, noise, SR, subtype="FLOAT")
    builtin = english.conds
    with pytest.raises(AudioError, match=re.escape("near-silent (-80 dBFS RMS")):
        english.generate(TEXT, audio_prompt_path=str(path))
    assert english.conds is builtin
    with pytest.raises(AudioError, match=re.escape("(-80 dBFS RMS")):
        english.prepare_voice(noise, sr=SR)


def test_quiet_prompt_warns_naming_its_level_normal_prompt_does_not(english, tmp_path):
    speech = espeak_array(tmp_path, "Hello there, how are you?")
    with pytest.warns(UserWarning, match=re.escape("very quiet (-55 dBFS RMS)")):
        voice = english.prepare_voice(at_level(speech, -55.0), sr=SR)
    assert voice.t3 is not None  # accepted
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        english.prepare_voice(speech, sr=SR)

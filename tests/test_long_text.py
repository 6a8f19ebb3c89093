"""Long text, pauses and saved voices through the pipeline (issue 17): what T3 reads is
what upstream's tokenizer would read, pauses are exact silences, a voice file speaks
exactly like its clip."""

import subprocess

from chatterbox_mlx import text as text_mod
from chatterbox_mlx.tts import ChatterboxTTS, ChatterboxTurboTTS

import mlx.core as mx
import numpy as np
import pytest
import soundfile as sf

from tests.helpers.sources import converted_dir

pytestmark = pytest.mark.pipeline

PER_TOKEN = 960
SR = 24000


@pytest.fixture(scope="module")
def turbo():
    return ChatterboxTurboTTS.from_local(converted_dir("turbo"))


@pytest.fixture(scope="module")
def english():
    return ChatterboxTTS.from_local(converted_dir("english"))


def record_chunks(model, monkeypatch):
    """Replace synthesis by one token of ones per chunk; record what each chunk encodes."""
    seen = []

    def fake_chunk(request, chunk):
        seen.append(chunk.text)
        return np.ones(PER_TOKEN, np.float32)

    monkeypatch.setattr(model, "_one_chunk", fake_chunk)
    return seen


@pytest.mark.parametrize(
    "text",
    [
        'She said "Yes." Then she left!',
        "He whispered (quietly.) And then?",
        "Wait... what? Really…",
        "今天天气很好。欢迎收听每周新闻！",
        "[laugh] Well, [clear throat] hello.",
    ],
)
def test_short_text_reaches_the_tokenizer_unchanged(turbo, monkeypatch, text):
    encoded = []
    real_encode = turbo._encode

    def spy(piece, language_id):
        encoded.append(piece)
        return real_encode(piece, language_id)

    monkeypatch.setattr(turbo, "_encode", spy)
    record_chunks(turbo, monkeypatch)
    turbo.generate(text, watermark=False)
    assert encoded == [text]  # one chunk, the very string (no quote dropped, no space added)


def test_long_text_is_cut_by_slicing_the_original(turbo, monkeypatch):
    seen = record_chunks(turbo, monkeypatch)
    text = " ".join(f'Sentence number {i} says "hello." Then it ends!' for i in range(40))
    turbo.generate(text, watermark=False)
    assert len(seen) > 1 and all(len(c) <= 300 for c in seen)
    position = 0
    for chunk in seen:  # every chunk is a slice of the original, in order
        found = text.index(chunk, position)
        assert text[position:found].strip() == ""
        position = found + len(chunk)
    assert text[position:].strip() == ""


def test_pause_tags_insert_exact_silence(turbo, monkeypatch):
    seen = record_chunks(turbo, monkeypatch)
    wav = turbo.generate("[pause:250ms]One.[pause:1.5s]Two. [pause:500 ms]", watermark=False)
    wav = np.asarray(wav[0])
    assert seen == ["One.", "Two."]
    lead, gap, tail = int(0.25 * SR), int(1.5 * SR), int(0.5 * SR)
    assert len(wav) == lead + PER_TOKEN + gap + PER_TOKEN + tail
    assert not wav[:lead].any() and wav[lead : lead + PER_TOKEN].any()
    assert not wav[lead + PER_TOKEN : lead + PER_TOKEN + gap].any()
    assert not wav[len(wav) - tail :].any()


@pytest.mark.parametrize("tag", ["[pause:abc]", "[pause:-1s]", "[pause:11s]", "[pause:500]"])
def test_malformed_pause_tags_are_refused_before_any_work(turbo, monkeypatch, tag):
    seen = record_chunks(turbo, monkeypatch)
    with pytest.raises(text_mod.TextError, match="pause"):
        turbo.generate(f"Hello {tag} there.", watermark=False)
    assert seen == []


@pytest.mark.slow
def test_stream_pauses_are_silence(turbo):
    pieces = list(turbo.generate_stream("Hi.[pause:200ms]", max_new_tokens=2, seed=0,
                                        watermark=False))  # fmt: skip
    last = np.asarray(pieces[-1][0])
    assert len(last) == int(0.2 * SR) and not last.any()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("voice") / "clip.wav"
    text = "This recording is long enough to clone a voice for every Chatterbox variant. " * 2
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True)
    assert sf.info(path).duration > 5
    return path


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["english", "turbo"])
def test_voice_file_speaks_exactly_like_its_clip(english, turbo, clip, tmp_path, variant):
    model = english if variant == "english" else turbo
    previous = model.conds
    try:
        kwargs = dict(max_new_tokens=3, seed=11, watermark=False)
        from_clip = model.generate("Same words.", audio_prompt_path=str(clip), **kwargs)
        voice = tmp_path / "me.voice"
        meta = model.save_voice(voice)  # the voice the clip just became
        assert meta.source_seconds == pytest.approx(sf.info(clip).duration, abs=1e-3)
        model.conds = previous
        from_voice = model.generate("Same words.", audio_prompt_path=str(voice), **kwargs)
        assert mx.array_equal(from_clip, from_voice).item()
    finally:
        model.conds = previous


def test_voice_file_of_the_other_family_is_refused(english, turbo, tmp_path):
    path = tmp_path / "turbo.voice"
    turbo.save_voice(path)  # the built-in voice, exported
    with pytest.raises(ValueError, match="Turbo/Nano"):
        english.generate("Hi.", audio_prompt_path=str(path), max_new_tokens=2)

"""Saved voice files (chatterbox_mlx/voices.py): exact round trips and every refusal.

Conditionals are built from seeded random arrays at the sizes ``prepare_conditionals``
makes (T3 prompt 150 tokens for English/Multilingual, 375 for Turbo/Nano; S3Gen prompt
250 tokens / 500 mel frames of 10 s). Bad files are made here by editing good ones.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from datetime import datetime, timezone

import chatterbox_mlx
from chatterbox_mlx.checkpoints.convert import save_conds
from chatterbox_mlx.files import sha256_file
from chatterbox_mlx.models.t3 import T3Cond
from chatterbox_mlx.voice import voice_file as voices
from chatterbox_mlx.voice.checks import FAMILY_CFG, FAMILY_TURBO
from chatterbox_mlx.voice.conditionals import Conditionals, GenCond
from chatterbox_mlx.voice.voice_file import (
    VoiceFileError,
    family_for_variant,
    is_voice_file,
    load_voice,
    save_voice,
)

import mlx.core as mx
import numpy as np
import pytest
import soundfile
from safetensors.numpy import save as st_save

from tests.helpers.torch_zip import write_conds

PROMPT_TOKENS = {FAMILY_CFG: 150, FAMILY_TURBO: 375}
SOURCE_SHA = hashlib.sha256(b"a reference clip").hexdigest()
SOURCE_SECONDS = 1 / 3 + 7  # a float whose decimal form is long: must come back exactly


def make_conds(family: str, seed: int = 0, t3: bool = True, exaggeration=0.7) -> Conditionals:
    rng = np.random.default_rng(seed)
    gen = GenCond(
        prompt_token=mx.array(rng.integers(0, 6561, (1, 250)).astype(np.int32)),
        prompt_token_len=mx.array([250], dtype=mx.int32),
        prompt_feat=mx.array(rng.standard_normal((1, 500, 80)).astype(np.float32)),
        embedding=mx.array(rng.standard_normal((1, 192)).astype(np.float32)),
    )
    if not t3:
        return Conditionals(None, gen)
    tokens = rng.integers(0, 6561, (1, PROMPT_TOKENS[family])).astype(np.int32)
    t3_cond = T3Cond(
        speaker_emb=mx.array(rng.standard_normal((1, 256)).astype(np.float32)),
        cond_prompt_speech_tokens=mx.array(tokens),
        emotion_adv=None if exaggeration is None else exaggeration * mx.ones((1, 1, 1)),
    )
    return Conditionals(t3_cond, gen)


def assert_same_tensors(a: Conditionals, b: Conditionals) -> None:
    fa, fb = a.to_flat(), b.to_flat()
    assert sorted(fa) == sorted(fb)
    for name in fa:
        x, y = np.asarray(fa[name]), np.asarray(fb[name])
        assert (x.dtype, x.shape) == (y.dtype, y.shape), name
        assert x.tobytes() == y.tobytes(), name


def read_raw(path) -> tuple[dict, bytes]:
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def write_raw(path, header: dict, data: bytes) -> None:
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + data)


def craft(path, arrays: dict, metadata: dict) -> None:
    """A voice file of these tensors and metadata with a valid digest: it passes the
    integrity checks, so what is refused is the content itself."""
    metadata = dict(metadata)
    records = [(n, voices._code_of(a.dtype), a.shape, a.tobytes()) for n, a in arrays.items()]
    metadata["digest"] = voices._digest(records, metadata)
    path.write_bytes(st_save(arrays, metadata=metadata))


def good_parts(tmp_path, family=FAMILY_CFG) -> tuple[dict, dict]:
    """The tensors (numpy) and metadata of a freshly saved good voice."""
    path = tmp_path / f"good-{family}.voice"
    save_voice(path, make_conds(family), family=family)
    header, data = read_raw(path)
    metadata = header.pop("__metadata__")
    arrays = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        dtype = {"F32": np.float32, "I32": np.int32}[info["dtype"]]
        arrays[name] = np.frombuffer(data[begin:end], dtype).reshape(info["shape"]).copy()
    return arrays, metadata


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "me.voice"
    save_voice(path, make_conds(FAMILY_CFG), family=FAMILY_CFG, source_sha256=SOURCE_SHA,
               source_seconds=SOURCE_SECONDS)  # fmt: skip
    return path


# ---------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("family", [FAMILY_CFG, FAMILY_TURBO])
def test_round_trip_is_exact(tmp_path, family):
    conds = make_conds(family, seed=3, exaggeration=0.7 if family == FAMILY_CFG else 0.5)
    path = tmp_path / "me.voice"
    before = datetime.now(timezone.utc).replace(microsecond=0)
    written = save_voice(path, conds, family=family, source_sha256=SOURCE_SHA,
                         source_seconds=SOURCE_SECONDS)  # fmt: skip
    voice = load_voice(path, family=family)

    assert_same_tensors(voice.conds, conds)
    assert voice.conds.t3.cond_prompt_speech_tokens.shape == (1, PROMPT_TOKENS[family])
    meta = voice.meta
    assert meta == written
    assert meta.family == family
    assert meta.source_sha256 == SOURCE_SHA
    assert meta.source_seconds == SOURCE_SECONDS
    assert meta.exaggeration == (0.7 if family == FAMILY_CFG else None)
    assert meta.format == "chatterbox-mlx-voice" and meta.format_version == 1
    assert meta.library_version == chatterbox_mlx.__version__
    created = datetime.fromisoformat(meta.created)
    assert created.utcoffset().total_seconds() == 0
    assert before <= created <= datetime.now(timezone.utc)
    # The metadata strings in the file are exactly what the dataclass says.
    header, _ = read_raw(path)
    assert header["__metadata__"] == meta.to_metadata()
    assert meta.digest.startswith("sha256:") and len(meta.digest) == 7 + 64


def test_turbo_voice_without_exaggeration_slot_stays_without(tmp_path):
    conds = make_conds(FAMILY_TURBO, exaggeration=None)
    save_voice(tmp_path / "t.voice", conds, family=FAMILY_TURBO)
    voice = load_voice(tmp_path / "t.voice", family=FAMILY_TURBO)
    assert voice.conds.t3.emotion_adv is None  # not T3Cond's default 0.5
    assert voice.meta.exaggeration is None
    assert_same_tensors(voice.conds, conds)


def test_plain_float_exaggeration_is_saved_as_a_tensor(tmp_path):
    conds = make_conds(FAMILY_CFG)
    conds.t3.emotion_adv = 0.25  # T3Cond accepts a float
    save_voice(tmp_path / "f.voice", conds, family=FAMILY_CFG)
    voice = load_voice(tmp_path / "f.voice")
    assert voice.meta.exaggeration == 0.25
    assert voice.conds.t3.emotion_adv.shape == (1, 1, 1)
    assert voice.conds.t3.emotion_adv.dtype == mx.float32


def test_voice_conversion_voice_has_no_t3(tmp_path):
    conds = make_conds(FAMILY_CFG, t3=False)
    conds.gen.prompt_feat_len = mx.array([500], dtype=mx.int32)
    save_voice(tmp_path / "vc.voice", conds, family=FAMILY_CFG)
    voice = load_voice(tmp_path / "vc.voice")
    assert voice.conds.t3 is None and voice.meta.exaggeration is None
    assert_same_tensors(voice.conds, conds)
    with pytest.raises(VoiceFileError, match="only the S3Gen part.*text-to-speech model"):
        load_voice(tmp_path / "vc.voice", family=FAMILY_CFG, require_t3=True)


@pytest.mark.parametrize("variant", ["english", "turbo"])
def test_builtin_voice_exports(tmp_path, variant):
    """conds.pt -> the converter's conds.safetensors -> Conditionals.load -> a voice file."""
    conds_pt = write_conds(tmp_path / "conds.pt", variant, seed=5)
    save_conds(tmp_path / "conds.safetensors", conds_pt)
    builtin = Conditionals.load(tmp_path / "conds.safetensors")
    family = family_for_variant(variant)
    save_voice(tmp_path / "builtin.voice", builtin, family=family)
    voice = load_voice(tmp_path / "builtin.voice", family=family, require_t3=True)
    assert_same_tensors(voice.conds, builtin)
    assert voice.meta.source_sha256 is None and voice.meta.source_seconds is None
    assert voice.meta.exaggeration == (0.5 if variant == "english" else None)
    assert "source_sha256" not in read_raw(tmp_path / "builtin.voice")[0]["__metadata__"]
    # The model's own conds file is not a voice file, and says what it is.
    assert not is_voice_file(tmp_path / "conds.safetensors")
    with pytest.raises(VoiceFileError, match="built-in voice.*Conditionals.load"):
        load_voice(tmp_path / "conds.safetensors")


def test_family_for_variant():
    for variant in ("english", "multilingual", "multilingual-v3", "en", "mtl"):
        assert family_for_variant(variant) == FAMILY_CFG
    for variant in ("turbo", "nano"):
        assert family_for_variant(variant) == FAMILY_TURBO


def test_loading_runs_no_encoder(saved):
    """load_voice must not touch the S3Tokenizer, CAMPPlus or VoiceEncoder (not even import
    them): a fresh interpreter loads a voice and reports which model modules it imported."""
    code = (
        "import sys, chatterbox_mlx.voice.voice_file as v\n"
        f"voice = v.load_voice({str(saved)!r}, family='cfg')\n"
        "assert voice.conds.t3 is not None\n"
        "print(' '.join(m for m in sys.modules if m.startswith('chatterbox_mlx.models')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(__file__)))  # fmt: skip
    loaded = out.stdout.split()
    assert "chatterbox_mlx.models.flow" in loaded  # the check itself sees imports
    for name in ("s3tokenizer", "campplus", "voice_encoder"):
        assert f"chatterbox_mlx.models.{name}" not in loaded


def test_is_voice_file(tmp_path, saved):
    assert is_voice_file(saved)
    renamed = tmp_path / "me.safetensors"
    shutil.copy(saved, renamed)
    assert is_voice_file(renamed)  # by its metadata
    assert is_voice_file(tmp_path / "absent.VOICE")  # by name: load_voice will explain
    wav = tmp_path / "clip.wav"
    soundfile.write(wav, np.zeros(1600, np.float32), 16000)
    assert not is_voice_file(wav)
    weights = tmp_path / "weights.safetensors"
    weights.write_bytes(st_save({"w": np.zeros(3, np.float32)}))
    assert not is_voice_file(weights)
    assert not is_voice_file(tmp_path / "absent.wav")
    assert not is_voice_file(tmp_path)
    (tmp_path / "short.bin").write_bytes(b"abc")
    assert not is_voice_file(tmp_path / "short.bin")


def test_sha256_file(tmp_path):
    data = np.random.default_rng(0).bytes(100_000)
    (tmp_path / "x").write_bytes(data)
    assert sha256_file(tmp_path / "x") == hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------- refusals


def test_refuses_another_family(tmp_path):
    save_voice(tmp_path / "turbo.voice", make_conds(FAMILY_TURBO), family=FAMILY_TURBO)
    with pytest.raises(VoiceFileError) as err:
        load_voice(tmp_path / "turbo.voice", family=FAMILY_CFG)
    message = str(err.value)
    assert str(tmp_path / "turbo.voice") in message
    assert "made for Turbo/Nano" in message and "is English/Multilingual" in message
    assert "Save the voice again with this model" in message

    save_voice(tmp_path / "en.voice", make_conds(FAMILY_CFG), family=FAMILY_CFG)
    with pytest.raises(VoiceFileError, match="made for English/Multilingual.*is Turbo/Nano"):
        load_voice(tmp_path / "en.voice", family=FAMILY_TURBO)
    assert load_voice(tmp_path / "en.voice").meta.family == FAMILY_CFG  # family=None: any


def test_refuses_a_newer_format_version(saved):
    header, data = read_raw(saved)
    header["__metadata__"]["format_version"] = str(voices.FORMAT_VERSION + 1)
    write_raw(saved, header, data)
    with pytest.raises(VoiceFileError) as err:
        load_voice(saved)
    message = str(err.value)
    assert str(saved) in message and "version 2 is newer" in message
    assert "upgrade chatterbox-mlx" in message


@pytest.mark.parametrize("version", ["0", "one", ""])
def test_refuses_a_malformed_format_version(saved, version):
    header, data = read_raw(saved)
    header["__metadata__"]["format_version"] = version
    write_raw(saved, header, data)
    with pytest.raises(VoiceFileError, match="format_version"):
        load_voice(saved)


@pytest.mark.parametrize("where", ["last byte", "half", "in the header", "length", "empty"])
def test_refuses_a_truncated_file(saved, where):
    blob = saved.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    keep = {"last byte": len(blob) - 1, "half": len(blob) // 2, "in the header": 8 + n // 2,
            "length": 5, "empty": 0}[where]  # fmt: skip
    saved.write_bytes(blob[:keep])
    with pytest.raises(VoiceFileError, match="truncated voice file") as err:
        load_voice(saved)
    assert str(saved) in str(err.value) and "copy or save it again" in str(err.value)


def test_refuses_bytes_appended(saved):
    saved.write_bytes(saved.read_bytes() + b"\0\0\0\0")
    with pytest.raises(VoiceFileError, match="4 unexpected bytes after its tensors"):
        load_voice(saved)


def test_refuses_text_and_other_safetensors(tmp_path):
    text = tmp_path / "notes.voice"
    text.write_text("this is not a voice, just some words in a text file\n" * 3)
    with pytest.raises(VoiceFileError, match="not a voice file \\(not safetensors"):
        load_voice(text)
    weights = tmp_path / "weights.voice"
    weights.write_bytes(st_save({"w": np.zeros(3, np.float32)}))
    with pytest.raises(VoiceFileError, match="without voice metadata"):
        load_voice(weights)
    other = tmp_path / "other.voice"
    other.write_bytes(st_save({"w": np.zeros(3, np.float32)}, metadata={"format": "pt"}))
    with pytest.raises(VoiceFileError, match="of format 'pt'"):
        load_voice(other)
    junk = tmp_path / "junk.voice"
    junk.write_bytes(struct.pack("<Q", 4) + b"{{{{")
    with pytest.raises(VoiceFileError, match="header is not JSON"):
        load_voice(junk)


def _numpy_wav(path):
    t = np.arange(16000) / 16000
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)


def _espeak_wav(path):
    subprocess.run(["espeak-ng", "-w", str(path), "A saved voice."], check=True)


def _sox_wav(path):
    subprocess.run(["sox", "-n", "-r", "16000", str(path), "synth", "0.5", "sine", "440"],
                   check=True)  # fmt: skip


def _numpy_flac(path):
    soundfile.write(path, np.zeros(8000, np.float32), 16000, format="FLAC")


@pytest.mark.parametrize(
    "make, kind, tool",
    [
        (_numpy_wav, "WAV", None),
        (_numpy_flac, "FLAC", None),
        (_espeak_wav, "WAV", "espeak-ng"),
        (_sox_wav, "WAV", "sox"),
    ],  # fmt: skip
    ids=["numpy-wav", "numpy-flac", "espeak-ng-wav", "sox-wav"],
)
def test_refuses_an_audio_file_renamed(tmp_path, make, kind, tool):
    if tool is not None and shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    clip = tmp_path / f"clip.{kind.lower()}"
    make(clip)
    renamed = tmp_path / "me.voice"
    clip.rename(renamed)
    assert is_voice_file(renamed)  # by its name; loading says what it really is
    with pytest.raises(VoiceFileError) as err:
        load_voice(renamed)
    message = str(err.value)
    assert f"this is a {kind} audio file, not a voice file" in message
    assert str(renamed) in message and "reference clip" in message


@pytest.mark.parametrize("tensor", ["gen.prompt_feat", "t3.cond_prompt_speech_tokens"])
def test_refuses_a_flipped_tensor_byte(saved, tensor):
    header, data = read_raw(saved)
    begin, end = header[tensor]["data_offsets"]
    data = bytearray(data)
    data[(begin + end) // 2] ^= 0x01
    write_raw(saved, header, bytes(data))
    with pytest.raises(VoiceFileError, match="do not match its digest.*modified or corrupted"):
        load_voice(saved)


@pytest.mark.parametrize(
    "key, value", [("family", "turbo"), ("exaggeration", "2.0"), ("source_seconds", "3.0")]
)
def test_refuses_edited_metadata(saved, key, value):
    header, data = read_raw(saved)
    header["__metadata__"][key] = value
    write_raw(saved, header, data)
    with pytest.raises(VoiceFileError, match="do not match its digest"):
        load_voice(saved, family=None)


def test_refuses_a_missing_or_wrong_digest(tmp_path, saved):
    header, data = read_raw(saved)
    del header["__metadata__"]["digest"]
    write_raw(saved, header, data)
    with pytest.raises(VoiceFileError, match="do not match its digest"):
        load_voice(saved)


def _crafted_problem(tmp_path, family, edit):
    arrays, metadata = good_parts(tmp_path, family)
    edit(arrays, metadata)
    path = tmp_path / "crafted.voice"
    craft(path, arrays, metadata)
    with pytest.raises(VoiceFileError) as err:
        load_voice(path)
    assert str(path) in str(err.value)
    return str(err.value)


def test_crafted_good_file_loads(tmp_path):
    """The editing helpers themselves: an unedited crafted file is accepted."""
    arrays, metadata = good_parts(tmp_path)
    craft(tmp_path / "same.voice", arrays, metadata)
    assert load_voice(tmp_path / "same.voice").meta.exaggeration == 0.7


def _set(name, value):
    def edit(arrays, metadata):
        arrays[name] = value

    return edit


def _drop(name):
    def edit(arrays, metadata):
        del arrays[name]

    return edit


def _nan_at(name, index, value=np.nan):
    def edit(arrays, metadata):
        arrays[name].reshape(-1)[index] = value

    return edit


def _meta(key, value):
    def edit(arrays, metadata):
        if value is None:
            del metadata[key]
        else:
            metadata[key] = value

    return edit


RNG = np.random.default_rng(9)
CONTENT_CASES = {
    "missing speaker_emb": (_drop("t3.speaker_emb"), "missing tensors \\['t3.speaker_emb'\\]"),
    "missing embedding": (_drop("gen.embedding"), "missing tensors \\['gen.embedding'\\]"),
    "missing exaggeration (cfg)": (_drop("t3.emotion_adv"), "missing tensors \\['t3.emotion_adv"),
    "unexpected tensor": (_set("t3.clap_emb", np.zeros((1, 512), np.float32)),
                          "unexpected tensors \\['t3.clap_emb'\\]"),
    "speaker_emb shape": (_set("t3.speaker_emb", np.zeros((1, 128), np.float32)),
                          "t3.speaker_emb has shape \\[1, 128\\], expected \\[1, 256\\]"),
    "prompt_feat shape": (_set("gen.prompt_feat", np.zeros((1, 500, 81), np.float32)),
                          "gen.prompt_feat has shape \\[1, 500, 81\\], expected \\[1, F, 80\\]"),
    "embedding shape": (_set("gen.embedding", np.zeros((192,), np.float32)),
                        "gen.embedding has shape \\[192\\], expected \\[1, 192\\]"),
    "empty prompt": (_set("t3.cond_prompt_speech_tokens", np.zeros((1, 0), np.int32)),
                     "has shape \\[1, 0\\], expected \\[1, P\\]"),
    "int64 tokens": (_set("gen.prompt_token", RNG.integers(0, 6561, (1, 250))),
                     "gen.prompt_token is int64, expected int32 \\[1, T\\]"),
    "float16 speaker_emb": (_set("t3.speaker_emb", np.zeros((1, 256), np.float16)),
                            "t3.speaker_emb is float16, expected float32"),
    "NaN mel": (_nan_at("gen.prompt_feat", 1234), "gen.prompt_feat has 1 non-finite values"),
    "inf speaker": (_nan_at("t3.speaker_emb", 7, np.inf), "t3.speaker_emb has 1 non-finite"),
    "token id too large": (_nan_at("gen.prompt_token", 3, 6561),
                           "gen.prompt_token holds ids outside 0..6560"),
    "negative token": (_nan_at("t3.cond_prompt_speech_tokens", 0, -1),
                       "t3.cond_prompt_speech_tokens holds ids outside"),
    "turbo-length prompt": (_set("t3.cond_prompt_speech_tokens", np.ones((1, 375), np.int32)),
                            "has 375 tokens; English/Multilingual voices have at most 150"),
    "mel longer than tokens": (_set("gen.prompt_feat", np.zeros((1, 600, 80), np.float32)),
                               "gen.prompt_feat has 600 frames for 250"),
    "token_len": (_set("gen.prompt_token_len", np.array([251], np.int32)),
                  "gen.prompt_token_len is 251, expected 1..250"),
    "exaggeration mismatch": (_meta("exaggeration", "0.5"),
                              "exaggeration 0.5 does not match t3.emotion_adv \\(0.7\\)"),
    "no exaggeration": (_meta("exaggeration", None), "exaggeration None does not match"),
    "unknown family": (_meta("family", "bark"), "unknown family 'bark'"),
    "bad seconds": (_meta("source_seconds", "nan"), "source_seconds='nan'"),
    "bad sha": (_meta("source_sha256", "abc"), "source_sha256='abc'"),
    "bad created": (_meta("created", "yesterday"), "created='yesterday'"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CONTENT_CASES))
def test_refuses_bad_content(tmp_path, case):
    edit, expected = CONTENT_CASES[case]
    message = _crafted_problem(tmp_path, FAMILY_CFG, edit)
    assert re.search(expected, message), message


def test_refuses_turbo_content_problems(tmp_path):
    message = _crafted_problem(
        tmp_path, FAMILY_TURBO, _set("t3.cond_prompt_speech_tokens", np.ones((1, 376), np.int32))
    )
    assert "has 376 tokens; Turbo/Nano voices have at most 375" in message
    message = _crafted_problem(tmp_path, FAMILY_TURBO, _meta("exaggeration", "0.5"))
    assert "exaggeration 0.5 does not match t3.emotion_adv (None)" in message


def test_refuses_overlapping_tensor_data(saved):
    header, data = read_raw(saved)
    names = sorted(
        (k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"]
    )
    begin, end = header[names[1]]["data_offsets"]
    header[names[1]]["data_offsets"] = [0, end - begin]  # over the first tensor's bytes
    write_raw(saved, header, data)
    with pytest.raises(VoiceFileError, match="corrupt voice file"):
        load_voice(saved)


def test_refuses_missing_paths(tmp_path):
    with pytest.raises(VoiceFileError, match="no such voice file"):
        load_voice(tmp_path / "absent.voice")
    with pytest.raises(VoiceFileError, match="is a folder"):
        load_voice(tmp_path)
    with pytest.raises(ValueError, match="unknown voice family 'bark'"):
        load_voice(tmp_path / "absent.voice", family="bark")


# ---------------------------------------------------------------------------- saving


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("tensor", ["t3.speaker_emb", "gen.prompt_feat", "gen.embedding"])
def test_save_refuses_non_finite(tmp_path, tensor):
    conds = make_conds(FAMILY_CFG)
    part, name = tensor.split(".")
    obj = conds.t3 if part == "t3" else conds.gen
    value = np.array(getattr(obj, name))
    value.reshape(-1)[-1] = np.nan
    setattr(obj, name, mx.array(value))
    with pytest.raises(VoiceFileError, match=f"{tensor} has 1 non-finite values"):
        save_voice(tmp_path / "me.voice", conds, family=FAMILY_CFG)
    assert leftovers(tmp_path) == []


def test_save_refuses_what_load_would(tmp_path):
    path = tmp_path / "me.voice"
    with pytest.raises(VoiceFileError, match="at most 150"):
        save_voice(path, make_conds(FAMILY_TURBO), family=FAMILY_CFG)
    conds = make_conds(FAMILY_CFG)
    conds.t3.speaker_emb = conds.t3.speaker_emb[:, :100]
    with pytest.raises(VoiceFileError, match="t3.speaker_emb has shape \\[1, 100\\]"):
        save_voice(path, conds, family=FAMILY_CFG)
    conds = make_conds(FAMILY_CFG)
    conds.gen.prompt_token = conds.gen.prompt_token.astype(mx.int64)
    with pytest.raises(VoiceFileError, match="gen.prompt_token is int64"):
        save_voice(path, conds, family=FAMILY_CFG)
    with pytest.raises(VoiceFileError, match="unknown family 'english'"):
        save_voice(path, make_conds(FAMILY_CFG), family="english")
    with pytest.raises(VoiceFileError, match="source_sha256 must be 64"):
        save_voice(path, make_conds(FAMILY_CFG), family=FAMILY_CFG, source_sha256="ABC")
    with pytest.raises(VoiceFileError, match="source_seconds must be a positive"):
        save_voice(path, make_conds(FAMILY_CFG), family=FAMILY_CFG, source_seconds=0.0)
    with pytest.raises(VoiceFileError, match="expected prepared Conditionals"):
        save_voice(path, {"t3": None}, family=FAMILY_CFG)
    assert leftovers(tmp_path) == []


def test_save_failure_keeps_the_old_file_and_no_temp(tmp_path, saved, monkeypatch):
    old = saved.read_bytes()

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(VoiceFileError, match="writing failed \\(No space left on device\\)"):
        save_voice(saved, make_conds(FAMILY_CFG, seed=8), family=FAMILY_CFG)
    assert leftovers(tmp_path) == ["me.voice"]
    assert saved.read_bytes() == old


def test_save_into_an_unwritable_folder(tmp_path, monkeypatch):
    folder = tmp_path / "locked"
    folder.mkdir()
    real_open = os.open

    def refuse(path, *args, **kwargs):  # as root, chmod would not stop the write
        if os.path.dirname(os.fspath(path)) == str(folder):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(VoiceFileError) as err:
        save_voice(folder / "me.voice", make_conds(FAMILY_CFG), family=FAMILY_CFG)
    message = str(err.value)
    assert str(folder / "me.voice") in message and "Permission denied" in message
    assert "choose a folder you can write to" in message
    assert leftovers(folder) == []


def test_save_to_bad_places(tmp_path):
    with pytest.raises(VoiceFileError, match="the folder .*absent does not exist"):
        save_voice(tmp_path / "absent" / "me.voice", make_conds(FAMILY_CFG), family=FAMILY_CFG)
    (tmp_path / "dir.voice").mkdir()
    with pytest.raises(VoiceFileError, match="it is a folder"):
        save_voice(tmp_path / "dir.voice", make_conds(FAMILY_CFG), family=FAMILY_CFG)
    assert leftovers(tmp_path) == ["dir.voice"]


def test_saved_file_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        save_voice(tmp_path / "me.voice", make_conds(FAMILY_CFG), family=FAMILY_CFG)
    finally:
        os.umask(old)
    assert (tmp_path / "me.voice").stat().st_mode & 0o777 == 0o640

"""prepare_conditionals against the reference pipelines (tests/reference/gen_conditionals.py).

Tokens (T3 prompt and S3Gen prompt) must be identical; embeddings and the prompt mel use
the project's 1e-4 relative tolerance (float32; the audio path - soxr and sinc resampling,
loudness gain, STFTs - and the networks each round differently from torch, ~1e-6 seen).
"""

from __future__ import annotations

import json

from chatterbox_mlx.audio import AudioError
from chatterbox_mlx.models import campplus as cp
from chatterbox_mlx.models import s3tokenizer as s3
from chatterbox_mlx.models import voice_encoder as ve
from chatterbox_mlx.models.t3 import T3Cond
from chatterbox_mlx.models.weights import load_safetensors, load_strict, strip_prefix
from chatterbox_mlx.variants import PromptSettings
from chatterbox_mlx.voice.conditionals import Conditionals, GenCond
from chatterbox_mlx.voice.prepare import prepare_conditionals, prepare_gen_conditionals

import mlx.core as mx
import numpy as np
import pytest
import soundfile

from tests.helpers.checkpoints import cached_checkpoint, random_tensor
from tests.helpers.golden import assert_close, load_golden

TOKENIZER_SEED, CAMPPLUS_SEED, VE_SEED = 21, 22, 23
CASES = {"english_a": ("english", "a", 0.7), "english_b": ("english", "b", 0.5),
         "turbo_a": ("turbo", "a", 0.5)}  # fmt: skip
TOL = 1e-4


@pytest.fixture(scope="module")
def golden():
    return load_golden("conditionals")


@pytest.fixture(scope="module")
def golden_full():
    return load_golden("conditionals_full")


@pytest.fixture(scope="module")
def files(golden, tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    out = {}
    for name in ("a", "b"):
        out[name] = folder / f"{name}.wav"
        soundfile.write(out[name], golden[f"clip_{name}"], int(golden[f"sr_{name}"]), "PCM_16")
    return out


def seeded(shapes: dict, seed: int) -> dict[str, mx.array]:
    out = {}
    for key, shape in shapes.items():
        dtype = "int64" if key.endswith("num_batches_tracked") else "float32"
        out[key] = mx.array(random_tensor(key, tuple(shape), dtype, seed))
    return out


@pytest.fixture(scope="module")
def reduced(golden):
    shapes = json.loads(str(golden["state_shapes"]))
    tokenizer = s3.S3TokenizerV2(
        s3.S3TokenizerConfig(n_audio_state=128, n_audio_head=2, n_audio_layer=2)
    )
    load_strict(tokenizer, s3.sanitize(seeded(shapes["tokenizer"], TOKENIZER_SEED)), "tok")
    campplus = cp.CAMPPlus(
        cp.CAMPPlusConfig(embedding_size=24, growth_rate=8, bn_size=2, init_channels=16)
    )
    load_strict(campplus, cp.sanitize(seeded(shapes["campplus"], CAMPPLUS_SEED)), "campplus")
    encoder = ve.VoiceEncoder(ve.VoiceEncoderConfig(ve_hidden_size=64, speaker_embed_size=32))
    load_strict(encoder, ve.sanitize(seeded(shapes["ve"], VE_SEED)), "ve")
    return dict(s3tokenizer=tokenizer, campplus=campplus, voice_encoder=encoder)


@pytest.fixture(scope="module")
def full():
    weights = load_safetensors(cached_checkpoint("s3gen"))
    tokenizer = s3.S3TokenizerV2()
    load_strict(tokenizer, s3.sanitize(strip_prefix(weights, "tokenizer.")), "tokenizer")
    campplus = cp.CAMPPlus()
    load_strict(campplus, cp.sanitize(strip_prefix(weights, "speaker_encoder.")), "campplus")
    encoder = ve.VoiceEncoder()
    load_strict(encoder, ve.sanitize(load_safetensors(cached_checkpoint("ve"))), "ve")
    return dict(s3tokenizer=tokenizer, campplus=campplus, voice_encoder=encoder)


def check(conds: Conditionals, expected: dict, name: str, prompt_feat=None) -> None:
    t3, gen = conds.t3, conds.gen
    np.testing.assert_array_equal(
        np.array(t3.cond_prompt_speech_tokens), expected[f"{name}_cond_prompt_speech_tokens"]
    )
    np.testing.assert_array_equal(np.array(gen.prompt_token), expected[f"{name}_prompt_token"])
    np.testing.assert_array_equal(
        np.array(gen.prompt_token_len), expected[f"{name}_prompt_token_len"]
    )
    np.testing.assert_allclose(np.array(t3.emotion_adv), expected[f"{name}_emotion_adv"])
    assert gen.prompt_feat_len is None
    assert_close(gen.embedding, expected[f"{name}_embedding"], TOL, f"{name} x-vector")
    feat = expected[f"{name}_prompt_feat"] if prompt_feat is None else prompt_feat
    assert_close(gen.prompt_feat, feat, TOL, f"{name} prompt_feat")
    assert_close(t3.speaker_emb, expected[f"{name}_speaker_emb"], TOL, f"{name} speaker_emb")


def run_case(models, files, name):
    variant, clip, exaggeration = CASES[name]
    return prepare_conditionals(files[clip], variant=variant, exaggeration=exaggeration, **models)


@pytest.mark.golden
@pytest.mark.parametrize("name", CASES)
def test_reduced(reduced, golden, files, name):
    check(run_case(reduced, files, name), golden, name)


@pytest.mark.slow
@pytest.mark.golden
@pytest.mark.parametrize("name", CASES)
def test_full_size(full, golden, golden_full, files, name):
    conds = run_case(full, files, name)
    check(conds, golden_full, name, prompt_feat=golden[f"{name}_prompt_feat"])


@pytest.mark.golden
def test_array_input_stereo_channels_first(reduced, golden):
    stereo = golden["clip_b"].T.astype(np.float32) / 32768.0  # [2, T], as soundfile reads it
    conds = prepare_conditionals(stereo, sr=int(golden["sr_b"]), **reduced)
    check(conds, golden, "english_b")


@pytest.mark.golden
def test_vc_target_voice_is_embed_ref(reduced, golden, files):
    models = {k: reduced[k] for k in ("s3tokenizer", "campplus")}
    gen = prepare_gen_conditionals(files["b"], **models)
    np.testing.assert_array_equal(np.array(gen.prompt_token), golden["english_b_prompt_token"])
    assert_close(gen.prompt_feat, golden["english_b_prompt_feat"], TOL, "prompt_feat")


def test_save_load_roundtrip(tmp_path):
    conds = Conditionals(
        T3Cond(
            speaker_emb=mx.arange(4, dtype=mx.float32)[None],
            cond_prompt_speech_tokens=mx.array([[1, 2, 3]], dtype=mx.int32),
            emotion_adv=0.3 * mx.ones((1, 1, 1)),
        ),
        GenCond(
            prompt_token=mx.array([[5, 6]], dtype=mx.int32),
            prompt_token_len=mx.array([2], dtype=mx.int32),
            prompt_feat=mx.ones((1, 4, 80)),
            embedding=mx.zeros((1, 192)),
        ),
    )
    path = tmp_path / "voice.safetensors"
    conds.save(path)
    back = Conditionals.load(path)
    assert back.gen.prompt_feat_len is None
    for key, value in conds.to_flat().items():
        np.testing.assert_array_equal(np.array(back.to_flat()[key]), np.array(value), key)
    # The converter's flattened conds.pt: int64 tokens, extra keys named.
    flat = conds.to_flat()
    flat["gen.prompt_token"] = flat["gen.prompt_token"].astype(mx.int64)
    assert Conditionals.from_flat(flat).gen.prompt_token.dtype == mx.int32
    flat["t3.clap"] = mx.zeros((1,))
    with pytest.raises(ValueError, match="unknown t3 entries \\['clap'\\]"):
        Conditionals.from_flat(flat)


def test_prompt_settings():
    assert PromptSettings.for_variant("english") == PromptSettings(6, 150)
    assert PromptSettings.for_variant("multilingual") == PromptSettings(6, 150)
    for name in ("turbo", "nano"):
        assert PromptSettings.for_variant(name) == PromptSettings(15, 375, True, 5.0)


@pytest.mark.golden
def test_bad_input(reduced, golden, files, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all" * 100)
    with pytest.raises(AudioError, match="cannot read audio file"):
        prepare_conditionals(bad, **reduced)
    with pytest.raises(AudioError, match="not found"):
        prepare_conditionals(tmp_path / "missing.wav", **reduced)
    with pytest.raises(AudioError, match="empty"):
        prepare_conditionals(np.zeros(0, np.float32), sr=16000, **reduced)
    with pytest.raises(AudioError, match="silent"):
        prepare_conditionals(np.zeros(48000, np.float32), sr=24000, **reduced)
    nan = np.ones(48000, np.float32)
    nan[100] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        prepare_conditionals(nan, sr=24000, **reduced)
    with pytest.raises(AudioError, match="more than 5 s"):
        prepare_conditionals(files["b"], variant="turbo", **reduced)
    with pytest.raises(AudioError, match="ms long"):
        prepare_conditionals(0.1 * np.ones(240, np.float32), sr=24000, **reduced)
    with pytest.raises(ValueError, match="sample rate"):
        prepare_conditionals(np.ones(4800, np.float32), **reduced)

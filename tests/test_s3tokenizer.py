"""S3Tokenizer V2 against the PyTorch reference (goldens from tests/reference/gen_s3tokenizer.py).

Token ids must be identical. Continuous intermediates use the project's 1e-4 relative
tolerance (float32; attention and the 31-tap FSMN reorder sums, observed errors ~1e-6).
The pre-rounding FSQ values of the goldens stay >= 3e-4 away from the rounding points
(+-0.5), far above those errors, so identical tokens are a fair requirement.
"""

from __future__ import annotations

import json

from chatterbox_mlx.models.s3tokenizer import (
    S3TokenizerConfig,
    S3TokenizerV2,
    pad_to_token_multiple,
    sanitize,
)
from chatterbox_mlx.models.weights import (
    CheckpointError,
    load_safetensors,
    load_strict,
    strip_prefix,
)

import mlx.core as mx
import numpy as np
import pytest

from tests.helpers.checkpoints import cached_checkpoint, random_tensor
from tests.helpers.golden import assert_close, load_golden

SEED = 11
NOISE_SEED = 5
LONG_SECONDS = 32.5
CLIPS = ("speech_22050", "speech_44100", "speech_8000", "noise")


def noise(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)


def long_input(clips: list[np.ndarray]) -> np.ndarray:
    tiled = np.tile(np.concatenate(clips), 20)[: int(LONG_SECONDS * 16000)]
    return (tiled + 0.5 * noise(LONG_SECONDS, NOISE_SEED + 1)).astype(np.float32)


@pytest.fixture(scope="module")
def golden():
    return load_golden("s3tokenizer")


@pytest.fixture(scope="module")
def wavs(golden):
    out = {k: golden[f"wav_{k}"] for k in CLIPS if k != "noise"}
    out["noise"] = noise(2.0, NOISE_SEED)
    return out


@pytest.fixture(scope="module")
def reduced(golden):
    shapes = json.loads(str(golden["state_shapes"]))
    weights = {k: mx.array(random_tensor(k, tuple(s), "float32", SEED)) for k, s in shapes.items()}
    model = S3TokenizerV2(S3TokenizerConfig(n_audio_state=128, n_audio_head=2, n_audio_layer=2))
    load_strict(model, sanitize(weights), "s3tokenizer (reduced)")
    return model


@pytest.fixture(scope="module")
def full():
    weights = strip_prefix(load_safetensors(cached_checkpoint("s3gen")), "tokenizer.")
    model = S3TokenizerV2()
    load_strict(model, sanitize(weights), "s3gen.safetensors tokenizer.")
    return model


def fsq_values(model, hidden):
    return mx.tanh(model.quantizer.project_down(hidden)) * 0.9990000128746033


@pytest.mark.golden
@pytest.mark.parametrize("clip", CLIPS)
def test_network_on_reference_mel(reduced, golden, clip):
    mel = mx.array(golden[f"mel_{clip}"])
    hidden, lengths = reduced.encoder(mel, mx.array([mel.shape[1]]))
    assert_close(hidden, golden[f"hidden_{clip}"], 1e-4, f"hidden {clip}")
    assert_close(fsq_values(reduced, hidden), golden[f"fsq_{clip}"], 1e-4, f"fsq {clip}")
    tokens, lens = reduced(mel, [mel.shape[1]])
    np.testing.assert_array_equal(np.array(tokens), golden[f"tokens_{clip}"])
    assert int(lens[0]) == golden[f"tokens_{clip}"].shape[1]


@pytest.mark.golden
@pytest.mark.parametrize("clip", CLIPS)
def test_tokenize_waveform(reduced, golden, wavs, clip):
    tokens, lens = reduced.tokenize([wavs[clip]])
    np.testing.assert_array_equal(np.array(tokens), golden[f"tokens_{clip}"])
    np.testing.assert_array_equal(np.array(lens), [golden[f"tokens_{clip}"].shape[1]])


@pytest.mark.golden
def test_batch_of_different_lengths(reduced, golden, wavs):
    tokens, lens = reduced.tokenize([wavs["speech_22050"], wavs["speech_8000"], wavs["noise"]])
    np.testing.assert_array_equal(np.array(lens), golden["batch_lens"])
    np.testing.assert_array_equal(np.array(tokens), golden["batch_tokens"])


@pytest.mark.golden
def test_max_len(reduced, golden, wavs):
    tokens, lens = reduced.tokenize([wavs["speech_44100"]], max_len=20)
    np.testing.assert_array_equal(np.array(tokens), golden["maxlen_tokens"])
    np.testing.assert_array_equal(np.array(lens), golden["maxlen_lens"])


@pytest.mark.golden
def test_longer_than_30s_uses_windows(reduced, golden, wavs):
    long_wav = long_input([wavs["speech_22050"], wavs["speech_44100"], wavs["speech_8000"]])
    tokens, lens = reduced.tokenize([long_wav, wavs["speech_8000"]])
    np.testing.assert_array_equal(np.array(lens), golden["long_lens"])
    np.testing.assert_array_equal(np.array(tokens), golden["long_tokens"])


def test_pad_to_token_multiple():
    wav = np.ones(16001, dtype=np.float32)
    assert pad_to_token_multiple(wav, 16000).shape == (16640,)
    assert pad_to_token_multiple(np.ones((1, 24000)), 24000).shape == (1, 24000)


@pytest.mark.golden
def test_bad_input_is_named(reduced):
    with pytest.raises(ValueError, match="non-empty mono"):
        reduced.tokenize([np.zeros(0, dtype=np.float32)])
    with pytest.raises(ValueError, match=r"log-mel \[batch, frames, 128\]"):
        reduced(mx.zeros((1, 10, 80)), [10])


def test_sanitize_accepts_missing_mel_buffers_and_names_problems():
    config = S3TokenizerConfig(n_audio_state=64, n_audio_head=1, n_audio_layer=1)
    model = S3TokenizerV2(config)
    from mlx.utils import tree_flatten

    torch_like = {}
    for key, value in tree_flatten(model.parameters()):
        if key.endswith(("conv1.weight", "conv2.weight", "fsmn_block.weight")):
            value = value.transpose(0, 2, 1)
        key = key.replace("quantizer.", "quantizer._codebook.")
        torch_like[key] = value
    load_strict(model, sanitize(torch_like), "tokenizer")  # without _mel_filters/window
    torch_like["_mel_filters"] = mx.zeros((128, 201))
    torch_like["window"] = mx.zeros((400,))
    load_strict(model, sanitize(torch_like), "tokenizer")
    del torch_like["encoder.blocks.0.attn.key.weight"]
    with pytest.raises(CheckpointError, match="missing encoder.blocks.0.attn.key.weight"):
        load_strict(model, sanitize(torch_like), "tokenizer")


def test_config_rejects_non_64_head_dim():
    with pytest.raises(ValueError, match="rope_dim"):
        S3TokenizerConfig(n_audio_state=128, n_audio_head=4)


@pytest.fixture(scope="module")
def golden_full():
    return load_golden("s3tokenizer_full")


@pytest.mark.golden
@pytest.mark.parametrize("clip", CLIPS)
def test_full_size_tokens(full, golden_full, wavs, clip):
    tokens, _ = full.tokenize([wavs[clip]])
    np.testing.assert_array_equal(np.array(tokens), golden_full[f"tokens_{clip}"])


@pytest.mark.golden
def test_full_size_batch(full, golden_full, wavs):
    tokens, lens = full.tokenize([wavs["speech_22050"], wavs["speech_8000"], wavs["noise"]])
    np.testing.assert_array_equal(np.array(lens), golden_full["batch_lens"])
    np.testing.assert_array_equal(np.array(tokens), golden_full["batch_tokens"])


def test_config_from_the_package_model_config():
    package = dict(n_mels=128, n_audio_ctx=1500, n_audio_state=1280, n_audio_head=20,
                   n_audio_layer=6, n_codebook_size=3**8, use_sdpa=False)  # fmt: skip
    assert S3TokenizerConfig.from_dict(package) == S3TokenizerConfig()
    with pytest.raises(ValueError, match="n_codebook_size 4096"):
        S3TokenizerConfig.from_dict({**package, "n_codebook_size": 4096})
    with pytest.raises(ValueError, match="unknown fields \\['n_text_ctx'\\]"):
        S3TokenizerConfig.from_dict({"n_text_ctx": 448})

"""VoiceEncoder against the PyTorch reference (goldens from tests/reference/gen_voice_encoder.py).

Embeddings use the project's 1e-4 relative tolerance (float32: 160 LSTM steps per layer
accumulate rounding differently from torch's fused kernel; observed errors ~1e-6).
"""

from __future__ import annotations

import json

from chatterbox_mlx.audio import voice_encoder_mel
from chatterbox_mlx.models.voice_encoder import (
    VoiceEncoder,
    VoiceEncoderConfig,
    frame_step,
    num_partials,
    sanitize,
)
from chatterbox_mlx.models.weights import CheckpointError, load_safetensors, load_strict

import mlx.core as mx
import numpy as np
import pytest

from tests.helpers.checkpoints import cached_checkpoint, random_tensor
from tests.helpers.golden import assert_close, load_golden

SEED = 13
CLIPS = ("long", "short")
TOL = 1e-4


@pytest.fixture(scope="module")
def golden():
    return load_golden("voice_encoder")


@pytest.fixture(scope="module")
def golden_full():
    return load_golden("voice_encoder_full")


@pytest.fixture(scope="module")
def reduced(golden):
    shapes = json.loads(str(golden["state_shapes"]))
    weights = {k: mx.array(random_tensor(k, tuple(s), "float32", SEED)) for k, s in shapes.items()}
    model = VoiceEncoder(VoiceEncoderConfig(ve_hidden_size=64, speaker_embed_size=32))
    load_strict(model, sanitize(weights), "voice encoder (reduced)")
    return model


@pytest.fixture(scope="module")
def full():
    model = VoiceEncoder()
    load_strict(model, sanitize(load_safetensors(cached_checkpoint("ve"))), "ve.safetensors")
    return model


def partials(mel: np.ndarray, step: int, n: int, frames: int = 160) -> mx.array:
    mel = np.concatenate([mel, np.zeros((max(0, step * (n - 1) + frames - len(mel)), 40))])
    return mx.array(np.stack([mel[i * step : i * step + frames] for i in range(n)]), mx.float32)


@pytest.mark.golden
@pytest.mark.parametrize("clip", CLIPS)
def test_forward_on_reference_partials(reduced, golden, clip):
    mel = golden[f"mel_{clip}"]
    step = frame_step(reduced.config, rate=1.3)
    n, _ = num_partials(len(mel), step, 0.8, reduced.config)
    embeds = reduced(partials(mel, step, n))
    assert_close(embeds, golden[f"partial_embeds_{clip}"], TOL, f"partials {clip}")


@pytest.mark.golden
@pytest.mark.parametrize("clip", CLIPS)
def test_embeds_from_mels_default_overlap(reduced, golden, clip):
    embeds = reduced.embeds_from_mels([golden[f"mel_{clip}"]])
    assert_close(embeds, golden[f"mel_embeds_{clip}"], TOL, f"mel embeds {clip}")


@pytest.mark.golden
@pytest.mark.parametrize("clip", CLIPS)
def test_mel_of_trimmed_audio(golden, clip):
    start, end = golden[f"trim_{clip}"]
    mel = voice_encoder_mel(golden[f"wav_{clip}"][start:end])
    assert_close(mel, golden[f"mel_{clip}"], TOL, f"mel {clip}")


@pytest.mark.golden
@pytest.mark.parametrize("clip", CLIPS)
def test_embeds_from_wavs(reduced, golden, clip):
    embeds = reduced.embeds_from_wavs([golden[f"wav_{clip}"]], sample_rate=16000)
    assert_close(embeds, golden[f"wav_embeds_{clip}"], TOL, f"wav embeds {clip}")


@pytest.mark.golden
def test_embeds_from_wavs_batch_and_speaker(reduced, golden):
    wavs = [golden["wav_long"], golden["wav_short"]]
    assert_close(reduced.embeds_from_wavs(wavs, 16000), golden["wav_embeds_both"], TOL, "both")
    spk = reduced.embeds_from_wavs(wavs, 16000, as_spk=True)
    assert_close(spk, golden["spk_embed_both"], TOL, "speaker")


def test_partial_counting_rules():
    config = VoiceEncoderConfig()
    assert frame_step(config, rate=1.3) == 77
    assert frame_step(config, overlap=0.5) == 80
    assert num_partials(81, 77, 0.8, config) == (1, 160)  # shorter than one partial: padded
    assert num_partials(260, 77, 0.8, config) == (2, 237)  # last 23 frames dropped
    assert num_partials(300, 77, 0.8, config) == (3, 314)  # 86% covered: kept, padded


@pytest.mark.golden
def test_bad_arguments_are_named(reduced):
    with pytest.raises(ValueError, match="overlap"):
        frame_step(reduced.config, overlap=1.0)
    with pytest.raises(ValueError, match="resample to 16000 Hz"):
        reduced.embeds_from_wavs([np.ones(24000, np.float32)], sample_rate=24000)
    with pytest.raises(ValueError, match=r"\[frames, 40\]"):
        reduced.embeds_from_mels([np.ones((100, 80), np.float32)])


def test_sanitize_names_missing_keys():
    weights = dict(load_safetensors(cached_checkpoint("ve")))
    del weights["lstm.bias_hh_l2"]
    with pytest.raises(CheckpointError, match="missing lstm.layers.2.bias_hh"):
        load_strict(VoiceEncoder(), sanitize(weights), "ve.safetensors")


def trimmed_mel(golden, clip) -> mx.array:
    start, end = golden[f"trim_{clip}"]
    return voice_encoder_mel(golden[f"wav_{clip}"][start:end])


@pytest.mark.golden
@pytest.mark.parametrize("clip", CLIPS)
def test_pipeline_with_reference_trim_points(reduced, full, golden, golden_full, clip):
    """embeds_from_wavs minus the silence trimming: our mel of the reference's trimmed
    clip, partials at rate 1.3."""
    mel = trimmed_mel(golden, clip)
    embeds = reduced.embeds_from_mels([mel], rate=1.3)
    assert_close(embeds, golden[f"wav_embeds_{clip}"], TOL, f"reduced {clip}")
    embeds = full.embeds_from_mels([mel], rate=1.3)
    assert_close(embeds, golden_full[f"wav_embeds_{clip}"], TOL, f"full {clip}")


@pytest.mark.golden
@pytest.mark.parametrize("clip", CLIPS)
def test_full_size(full, golden_full, golden, clip):
    mel = golden[f"mel_{clip}"]
    assert_close(full.embeds_from_mels([mel]), golden_full[f"mel_embeds_{clip}"], TOL, clip)
    wav = golden[f"wav_{clip}"]
    assert_close(full.embeds_from_wavs([wav], 16000), golden_full[f"wav_embeds_{clip}"], TOL, clip)


@pytest.mark.golden
def test_full_size_batch(full, golden_full, golden):
    wavs = [golden["wav_long"], golden["wav_short"]]
    assert_close(full.embeds_from_wavs(wavs, 16000), golden_full["wav_embeds_both"], TOL, "both")


def test_config_from_dict_is_strict():
    assert VoiceEncoderConfig.from_dict({"num_layers": 2}) == VoiceEncoderConfig(num_layers=2)
    with pytest.raises(ValueError, match="unknown fields \\['n_fft'\\]"):
        VoiceEncoderConfig.from_dict({"n_fft": 400})

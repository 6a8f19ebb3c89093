"""Upstream's example scripts port by changing the import: their calls, written from
upstream's signatures (chatterbox-tts 0.1.7 ``example_tts.py``, ``example_vc.py``,
``multilingual_app.py``, ``example_tts_turbo.py``), run on the random checkpoints."""

from chatterbox_mlx.devices import resolve_device
from chatterbox_mlx.tts import (
    ChatterboxMultilingualTTS,
    ChatterboxTTS,
    ChatterboxTurboTTS,
    ChatterboxVC,
)

import mlx.core as mx
import numpy as np
import pytest
import soundfile as sf

from tests.helpers.sources import converted_dir
from tests.helpers.sources import short_prompt as shorten


@pytest.mark.parametrize("name, expected", [("cpu", mx.cpu), ("CPU", mx.cpu),
                                            (mx.cpu, mx.cpu), (None, None)])  # fmt: skip
def test_devices_map_to_mlx(name, expected):
    assert resolve_device(name) == expected


@pytest.mark.parametrize("gpu", ["mps", "cuda", "cuda:0", "gpu"])
def test_gpu_names_map_to_the_gpu_or_fall_back(gpu):
    if mx.is_available(mx.gpu):
        assert resolve_device(gpu) == mx.gpu
    else:
        with pytest.warns(UserWarning, match="no GPU backend"):
            assert resolve_device(gpu) == mx.cpu


def test_unknown_device_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown device 'tpu'.*name="):
        ChatterboxTTS.from_pretrained(device="tpu")


def test_from_pretrained_takes_a_device_not_a_repo(monkeypatch):
    """``from_pretrained("mps")`` loads upstream's repo on the GPU (or CPU): it does not look
    for a hub repo named "mps"."""
    seen = {}

    def fake_load(name, variant, revision=None, **_):
        seen.update(name=name, variant=variant)
        raise RuntimeError("stop here")

    monkeypatch.setattr("chatterbox_mlx.checkpoints.hub.load_components", fake_load)
    try:
        with pytest.raises(RuntimeError, match="stop here"):
            ChatterboxTTS.from_pretrained("mps")
    finally:
        mx.set_default_device(mx.cpu)
    assert seen == {"name": "ResembleAI/chatterbox", "variant": "english"}


@pytest.mark.slow
@pytest.mark.pipeline
def test_example_tts(tmp_path):
    # model = ChatterboxTTS.from_pretrained(device=device)
    # wav = model.generate(text); ta.save("test-1.wav", wav, model.sr)
    model = shorten(ChatterboxTTS.from_local(converted_dir("english"), "cpu"))
    wav = model.generate("Ezreal and Jinx teamed up.", max_new_tokens=3)
    assert wav.ndim == 2 and wav.shape[0] == 1 and model.sr == 24000
    sf.write(tmp_path / "test-1.wav", np.asarray(wav[0]), model.sr)
    # wav = model.generate(text, audio_prompt_path=AUDIO_PROMPT_PATH, exaggeration=2.0,
    #                      cfg_weight=0.5, temperature=0.8, repetition_penalty=1.2, min_p=0.05,
    #                      top_p=1.0)
    wav = model.generate("Again.", audio_prompt_path=None, exaggeration=2.0, cfg_weight=0.5,
                         temperature=0.8, repetition_penalty=1.2, min_p=0.05, top_p=1.0,
                         max_new_tokens=3)  # fmt: skip
    assert wav.shape[1] > 0
    # s3gen.inference(speech_tokens=..., ref_dict=<upstream's plain dict>)
    ref = {k: v for k, v in vars(model.conds.gen).items()}
    out, _ = model.s3gen.inference(speech_tokens=mx.array([1, 2, 3, 4]), ref_dict=ref)
    assert out.shape[1] == 4 * 960


@pytest.mark.slow
@pytest.mark.pipeline
def test_example_turbo_and_nano():
    # model = ChatterboxTurboTTS.from_pretrained(device="cuda"); model.generate(text)
    turbo = shorten(ChatterboxTurboTTS.from_local(converted_dir("turbo"), "cpu"))
    wav = turbo.generate("Hi there [chuckle], hello.", max_new_tokens=2, top_k=1000,
                         norm_loudness=True, temperature=0.8, top_p=0.95,
                         repetition_penalty=1.2)  # fmt: skip
    assert wav.shape[1] == (2 + 3) * 960
    nano = ChatterboxTurboTTS.from_local(converted_dir("nano"), "cpu", nano=True)
    assert nano.t3.config.hidden_size == 768


@pytest.mark.slow
@pytest.mark.pipeline
def test_example_multilingual():
    # model = ChatterboxMultilingualTTS.from_pretrained(device=DEVICE)
    # wav = model.generate(text, language_id="fr", audio_prompt_path=None, exaggeration=0.5,
    #                      temperature=0.8, cfg_weight=0.5)
    model = shorten(ChatterboxMultilingualTTS.from_local(converted_dir("multilingual"), "cpu"))
    wav = model.generate("Bonjour.", language_id="fr", audio_prompt_path=None,
                         exaggeration=0.5, temperature=0.8, cfg_weight=0.5,
                         max_new_tokens=3)  # fmt: skip
    # HEAD drops the last token's audio (random weights may also sample non-speech ids)
    assert wav.shape[1] == max(1, model.last_stats["speech tokens"] - 1) * 960
    assert "fr" in ChatterboxMultilingualTTS.get_supported_languages()


@pytest.mark.slow
@pytest.mark.pipeline
def test_example_vc(tmp_path):
    # model = ChatterboxVC.from_pretrained(device)
    # wav = model.generate(audio=AUDIO_PATH, target_voice_path=TARGET_VOICE_PATH)
    model = ChatterboxVC.from_local(converted_dir("english"), "cpu")
    rng = np.random.default_rng(0)
    src, target = tmp_path / "src.wav", tmp_path / "target.wav"
    sf.write(src, 0.1 * rng.standard_normal(16000).astype(np.float32), 16000)
    sf.write(target, 0.1 * rng.standard_normal(48000).astype(np.float32), 16000)
    wav = model.generate(audio=str(src), target_voice_path=str(target))
    assert wav.ndim == 2 and wav.shape[1] > 0

"""Perth implicit watermark with the real released weights (``pip install resemble-perth``)
against ``tests/golden/perth.npz`` (``tests/reference/gen_perth.py``).

Tolerances: the marked signal uses the project's float32 target, 1e-4 of the reference
signal's max (measured about 5e-7). Detector outputs are O(1) confidences compared
absolutely at 1e-4 (measured below 1e-6). Nothing here needs torch.
"""

from __future__ import annotations

import sys

from chatterbox_mlx.models.perth import PerthConfig, PerthNet, sanitize
from chatterbox_mlx.models.weights import CheckpointError, load_strict
from chatterbox_mlx.pipeline import watermark
from chatterbox_mlx.pipeline.watermark import Watermarker, WatermarkWeightsNotFound

import mlx.core as mx
import numpy as np
import pytest

from tests.helpers.golden import assert_close, load_golden

RATES = (24000, 32000)
SCORE_ATOL = 1e-4


@pytest.fixture(scope="module")
def golden():
    return load_golden("perth")


@pytest.fixture(scope="module")
def wm():
    return Watermarker.from_pretrained()


def raw_score(wm: Watermarker, wav: np.ndarray, sr: int) -> float:
    """The MLX decoder's output before clipping, after the reference's polyphase resampling."""
    if sr != wm.sample_rate:
        wav = watermark.resample_polyphase(wav, sr, wm.sample_rate)
    return float(wm.net.detect(mx.array(wav)[None])[0])


def test_weights_found_and_loaded_without_torch(wm):
    path = watermark.find_weights()
    assert path.name == "perth_net_250000.pth.tar"
    assert wm.net.config == PerthConfig()  # hparams.yaml holds the released defaults
    assert wm.net.config.subband == 128
    assert "torch" not in sys.modules and "perth" not in sys.modules


@pytest.mark.golden
@pytest.mark.parametrize("sr", RATES)
def test_marked_signal_matches_reference(wm, golden, sr):
    marked = wm.apply(golden[f"speech_{sr}"], sr)
    err = assert_close(marked, golden[f"marked_{sr}"], 1e-4, f"marked speech at {sr} Hz")
    print(f"marked {sr} Hz: relative error {err:.2e}")
    # the mark is audible-level small but far above the parity error
    change = np.abs(golden[f"marked_{sr}"] - golden[f"speech_{sr}"][: marked.shape[0]]).max()
    assert change > 1e3 * err * np.abs(golden[f"marked_{sr}"]).max()


@pytest.mark.golden
@pytest.mark.parametrize("sr", RATES)
@pytest.mark.parametrize("name", ["speech", "marked"])
def test_detector_matches_reference(wm, golden, sr, name):
    wav = golden[f"{name}_{sr}"]
    ours, ref = raw_score(wm, wav, sr), float(golden[f"ref_raw_score_{name}_{sr}"])
    print(f"{name} {sr} Hz: raw score mlx {ours:.6f} reference {ref:.6f}")
    assert abs(ours - ref) <= SCORE_ATOL, f"raw score mlx {ours} vs reference {ref}"
    expected = 1.0 if name == "marked" else 0.0
    score = wm.detect(wav, sr)
    assert score == expected, f"{name} at {sr} Hz scored {score} (reference {ref})"
    clipped = wm.detect(wav, sr, round=False)
    assert abs(clipped - float(golden[f"ref_score_{name}_{sr}"])) <= SCORE_ATOL


@pytest.mark.golden
@pytest.mark.parametrize("sr", RATES)
def test_reference_detector_scores_mlx_marked_audio(wm, golden, sr):
    """gen_perth.py scored chatterbox_mlx's marked speech with the reference detector."""
    ref_on_mlx = float(golden[f"ref_raw_score_mlx_marked_{sr}"])
    ref_on_ref = float(golden[f"ref_raw_score_marked_{sr}"])
    print(
        f"reference detector at {sr} Hz: mlx-marked {ref_on_mlx:.6f}, ref-marked {ref_on_ref:.6f}"
    )
    assert float(golden[f"ref_score_mlx_marked_{sr}"]) == 1.0
    assert abs(ref_on_mlx - ref_on_ref) <= SCORE_ATOL
    assert wm.detect(wm.apply(golden[f"speech_{sr}"], sr), sr) == 1.0


@pytest.mark.golden
def test_polyphase_resampling_matches_librosa(golden):
    ours = watermark.resample_polyphase(golden["marked_24000"], 24000, 32000)
    assert_close(ours, golden["marked_24000_poly_32k"], 1e-5, "polyphase 24 -> 32 kHz")


@pytest.mark.golden
def test_module_functions_use_the_cached_default(golden):
    wav = golden["speech_32000"]
    marked = watermark.apply_watermark(wav, 32000)
    assert watermark.default_watermarker() is watermark.default_watermarker()
    assert marked.dtype == np.float32 and marked.shape == golden["marked_32000"].shape
    assert watermark.get_watermark(marked, 32000) == 1.0
    assert watermark.get_watermark(wav, 32000) == 0.0


def test_silence_is_unmarked_and_unchanged(wm):
    silence = np.zeros(32000, dtype=np.float32)
    assert wm.detect(silence, 32000) == 0.0  # the reference returns NaN here
    assert np.abs(wm.apply(silence, 32000)).max() < 1e-6


@pytest.mark.golden
def test_converted_safetensors_loads_the_same(wm, golden, tmp_path):
    weights = watermark.load_weights(watermark.find_weights())
    mx.save_safetensors(str(tmp_path / "perth_net_250000.safetensors"), weights)
    other = Watermarker.from_pretrained(tmp_path)
    wav = golden["speech_32000"]
    np.testing.assert_array_equal(other.apply(wav, 32000), wm.apply(wav, 32000))


def test_sanitize_maps_every_key_and_drops_buffers():
    weights = watermark.load_weights(watermark.find_weights())
    mapped = sanitize(weights)
    assert not any(k.startswith("ap.") for k in mapped)
    assert mapped["encoder.layers.layers.1.weight"].shape == (256, 7, 256)
    del mapped["decoder.fast_layers.layers.6.bias"]
    with pytest.raises(CheckpointError, match="missing decoder.fast_layers.layers.6.bias"):
        load_strict(PerthNet(PerthConfig()), mapped, "PerthNet")


@pytest.mark.parametrize(
    ("wav", "sr", "error", "message"),
    [
        (np.zeros((2, 48000), np.float32), 24000, ValueError, "mono"),
        (np.zeros(500, np.float32), 24000, ValueError, "too short"),
        (np.full(48000, np.nan, np.float32), 24000, ValueError, "NaN"),
        (np.zeros(48000, np.float32), 0, ValueError, "positive"),
        (np.zeros(48000, np.float32), 24000.0, TypeError, "int"),
    ],
)
def test_bad_input_is_named(wm, wav, sr, error, message):
    with pytest.raises(error, match=message):
        wm.apply(wav, sr)
    with pytest.raises(error, match=message):
        wm.detect(wav, sr)


def test_missing_weights_say_how_to_get_them(monkeypatch, tmp_path):
    monkeypatch.setattr(watermark, "_installed_dir", lambda: None)
    with pytest.raises(WatermarkWeightsNotFound, match="pip install resemble-perth"):
        watermark.find_weights()
    with pytest.raises(WatermarkWeightsNotFound, match="does not exist"):
        watermark.find_weights(tmp_path / "nope.pth.tar")
    with pytest.raises(WatermarkWeightsNotFound, match="no Perth weights"):
        watermark.find_weights(tmp_path)

"""Parity of chatterbox_mlx.audio with torch/torchaudio/librosa/pyloudnorm (goldens from
tests/reference/gen_audio.py), STFT round trips, and the audio I/O error cases."""

from __future__ import annotations

from chatterbox_mlx import audio as A
from chatterbox_mlx.audio import io as audio_io

import mlx.core as mx  # conftest imports chatterbox_mlx (BLAS) first
import numpy as np
import pytest

from tests.helpers.golden import assert_close, load_golden

RATES = (8000, 16000, 22050, 24000, 44100, 48000)
CONVERSIONS = [(sr, target) for sr in RATES for target in (16000, 24000) if sr != target]


@pytest.fixture(scope="module")
def g():
    return load_golden("audio")


def speech(g, sr: int) -> np.ndarray:
    return (g[f"speech_{sr}"].astype(np.float32) / 32768.0).astype(np.float32)


def np_(x) -> np.ndarray:
    return np.array(x)


def ri(x) -> np.ndarray:
    """Complex as a trailing real/imaginary axis, so assert_close sees both parts."""
    x = np.asarray(x)
    return np.stack([x.real, x.imag], axis=-1)


# ----------------------------------------------------------------------------- STFT


def test_hann_window_matches_numpy_definition():
    n = 16
    k = np.arange(n)
    assert_close(np_(A.hann_window(n)), 0.5 - 0.5 * np.cos(2 * np.pi * k / n), 1e-7, "periodic")
    assert_close(
        np_(A.hann_window(n, periodic=False)),
        0.5 - 0.5 * np.cos(2 * np.pi * k / (n - 1)),
        1e-7,
        "symmetric",
    )


@pytest.mark.golden
def test_stft_hift_size(g):
    # torch layout [B, freq, frames]; ours is channels-last [B, frames, freq]
    out = A.stft(g["stft16_in"], 16, 4, A.hann_window(16))
    assert out.dtype == mx.complex64
    assert_close(ri(out), ri(g["stft16_out"].transpose(0, 2, 1)), 1e-5, "stft16")


@pytest.mark.golden
def test_istft_hift_size(g):
    out = A.istft(g["istft16_in"].transpose(0, 2, 1), 16, 4, A.hann_window(16))
    assert_close(np_(out), g["istft16_out"], 1e-5, "istft16")


@pytest.mark.golden
def test_stft_istft_whisper_size(g):
    x = g["noise_16000"][None, :4000]
    spec = A.stft(x, 400, 160, A.hann_window(400))
    assert_close(ri(spec), ri(g["stft400_out"].transpose(0, 2, 1)), 1e-5, "stft400")
    out = A.istft(spec, 400, 160, A.hann_window(400), length=4000)
    assert_close(np_(out), g["istft400_out"], 1e-5, "istft400")


@pytest.mark.parametrize("n_fft,hop", [(16, 4), (400, 160), (1920, 480), (15, 4)])
def test_stft_istft_round_trip(n_fft, hop):
    x = np.random.default_rng(0).standard_normal((2, 3000)).astype(np.float32)
    window = A.hann_window(n_fft)
    y = A.istft(A.stft(x, n_fft, hop, window), n_fft, hop, window, length=3000)
    assert_close(np_(y), x, 1e-5, f"round trip {n_fft}/{hop}")


def test_frame_signal_on_views():
    base = np.arange(60, dtype=np.float32).reshape(3, 20)
    for view, ref in ((mx.array(base)[:, 3:], base[:, 3:]), (mx.array(base.T.copy()).T, base)):
        frames = np_(A.frame_signal(view, 4, 2))
        n = 1 + (ref.shape[1] - 4) // 2
        expected = np.stack([ref[:, i * 2 : i * 2 + 4] for i in range(n)], axis=1)
        np.testing.assert_array_equal(frames, expected)


def test_istft_rejects_bad_shapes():
    with pytest.raises(ValueError, match="n_fft // 2 \\+ 1"):
        A.istft(mx.zeros((1, 10, 8), dtype=mx.complex64), 16, 4, A.hann_window(16))
    with pytest.raises(ValueError, match="NOLA"):
        A.istft(mx.zeros((1, 10, 9), dtype=mx.complex64), 16, 20, A.hann_window(16))
    with pytest.raises(ValueError, match="reflect padding"):
        A.stft(np.zeros((1, 5), np.float32), 16, 4, A.hann_window(16))


# ----------------------------------------------------------------------------- features
# Tolerance 1e-4 relative (the project's float32 target). The log features are the
# sensitive ones: a quiet bin's float32 FFT rounding is large relative to its own value.


@pytest.mark.golden
def test_s3gen_mel(g):
    batch = np.stack([speech(g, 24000)[:24000], g["noise_24000"]])
    ref = g["s3gen_mel_batch"].transpose(0, 2, 1)
    assert_close(np_(A.s3gen_mel(batch)), ref, 1e-4, "s3gen_mel batch")
    ref = g["s3gen_mel_speech"].transpose(0, 2, 1)
    assert_close(np_(A.s3gen_mel(speech(g, 24000)[None])), ref, 1e-4, "s3gen_mel speech")


@pytest.mark.golden
def test_whisper_log_mel(g):
    wav = speech(g, 16000)
    ref = g["whisper_mel_speech"].transpose(0, 2, 1)
    assert_close(np_(A.whisper_log_mel(wav[None])), ref, 1e-4, "whisper speech")
    ref = g["whisper_mel_noise"].transpose(0, 2, 1)
    assert_close(np_(A.whisper_log_mel(g["noise_16000"][None])), ref, 1e-4, "whisper noise")
    ref = g["whisper_mel_padded"].transpose(0, 2, 1)
    out = A.whisper_log_mel(wav[None], padding=320)
    assert_close(np_(out), ref, 1e-4, "whisper padded")


@pytest.mark.golden
def test_whisper_log_mel_floor_is_per_item(g):
    # the reference handles one utterance at a time, so batching must not mix their maxima
    wav = speech(g, 16000)[:16000]
    both = np_(A.whisper_log_mel(np.stack([wav, 0.001 * g["noise_16000"]])))
    alone = np_(A.whisper_log_mel(0.001 * g["noise_16000"][None]))
    assert_close(both[1], alone[0], 1e-6, "per-item floor")


@pytest.mark.golden
def test_voice_encoder_mel(g):
    ref = g["ve_mel_speech"]
    assert_close(np_(A.voice_encoder_mel(speech(g, 16000))), ref, 1e-4, "ve speech")
    ref = g["ve_mel_noise"]
    assert_close(np_(A.voice_encoder_mel(g["noise_16000"])), ref, 1e-4, "ve noise")


@pytest.mark.golden
def test_kaldi_fbank(g):
    ref = g["fbank_speech"]
    assert_close(np_(A.kaldi_fbank(speech(g, 16000))), ref, 1e-4, "fbank speech")
    ref = g["fbank_noise"]
    assert_close(np_(A.kaldi_fbank(g["noise_16000"])), ref, 1e-4, "fbank noise")


@pytest.mark.golden
def test_kaldi_fbank_options(g):
    out = A.kaldi_fbank(
        g["noise_16000"][:8000],
        num_mel_bins=40,
        snip_edges=False,
        use_energy=True,
        subtract_mean=True,
        window_type="hamming",
        high_freq=-400.0,
    )
    assert_close(np_(out), g["fbank_options"], 1e-4, "fbank options")


@pytest.mark.golden
def test_trim_silence(g):
    wav = speech(g, 16000)
    start, end = g["trim_speech_16000"]
    np.testing.assert_array_equal(A.trim_silence(wav), wav[start:end])
    noise = g["noise_16000"]
    quiet = [np.zeros(3000, np.float32), 0.01 * noise[:4000]]
    padded = np.concatenate([*quiet, wav, 0.001 * noise[4000:9000]]).astype(np.float32)
    for key, top_db in (("trim_padded", 20), ("trim_padded_40db", 40)):
        start, end = g[key]
        np.testing.assert_array_equal(A.trim_silence(padded, top_db), padded[start:end])


def test_mel_filters_are_cached_and_read_only():
    a = A.mel_filters(16000, 400, 40, 0.0, 8000.0)
    assert a is A.mel_filters(16000, 400, 40, 0.0, 8000.0)
    assert a.shape == (40, 201) and not a.flags.writeable


# ----------------------------------------------------------------------------- resampling


def _clip(g, sr):
    return speech(g, sr)[int(0.5 * sr) : int(0.9 * sr)]


@pytest.mark.golden
@pytest.mark.parametrize("sr,target", CONVERSIONS)
def test_resample_matches_librosa(g, sr, target):
    # soxr is what librosa calls, so the result is the same to float32 rounding
    out = A.resample(_clip(g, sr), sr, target)
    assert out.dtype == np.float32
    assert_close(out, g[f"librosa_{sr}_{target}"], 1e-6, f"librosa {sr}->{target}")


@pytest.mark.golden
@pytest.mark.parametrize("sr,target", CONVERSIONS)
def test_resample_sinc_matches_torchaudio(g, sr, target):
    # a float32 FIR (up to ~460 taps); summation order differs from torch's conv1d
    out = A.resample_sinc(_clip(g, sr), sr, target)
    assert_close(np_(out), g[f"sinc_{sr}_{target}"], 1e-5, f"sinc {sr}->{target}")


@pytest.mark.golden
def test_resample_noise(g):
    out = A.resample(g["noise_24000"], 24000, 16000)
    assert_close(out, g["librosa_noise_24000_16000"], 1e-6, "librosa noise")
    out = A.resample_sinc(g["noise_24000"], 24000, 16000)
    assert_close(np_(out), g["sinc_noise_24000_16000"], 1e-5, "sinc noise")


def test_resample_rejects_bad_rates():
    with pytest.raises(ValueError, match="positive integers"):
        A.resample(np.zeros(100, np.float32), 0, 16000)
    with pytest.raises(ValueError, match="positive integers"):
        A.resample_sinc(np.zeros(100, np.float32), 22050.5, 16000)


# ----------------------------------------------------------------------------- loudness


@pytest.mark.golden
@pytest.mark.parametrize("sr", (16000, 24000, 44100))
def test_loudness_matches_pyloudnorm(g, sr):
    assert abs(A.loudness_lufs(speech(g, sr), sr) - float(g[f"lufs_speech_{sr}"])) < 1e-3


@pytest.mark.golden
def test_loudness_noise_and_stereo(g):
    assert abs(A.loudness_lufs(g["noise_16000"], 16000) - float(g["lufs_noise_16000"])) < 1e-3
    stereo = g["stereo_44100"].astype(np.float32) / 32768.0
    assert abs(A.loudness_lufs(stereo, 44100) - float(g["lufs_stereo_44100"])) < 1e-3


@pytest.mark.golden
def test_normalize_loudness(g):
    out = A.normalize_loudness(speech(g, 24000), 24000)
    assert out.dtype == np.float32
    assert_close(out, g["norm_speech_24000"], 1e-4, "norm speech")
    assert abs(A.loudness_lufs(out, 24000) - (-27.0)) < 0.1
    out = A.normalize_loudness(0.01 * g["noise_16000"], 16000)
    assert_close(out, g["norm_quiet_noise_16000"], 1e-4, "norm quiet noise")


@pytest.mark.golden
def test_normalize_loudness_leaves_short_and_silent_audio(g):
    # the reference catches pyloudnorm's error (short) and skips an infinite gain (silence)
    assert bool(g["norm_short_unchanged"]) and bool(g["norm_silence_unchanged"])
    short = speech(g, 24000)[12000:19200]
    np.testing.assert_array_equal(A.normalize_loudness(short, 24000), short)
    silence = np.zeros(24000, np.float32)
    np.testing.assert_array_equal(A.normalize_loudness(silence, 24000), silence)
    assert A.loudness_lufs(silence, 24000) == float("-inf")
    with pytest.raises(A.AudioError, match="shorter than one"):
        A.loudness_lufs(short, 24000)


# ----------------------------------------------------------------------------- I/O


@pytest.mark.golden
def test_load_audio_stereo_mixdown_and_resample(g, tmp_path):
    import soundfile

    path = tmp_path / "stereo.wav"
    soundfile.write(path, g["stereo_44100"], 44100, subtype="PCM_16")
    wav, sr = A.load_audio(path, sr=24000)
    assert sr == 24000 and wav.dtype == np.float32 and wav.ndim == 1
    assert_close(wav, g["stereo_load_24000"], 1e-6, "librosa.load(sr=24000)")
    wav, sr = A.load_audio(path)
    assert sr == 44100
    assert_close(wav, g["stereo_44100"].astype(np.float32).mean(axis=1) / 32768.0, 1e-6)


def test_load_audio_flac(tmp_path):
    import soundfile

    x = np.sin(np.linspace(0, 100, 8000)).astype(np.float32) * 0.5
    soundfile.write(tmp_path / "a.flac", x, 8000, subtype="PCM_24")
    wav, sr = A.load_audio(tmp_path / "a.flac")
    assert sr == 8000
    assert_close(wav, x, 1e-5, "flac")


def test_load_audio_errors(tmp_path):
    import soundfile

    with pytest.raises(A.AudioError, match="not found"):
        A.load_audio(tmp_path / "missing.wav")
    (tmp_path / "junk.wav").write_bytes(b"not audio at all" * 10)
    with pytest.raises(A.AudioError, match="cannot read"):
        A.load_audio(tmp_path / "junk.wav")
    soundfile.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(A.AudioError, match="empty"):
        A.load_audio(tmp_path / "empty.wav")
    soundfile.write(tmp_path / "silent.wav", np.zeros(1600, np.float32), 16000)
    with pytest.raises(A.AudioError, match="silent"):
        A.load_audio(tmp_path / "silent.wav")
    bad = np.full(1600, 0.1, np.float32)
    bad[10] = np.nan
    soundfile.write(tmp_path / "nan.wav", bad, 16000, subtype="FLOAT")
    with pytest.raises(A.AudioError, match="NaN"):
        A.load_audio(tmp_path / "nan.wav")


def test_check_audio():
    x = np.full(100, 0.1, np.float32)
    assert A.check_audio(x, 16000, "prompt").dtype == np.float32
    with pytest.raises(A.AudioError, match="prompt: .*infinite"):
        A.check_audio(np.array([0.1, np.inf], np.float32), 16000, "prompt")
    with pytest.raises(A.AudioError, match="sample rate"):
        A.check_audio(x, 0, "prompt")
    with pytest.raises(A.AudioError, match="mono"):
        A.check_audio(np.zeros((2, 2, 2), np.float32), 16000, "prompt")
    with pytest.raises(A.AudioError, match="silent"):
        A.check_audio(np.zeros(10, np.float32), 16000, "prompt")


def test_public_names_are_reexported():
    """Other modules call ``audio.<name>``; each name lives in one submodule."""
    from chatterbox_mlx.audio import features, loudness, resampling, spectral

    assert A.stft is spectral.stft and A.resample is resampling.resample
    assert A.kaldi_fbank is features.kaldi_fbank and A.loudness_lufs is loudness.loudness_lufs
    assert A.load_audio is audio_io.load_audio and A.AudioError is audio_io.AudioError
    assert sorted(A.__all__) == sorted(n for n in dir(A) if not n.startswith("_") and
                                       callable(getattr(A, n)))  # fmt: skip

"""Goldens for chatterbox_mlx/audio.py: STFT/iSTFT, the four feature extractors,
resampling, loudness. Runs in the reference venv and needs espeak-ng and sox:

    .refenv/bin/python tests/reference/gen_audio.py

Inputs are espeak-ng speech (converted to each rate by sox, no dither) and seeded
noise; they are stored in the golden (speech as int16) so tests need neither tool.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import common  # noqa: F401  (sets sys.path)
import librosa
import numpy as np
import pyloudnorm
import soundfile
import torch
import torchaudio
import torchaudio.compliance.kaldi as kaldi
from chatterbox.models.s3gen.utils.mel import mel_spectrogram
from chatterbox.models.s3tokenizer import S3Tokenizer
from chatterbox.models.voice_encoder.config import VoiceEncConfig
from chatterbox.models.voice_encoder.melspec import melspectrogram
from chatterbox.tts_turbo import ChatterboxTurboTTS
from common import save_golden

RATES = (8000, 16000, 22050, 24000, 44100, 48000)
SPEECH_SECONDS = 1.6
RESAMPLE_SECONDS = 0.4
TEXT = "Hello, this is a short test of the speech pipeline."
TEXT_RIGHT = "And a second voice, for the right channel."


def espeak(tmp: Path, text: str, voice: str, name: str) -> Path:
    path = tmp / f"{name}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True)
    return path


def sox(args: list[str]) -> None:
    subprocess.run(["sox", "-D", *args], check=True)  # -D: no dither, deterministic


def read_int16(path: Path) -> np.ndarray:
    data, _ = soundfile.read(str(path), dtype="int16")
    return data


def to_float(x: np.ndarray) -> np.ndarray:
    return (x.astype(np.float32) / 32768.0).astype(np.float32)


def trim_input(speech16: np.ndarray, noise16: np.ndarray) -> np.ndarray:
    """Speech between quiet noise and digital silence (tests/test_audio.py builds the same)."""
    quiet = [np.zeros(3000, np.float32), 0.01 * noise16[:4000]]
    return np.concatenate([*quiet, speech16, 0.001 * noise16[4000:9000]]).astype(np.float32)


def main() -> None:
    out: dict[str, np.ndarray] = {}
    torch.manual_seed(0)
    rng = np.random.default_rng(1234)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        left = espeak(tmp, TEXT, "en", "left")
        right = espeak(tmp, TEXT_RIGHT, "en+f3", "right")
        for sr in RATES:
            path = tmp / f"speech_{sr}.wav"
            sox([str(left), "-r", str(sr), "-b", "16", str(path)])
            out[f"speech_{sr}"] = read_int16(path)[: int(SPEECH_SECONDS * sr)]
        # a 0.5 s stereo 44.1 kHz file: librosa.load(sr=24000) mixes down, then resamples
        stereo = tmp / "stereo.wav"
        sox(
            [
                "-M",
                str(left),
                str(right),
                "-r",
                "44100",
                "-b",
                "16",
                str(stereo),
                "trim",
                "0.3",
                "0.5",
            ]
        )
        out["stereo_44100"] = read_int16(stereo)
        out["stereo_load_24000"], _ = librosa.load(str(stereo), sr=24000)

    speech = {sr: to_float(out[f"speech_{sr}"]) for sr in RATES}
    noise16 = (0.2 * rng.standard_normal(16000)).astype(np.float32)
    noise24 = (0.2 * rng.standard_normal(24000)).astype(np.float32)
    out["noise_16000"], out["noise_24000"] = noise16, noise24

    # --- STFT / iSTFT as HiFT (n_fft 16, hop 4, periodic Hann) and at a larger size
    hift_in = np.stack([speech[24000][6000:9000], noise24[:3000]])
    window16 = torch.hann_window(16)
    spec = torch.stft(torch.from_numpy(hift_in), 16, 4, 16, window=window16, return_complex=True)
    out["stft16_in"], out["stft16_out"] = hift_in, spec
    magnitude = torch.exp(torch.randn(1, 9, 200))
    phase = torch.rand(1, 9, 200) * 2 * np.pi - np.pi
    spec = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
    out["istft16_in"] = spec
    out["istft16_out"] = torch.istft(spec, 16, 4, 16, window=window16)
    window400 = torch.hann_window(400)
    spec = torch.stft(
        torch.from_numpy(noise16[None, :4000]), 400, 160, 400, window=window400, return_complex=True
    )
    out["stft400_out"] = spec
    out["istft400_out"] = torch.istft(spec, 400, 160, 400, window=window400, length=4000)

    # --- feature extractors
    batch24 = np.stack([speech[24000][:24000], noise24])
    out["s3gen_mel_batch"] = mel_spectrogram(torch.from_numpy(batch24))
    out["s3gen_mel_speech"] = mel_spectrogram(torch.from_numpy(speech[24000][None]))
    tokenizer = S3Tokenizer("speech_tokenizer_v2_25hz")
    out["whisper_mel_speech"] = tokenizer.log_mel_spectrogram(torch.from_numpy(speech[16000][None]))
    out["whisper_mel_noise"] = tokenizer.log_mel_spectrogram(torch.from_numpy(noise16[None]))
    out["whisper_mel_padded"] = tokenizer.log_mel_spectrogram(
        torch.from_numpy(speech[16000][None]), padding=320
    )
    hp = VoiceEncConfig()
    out["ve_mel_speech"] = melspectrogram(speech[16000], hp).T
    out["ve_mel_noise"] = melspectrogram(noise16, hp).T
    # VoiceEncoder.embeds_from_wavs trims with top_db=20 before the mel
    padded = trim_input(speech[16000], noise16)
    out["trim_speech_16000"] = librosa.effects.trim(speech[16000], top_db=20)[1]
    out["trim_padded"] = librosa.effects.trim(padded, top_db=20)[1]
    out["trim_padded_40db"] = librosa.effects.trim(padded, top_db=40)[1]
    out["fbank_speech"] = kaldi.fbank(torch.from_numpy(speech[16000])[None], num_mel_bins=80)
    out["fbank_noise"] = kaldi.fbank(torch.from_numpy(noise16)[None], num_mel_bins=80)
    out["fbank_options"] = kaldi.fbank(
        torch.from_numpy(noise16[:8000])[None],
        num_mel_bins=40,
        snip_edges=False,
        use_energy=True,
        subtract_mean=True,
        window_type="hamming",
        high_freq=-400.0,
    )

    # --- resampling: librosa (soxr_hq) and torchaudio's sinc Resample, 0.4 s of speech
    for sr in RATES:
        clip = speech[sr][int(0.5 * sr) : int((0.5 + RESAMPLE_SECONDS) * sr)]
        for target in (16000, 24000):
            if target == sr:
                continue
            out[f"librosa_{sr}_{target}"] = librosa.resample(clip, orig_sr=sr, target_sr=target)
            sinc = torchaudio.transforms.Resample(sr, target)
            out[f"sinc_{sr}_{target}"] = sinc(torch.from_numpy(clip)[None])[0]
    out["librosa_noise_24000_16000"] = librosa.resample(noise24, orig_sr=24000, target_sr=16000)
    out["sinc_noise_24000_16000"] = torchaudio.transforms.Resample(24000, 16000)(
        torch.from_numpy(noise24)
    )

    # --- loudness (pyloudnorm); norm_loudness as ChatterboxTurboTTS does it. Its result is
    # cast to float32, as numpy 1 gives (numpy 2 promotes to float64; see reference/README)
    def lufs(x, sr):
        return np.float64(pyloudnorm.Meter(sr).integrated_loudness(x))

    out["lufs_speech_24000"] = lufs(speech[24000], 24000)
    out["lufs_speech_16000"] = lufs(speech[16000], 16000)
    out["lufs_speech_44100"] = lufs(speech[44100], 44100)
    out["lufs_noise_16000"] = lufs(noise16, 16000)
    out["lufs_stereo_44100"] = lufs(to_float(out["stereo_44100"]), 44100)
    norm = ChatterboxTurboTTS.norm_loudness
    out["norm_speech_24000"] = norm(None, speech[24000], 24000).astype(np.float32)
    out["norm_quiet_noise_16000"] = norm(None, 0.01 * noise16, 16000).astype(np.float32)
    short = speech[24000][int(0.5 * 24000) : int(0.8 * 24000)]
    out["norm_short_unchanged"] = np.array(np.array_equal(norm(None, short, 24000), short))
    silence = np.zeros(24000, np.float32)
    out["norm_silence_unchanged"] = np.array(np.array_equal(norm(None, silence, 24000), silence))

    path = save_golden(
        "audio",
        out,
        "tests/reference/gen_audio.py",
        notes=f"espeak-ng text {TEXT!r}; speech stored as int16 (divide by 32768)",
    )
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()

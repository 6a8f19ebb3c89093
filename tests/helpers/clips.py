"""Speech clips made with espeak-ng (needs the ``espeak-ng`` program), and levels."""

from __future__ import annotations

import subprocess

import numpy as np
import soundfile as sf

SR = 24000


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

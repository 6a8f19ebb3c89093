"""Goldens for the VoiceEncoder (chatterbox/models/voice_encoder).

- ``voice_encoder.npz``: a reduced VoiceEncoder (LSTM 64 wide, 3 layers, 32-d embedding);
  weights ``checkpoints.random_tensor(key, shape, "float32", SEED)`` per state_dict key,
  only keys and shapes stored. Inputs: two espeak-ng clips at 16 kHz with leading and
  trailing silence (3.9 s and 1.1 s: the short one is padded to one partial). Outputs:
  the trim points of ``librosa.effects.trim(top_db=20)``, the 40-bin mels of the trimmed
  clips, per-partial embeddings (forward), ``embeds_from_mels`` with the default
  overlap 0.5, and ``embeds_from_wavs`` (rate 1.3) for one clip, both clips and as_spk.
- ``voice_encoder_full.npz``: the same calls at full size with the real-layout random
  ``ve.safetensors`` (tests/helpers/checkpoints.py, seed 0).

Run: .refenv/bin/python tests/reference/gen_voice_encoder.py
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import librosa
import numpy as np
import torch
from chatterbox.models.voice_encoder import VoiceEncConfig, VoiceEncoder
from chatterbox.models.voice_encoder.melspec import melspectrogram
from chatterbox.models.voice_encoder.voice_encoder import stride_as_partials
from common import save_golden

from tests.helpers.checkpoints import random_tensor, random_weights

SCRIPT = "tests/reference/gen_voice_encoder.py"
SEED = 13


def espeak_16k(text: str, lead: float, tail: float) -> np.ndarray:
    """espeak-ng speech at 16 kHz (sox), with ``lead``/``tail`` seconds of near-silence."""
    with tempfile.TemporaryDirectory() as tmp:
        raw, out = Path(tmp) / "raw.wav", Path(tmp) / "out.raw"
        subprocess.run(["espeak-ng", "-s", "160", "-w", str(raw), text], check=True)
        subprocess.run(
            ["sox", "-D", str(raw), "-r", "16000", "-c", "1", "-b", "16", "-e", "signed", str(out)],
            check=True,
        )
        wav = np.fromfile(out, dtype="<i2").astype(np.float32) / 32768.0
    rng = np.random.default_rng(3)
    pad = lambda s: (1e-4 * rng.standard_normal(int(s * 16000))).astype(np.float32)  # noqa: E731
    return np.concatenate([pad(lead), wav, pad(tail)]).astype(np.float32)


def reduced_hp() -> VoiceEncConfig:
    hp = VoiceEncConfig()
    hp.ve_hidden_size = 64
    hp.speaker_embed_size = 32
    return hp


@torch.no_grad()
def run(ve: VoiceEncoder, wavs: dict[str, np.ndarray], out: dict) -> None:
    hp = ve.hp
    for name, wav in wavs.items():
        trimmed, index = librosa.effects.trim(wav, top_db=20)
        mel = melspectrogram(trimmed, hp).T
        out[f"trim_{name}"] = np.asarray(index)
        out[f"mel_{name}"] = mel.astype(np.float32)
        partials = stride_as_partials(mel, hp, rate=1.3)
        out[f"partial_embeds_{name}"] = ve(torch.from_numpy(np.ascontiguousarray(partials)))
        out[f"mel_embeds_{name}"] = ve.embeds_from_mels([mel])  # overlap 0.5, rate None
        out[f"wav_embeds_{name}"] = ve.embeds_from_wavs([wav], sample_rate=16000)
    both = list(wavs.values())
    out["wav_embeds_both"] = ve.embeds_from_wavs(both, sample_rate=16000)
    out["spk_embed_both"] = ve.embeds_from_wavs(both, sample_rate=16000, as_spk=True)


def main() -> None:
    torch.manual_seed(0)
    wavs = {
        "long": espeak_16k("Speaker embeddings summarise a voice in a vector.", 0.4, 0.5),
        "short": espeak_16k("Hello there.", 0.2, 0.3)[:17600],
    }

    ve = VoiceEncoder(reduced_hp()).eval()
    state = {
        k: torch.from_numpy(random_tensor(k, tuple(v.shape), "float32", SEED))
        for k, v in ve.state_dict().items()
    }
    ve.load_state_dict(state, strict=True)
    out: dict = {f"wav_{k}": v for k, v in wavs.items()}
    out["state_shapes"] = np.array(json.dumps({k: list(v.shape) for k, v in state.items()}))
    run(ve, wavs, out)
    save_golden("voice_encoder", out, SCRIPT, notes=f"reduced hidden 64 / embed 32, seed {SEED}")

    full = VoiceEncoder().eval()
    state = {k: torch.from_numpy(v) for k, v in random_weights("ve", seed=0).items()}
    full.load_state_dict(state, strict=True)
    out = {}
    run(full, wavs, out)
    out = {k: v for k, v in out.items() if "embed" in k}
    save_golden("voice_encoder_full", out, SCRIPT, notes="full size, ve layout seed 0")


if __name__ == "__main__":
    main()

"""Goldens for the S3Tokenizer V2 (chatterbox/models/s3tokenizer + s3tokenizer.model_v2).

- ``s3tokenizer.npz``: chatterbox's ``S3Tokenizer`` (its own log-mel front end) with a
  reduced encoder/quantizer (128 wide, 2 heads of 64 = the fixed rotary size, 2 layers).
  Weights are ``checkpoints.random_tensor(key, shape, "float32", SEED)`` per state_dict key;
  only keys and shapes are stored. Inputs: espeak-ng speech written at 22.05 / 44.1 / 8 kHz,
  loaded at 16 kHz by ``librosa.load`` (stored), and seeded noise (rebuilt by the test).
  Outputs: log-mels, encoder hidden states, pre-rounding FSQ values, tokens from
  ``forward`` (one clip, a batch of different lengths, ``max_len``) and from the > 30 s
  windowed path.
- ``s3tokenizer_full.npz``: the full-size tokenizer from the ``tokenizer.`` tensors of the
  real-layout random ``s3gen.safetensors`` (seed 0; ``_mel_filters``/``window`` replaced by
  their real values, as in the hub file), tokens on the same speech and noise.

Run: .refenv/bin/python tests/reference/gen_s3tokenizer.py
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import librosa
import numpy as np
import torch
from chatterbox.models.s3tokenizer import S3Tokenizer
from common import save_golden
from s3tokenizer.model_v2 import AudioEncoderV2, FSQVectorQuantization, ModelConfig

from tests.helpers.checkpoints import random_tensor, random_weights

SCRIPT = "tests/reference/gen_s3tokenizer.py"
SEED = 11
REDUCED = dict(n_mels=128, n_audio_state=128, n_audio_head=2, n_audio_layer=2)
TEXTS = {
    22050: "The quick brown fox jumps over the lazy dog.",
    44100: "She sells sea shells by the sea shore.",
    8000: "Hello world, this is a test.",
}
NOISE_SEED = 5
LONG_SECONDS = 32.5


def espeak_at(text: str, sr: int) -> np.ndarray:
    """espeak-ng speech converted by sox to ``sr``, then loaded at 16 kHz by librosa."""
    with tempfile.TemporaryDirectory() as tmp:
        raw, out = Path(tmp) / "raw.wav", Path(tmp) / "out.wav"
        subprocess.run(["espeak-ng", "-s", "160", "-w", str(raw), text], check=True)
        subprocess.run(["sox", "-D", str(raw), "-r", str(sr), "-b", "16", str(out)], check=True)
        wav, _ = librosa.load(str(out), sr=16000)
    return wav.astype(np.float32)


def noise(seconds: float, seed: int) -> np.ndarray:
    """Rebuilt identically by the test: float32 Gaussian noise at 0.1."""
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)


def long_input(clips: list[np.ndarray]) -> np.ndarray:
    """> 30 s: the speech clips tiled, plus noise (rebuilt identically by the test)."""
    tiled = np.tile(np.concatenate(clips), 20)[: int(LONG_SECONDS * 16000)]
    return (tiled + 0.5 * noise(LONG_SECONDS, NOISE_SEED + 1)).astype(np.float32)


def reduced_tokenizer() -> tuple[S3Tokenizer, dict]:
    tok = S3Tokenizer("speech_tokenizer_v2_25hz")
    config = ModelConfig(**REDUCED)
    tok.config = config
    tok.encoder = AudioEncoderV2(128, 128, 2, 2, 2, False)
    tok.quantizer = FSQVectorQuantization(128, 3**8)
    state = {}
    for key, value in tok.state_dict().items():
        if key in ("_mel_filters", "window"):
            state[key] = value
        else:
            state[key] = torch.from_numpy(random_tensor(key, tuple(value.shape), "float32", SEED))
    tok.load_state_dict(state, strict=True)
    shapes = {k: list(v.shape) for k, v in state.items() if k not in ("_mel_filters", "window")}
    return tok.eval(), shapes


def fsq_pre(tok: S3Tokenizer, hidden: torch.Tensor) -> torch.Tensor:
    return torch.tanh(tok.quantizer._codebook.project_down(hidden)) * 0.9990000128746033


@torch.no_grad()
def run(tok: S3Tokenizer, clips: dict[str, np.ndarray], out: dict, prefix: str) -> None:
    for name, wav in clips.items():
        mel = tok.log_mel_spectrogram(torch.from_numpy(wav)[None])  # [1, 128, T]
        mel_len = torch.tensor([mel.shape[-1]])
        hidden, _ = tok.encoder(mel, mel_len)
        tokens, lens = tok.forward([wav])
        out[f"{prefix}tokens_{name}"] = tokens
        out[f"{prefix}fsq_{name}"] = fsq_pre(tok, hidden)
        if not prefix:
            out[f"mel_{name}"] = mel.transpose(1, 2)
            out[f"hidden_{name}"] = hidden


@torch.no_grad()
def main() -> None:
    torch.manual_seed(0)
    speech = {f"speech_{sr}": espeak_at(text, sr) for sr, text in TEXTS.items()}
    clips = dict(speech, noise=noise(2.0, NOISE_SEED))

    tok, shapes = reduced_tokenizer()
    out: dict = {f"wav_{k}": v for k, v in speech.items()}
    out["state_shapes"] = np.array(json.dumps(shapes))
    run(tok, clips, out, "")

    batch = [speech["speech_22050"], speech["speech_8000"], clips["noise"]]
    tokens, lens = tok.forward(batch)
    out["batch_tokens"], out["batch_lens"] = tokens, lens
    tokens, lens = tok.forward([speech["speech_44100"]], max_len=20)
    out["maxlen_tokens"], out["maxlen_lens"] = tokens, lens

    long_wav = long_input(list(speech.values()))
    tokens, lens = tok.forward([long_wav, speech["speech_8000"]])
    out["long_tokens"], out["long_lens"] = tokens, lens
    save_golden("s3tokenizer", out, SCRIPT, notes=f"reduced {REDUCED}, weight seed {SEED}")

    # Full size: the tokenizer. tensors of the real-layout random checkpoint.
    real = S3Tokenizer("speech_tokenizer_v2_25hz")
    overrides = {
        "tokenizer._mel_filters": real._mel_filters.numpy(),
        "tokenizer.window": real.window.numpy(),
    }
    weights = random_weights("s3gen", seed=0, overrides=overrides)
    state = {
        k[len("tokenizer.") :]: torch.from_numpy(v)
        for k, v in weights.items()
        if k.startswith("tokenizer.")
    }
    del weights
    real.load_state_dict(state, strict=True)
    real.eval()
    full: dict = {}
    run(real, clips, full, "")
    full = {k: v for k, v in full.items() if k.startswith(("tokens_", "fsq_"))}
    tokens, lens = real.forward(batch)
    full["batch_tokens"], full["batch_lens"] = tokens, lens
    save_golden("s3tokenizer_full", full, SCRIPT, notes="full size, s3gen layout seed 0")


if __name__ == "__main__":
    main()

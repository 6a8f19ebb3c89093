"""Goldens for ``prepare_conditionals`` (tts.py / tts_turbo.py, S3Token2Mel.embed_ref).

The reference pipelines' own ``prepare_conditionals`` run on a stand-in ``self`` holding
just what they read (s3gen with ``embed_ref``, t3.hp, ve, the length constants), so the
flow/HiFT/T3 networks are never built. Reference clips are audio files:
- ``a``: espeak-ng speech, 12.7 s, 22.05 kHz mono (longer than every prompt window);
- ``b``: 3 s of espeak-ng speech at 8 kHz, stereo (right = 0.6 x left, delayed 5 ms).
They are stored as int16 samples; the test writes the identical files with soundfile.

- ``conditionals.npz``: reduced networks (tokenizer 128 wide / 2 layers, CAMPPlus with
  growth 8 / init 16 / embedding 24, VoiceEncoder 64 / 32), weights
  ``random_tensor(key, shape, dtype, seed)``, keys and shapes stored. English on a
  (exaggeration 0.7) and b, Turbo on a (loudness normalised).
- ``conditionals_full.npz``: the same with the full-size tokenizer and CAMPPlus from the
  real-layout random ``s3gen.safetensors`` and ``ve.safetensors`` (seed 0). ``prompt_feat``
  does not depend on the networks and is only stored once (checked equal here).

Run: .refenv/bin/python tests/reference/gen_conditionals.py
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from types import MethodType, SimpleNamespace

import numpy as np
import pyloudnorm
import soundfile
import torch
from chatterbox.models.s3gen.s3gen import S3Token2Mel
from chatterbox.models.s3gen.utils.mel import mel_spectrogram
from chatterbox.models.s3gen.xvector import CAMPPlus
from chatterbox.models.s3tokenizer import S3Tokenizer
from chatterbox.models.voice_encoder import VoiceEncConfig, VoiceEncoder
from chatterbox.tts import ChatterboxTTS
from chatterbox.tts_turbo import ChatterboxTurboTTS
from common import save_golden
from s3tokenizer.model_v2 import AudioEncoderV2, FSQVectorQuantization, ModelConfig

from tests.helpers.checkpoints import random_tensor, random_weights

SCRIPT = "tests/reference/gen_conditionals.py"
TOKENIZER_SEED, CAMPPLUS_SEED, VE_SEED = 21, 22, 23
CAMPPLUS_REDUCED = dict(feat_dim=80, embedding_size=24, growth_rate=8, bn_size=2, init_channels=16)
TEXT_A = (
    "Voice cloning needs a short recording of the target speaker. The reference clip is "
    "tokenized, embedded and turned into a mel prompt, and every step must match the "
    "original implementation exactly, down to the last token."
)
TEXT_B = "Stereo audio at eight kilohertz works as well."

_integrated = pyloudnorm.Meter.integrated_loudness
# numpy 2 makes pyloudnorm return float64 numpy scalars (see benchmarks/reference/README.md).
pyloudnorm.Meter.integrated_loudness = lambda self, data: float(_integrated(self, data))


def espeak(text: str, sr: int) -> np.ndarray:
    """espeak-ng speech converted by sox to ``sr``: int16 samples."""
    with tempfile.TemporaryDirectory() as tmp:
        raw, out = Path(tmp) / "raw.wav", Path(tmp) / "out.raw"
        subprocess.run(["espeak-ng", "-s", "150", "-w", str(raw), text], check=True)
        subprocess.run(
            ["sox", "-D", str(raw), "-r", str(sr), "-c", "1", "-b", "16", "-e", "signed", str(out)],
            check=True,
        )
        return np.fromfile(out, dtype="<i2")


def clips() -> dict[str, tuple[np.ndarray, int]]:
    a = espeak(TEXT_A, 22050)
    left = espeak(TEXT_B, 8000)[: 3 * 8000]
    right = np.concatenate([np.zeros(40, np.int16), (0.6 * left[:-40]).astype(np.int16)])
    return {"a": (a, 22050), "b": (np.stack([left, right], axis=1), 8000)}


def seeded(model: torch.nn.Module, seed: int, keep=()) -> dict[str, list[int]]:
    state = {}
    for key, value in model.state_dict().items():
        if key in keep:
            state[key] = value
            continue
        dtype = "int64" if value.dtype == torch.int64 else "float32"
        state[key] = torch.from_numpy(random_tensor(key, tuple(value.shape), dtype, seed))
    model.load_state_dict(state, strict=True)
    model.eval()
    return {k: list(v.shape) for k, v in state.items() if k not in keep}


def reduced_models():
    tok = S3Tokenizer("speech_tokenizer_v2_25hz")
    tok.config = ModelConfig(n_mels=128, n_audio_state=128, n_audio_head=2, n_audio_layer=2)
    tok.encoder = AudioEncoderV2(128, 128, 2, 2, 2, False)
    tok.quantizer = FSQVectorQuantization(128, 3**8)
    campplus = CAMPPlus(**CAMPPLUS_REDUCED, memory_efficient=False)
    hp = VoiceEncConfig()
    hp.ve_hidden_size, hp.speaker_embed_size = 64, 32
    ve = VoiceEncoder(hp)
    shapes = {
        "tokenizer": seeded(tok, TOKENIZER_SEED, keep=("_mel_filters", "window")),
        "campplus": seeded(campplus, CAMPPLUS_SEED),
        "ve": seeded(ve, VE_SEED),
    }
    return tok, campplus, ve, shapes


def full_models():
    tok = S3Tokenizer("speech_tokenizer_v2_25hz")
    overrides = {
        "tokenizer._mel_filters": tok._mel_filters.numpy(),
        "tokenizer.window": tok.window.numpy(),
    }
    weights = random_weights("s3gen", seed=0, overrides=overrides)

    def part(prefix):
        n = len(prefix)
        return {k[n:]: torch.from_numpy(v) for k, v in weights.items() if k.startswith(prefix)}

    tok.load_state_dict(part("tokenizer."), strict=True)
    campplus = CAMPPlus(memory_efficient=False)
    campplus.load_state_dict(part("speaker_encoder."), strict=True)
    ve = VoiceEncoder()
    ve.load_state_dict({k: torch.from_numpy(v) for k, v in random_weights("ve").items()})
    return tok.eval(), campplus.eval(), ve.eval()


def pipeline(cls, tok, campplus, ve, prompt_len: int):
    """A stand-in for the pipeline object: only what prepare_conditionals reads."""
    s3gen = SimpleNamespace(
        tokenizer=tok,
        speaker_encoder=campplus,
        mel_extractor=mel_spectrogram,
        device="cpu",
        dtype=torch.float32,
    )
    s3gen.embed_ref = MethodType(S3Token2Mel.embed_ref, s3gen)
    this = SimpleNamespace(
        s3gen=s3gen,
        ve=ve,
        t3=SimpleNamespace(hp=SimpleNamespace(speech_cond_prompt_len=prompt_len)),
        device="cpu",
        ENC_COND_LEN=cls.ENC_COND_LEN,
        DEC_COND_LEN=cls.DEC_COND_LEN,
    )
    if cls is ChatterboxTurboTTS:
        this.norm_loudness = MethodType(ChatterboxTurboTTS.norm_loudness, this)
    return this


@torch.no_grad()
def run_all(tok, campplus, ve, files: dict[str, Path]) -> dict:
    out = {}
    cases = {
        "english_a": (ChatterboxTTS, 150, files["a"], dict(exaggeration=0.7)),
        "english_b": (ChatterboxTTS, 150, files["b"], {}),
        "turbo_a": (ChatterboxTurboTTS, 375, files["a"], {}),
    }
    for name, (cls, plen, path, kwargs) in cases.items():
        this = pipeline(cls, tok, campplus, ve, plen)
        cls.prepare_conditionals(this, str(path), **kwargs)
        t3, gen = this.conds.t3, this.conds.gen
        out[f"{name}_speaker_emb"] = t3.speaker_emb
        out[f"{name}_cond_prompt_speech_tokens"] = t3.cond_prompt_speech_tokens
        out[f"{name}_emotion_adv"] = t3.emotion_adv
        for key in ("prompt_token", "prompt_token_len", "prompt_feat", "embedding"):
            out[f"{name}_{key}"] = gen[key]
        assert gen["prompt_feat_len"] is None
    return out


def main() -> None:
    torch.manual_seed(0)
    inputs = clips()
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for name, (samples, sr) in inputs.items():
            files[name] = Path(tmp) / f"{name}.wav"
            soundfile.write(files[name], samples, sr, subtype="PCM_16")

        tok, campplus, ve, shapes = reduced_models()
        out = run_all(tok, campplus, ve, files)
        for name, (samples, sr) in inputs.items():
            out[f"clip_{name}"], out[f"sr_{name}"] = samples, np.array(sr)
        out["state_shapes"] = np.array(json.dumps(shapes))
        save_golden("conditionals", out, SCRIPT, notes="reduced networks")

        full = run_all(*full_models(), files)
    for key in [k for k in full if k.endswith("prompt_feat")]:
        assert torch.equal(full.pop(key), torch.as_tensor(out[key])), key
    save_golden("conditionals_full", full, SCRIPT, notes="full size, layouts seed 0")


if __name__ == "__main__":
    main()

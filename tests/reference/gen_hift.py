"""Goldens for the HiFT vocoder (chatterbox/models/s3gen/hifigan.py, f0_predictor.py and the
waveform part of S3Token2Wav in s3gen.py).

Two files:
- ``hift.npz``: a reduced HiFTGenerator (``REDUCED``: 32 base / 32 F0 channels; rates,
  kernels, harmonics and STFT as in S3Gen). Its weights are
  ``checkpoints.random_tensor(key, shape, "float32", REDUCED_SEED)`` for each state_dict key
  (weight norm g and v included), with the F0 predictor's classifier scaled by
  ``F0_SCALE`` so that most frames are voiced (> 10 Hz): only keys and shapes are stored.
  Two calls of ``inference``: a batch of two mels (``mel``), then a second one-item call
  with ``cache_source`` (``mel_b``, ``cache_b``).
- ``hift_full.npz``: ``S3Token2Wav().mel2wav`` loaded from the ``mel2wav.`` tensors of the
  real-layout random ``s3gen.safetensors`` (checkpoints.cached_checkpoint, seed 0, tag
  ``FULL_TAG``: only the mel2wav keys, classifier scaled by ``F0_SCALE``), run through
  ``hift_inference`` plus the ``trim_fade`` of ``S3Token2Wav.inference``.

SineGen's random draws (initial phase, additive noise) are recorded by wrapping
``Uniform.sample`` and ``torch.randn_like`` and stored (``phase*``, ``noise*``, torch layout
[B, harmonics, 1] and [B, harmonics, L]), so the port is handed the same draws.
Saved per call: ``f0`` [B, T], ``source`` [B, L], ``source_stft`` [B, 18, L/4 + 1],
``wav`` [B, L] (and ``wav_faded`` for the full model).

Run: .refenv/bin/python tests/reference/gen_hift.py
"""

from __future__ import annotations

import numpy as np
import torch
from chatterbox.models.s3gen.f0_predictor import ConvRNNF0Predictor
from chatterbox.models.s3gen.hifigan import HiFTGenerator
from chatterbox.models.s3gen.s3gen import S3Token2Wav
from common import save_golden
from torch.distributions.uniform import Uniform

from tests.helpers.checkpoints import cached_checkpoint, layout, random_tensor
from tests.helpers.hift_scaling import F0_SCALE, FULL_TAG, POST_SCALE, full_transform, scale

SCRIPT = "tests/reference/gen_hift.py"
REDUCED_SEED = 11
REDUCED = dict(
    in_channels=80,
    base_channels=32,
    nb_harmonics=8,
    sampling_rate=24000,
    upsample_rates=[8, 5, 3],
    upsample_kernel_sizes=[16, 11, 7],
    source_resblock_kernel_sizes=[7, 7, 11],
    source_resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
)
REDUCED_F0_CHANNELS = 32


def full_drop() -> tuple[str, ...]:
    """Every key of the s3gen layout outside the vocoder (keeps the cached file at 83 MB)."""
    return tuple(k for k in layout("s3gen") if not k.startswith("mel2wav."))


class DrawRecorder:
    """Records SineGen's phase and noise draws (and the source module's unused one)."""

    def __init__(self):
        self.draws = []
        self._sample = Uniform.sample
        self._randn_like = torch.randn_like

    def __enter__(self):
        recorder = self

        def sample(dist, sample_shape=()):
            out = recorder._sample(dist, sample_shape)
            recorder.draws.append(out.clone())
            return out

        def randn_like(x, *args, **kwargs):
            out = recorder._randn_like(x, *args, **kwargs)
            recorder.draws.append(out.clone())
            return out

        Uniform.sample = sample
        torch.randn_like = randn_like
        return self

    def __exit__(self, *exc):
        Uniform.sample = self._sample
        torch.randn_like = self._randn_like


def run(model: HiFTGenerator, mel: torch.Tensor, cache: torch.Tensor | None = None) -> dict:
    """One ``inference`` call; its outputs, intermediates and random draws."""
    cache = torch.zeros(1, 1, 0) if cache is None else cache
    with torch.inference_mode(), DrawRecorder() as rec:
        f0 = model.f0_predictor(mel)
        wav, source = model.inference(speech_feat=mel, cache_source=cache)
        real, imag = model._stft(source.squeeze(1))
    # phase (Uniform), SineGen noise, SourceModuleHnNSF's unused noise
    assert len(rec.draws) == 3, [tuple(d.shape) for d in rec.draws]
    phase, noise, _ = rec.draws
    f0_np = f0.numpy()
    print(
        f"  mel {tuple(mel.shape)}: f0 {f0_np.min():.1f}..{f0_np.max():.1f} Hz, voiced "
        f"{(f0_np > 10).mean():.0%}, |wav| max {wav.abs().max():.3f}, clipped "
        f"{(wav.abs() >= 0.99).float().mean():.1%}"
    )
    return dict(
        f0=f0,
        phase=phase,
        noise=noise,
        source=source.squeeze(1),
        source_stft=torch.cat([real, imag], dim=1),
        wav=wav,
    )


def reduced() -> dict:
    f0_predictor = ConvRNNF0Predictor(cond_channels=REDUCED_F0_CHANNELS)
    model = HiFTGenerator(**REDUCED, f0_predictor=f0_predictor).eval()
    state = {}
    for key, value in model.state_dict().items():
        x = random_tensor(key, tuple(value.shape), "float32", REDUCED_SEED)
        state[key] = torch.from_numpy(scale(key, x))
    model.load_state_dict(state, strict=True)

    rng = np.random.default_rng(REDUCED_SEED)
    mel = torch.from_numpy((rng.standard_normal((2, 80, 16)) - 4.0).astype(np.float32))
    mel_b = torch.from_numpy((rng.standard_normal((1, 80, 12)) - 4.0).astype(np.float32))
    torch.manual_seed(REDUCED_SEED)
    out = {"mel": mel}
    out.update(run(model, mel))
    # Streaming: the next chunk reuses the first 1000 source samples of the previous one.
    cache = out["source"][:1, None, :1000]
    out.update({f"{k}_b": v for k, v in run(model, mel_b, cache).items()})
    out.update(mel_b=mel_b, cache_b=cache[:, 0])
    out["state_keys"] = np.array(list(state))
    out["state_shapes"] = np.array([",".join(map(str, v.shape)) for v in state.values()])
    out["scales"] = np.array([F0_SCALE, POST_SCALE], dtype=np.float32)
    out["reduced_seed"] = np.int64(REDUCED_SEED)
    return out


def full() -> dict:
    path = cached_checkpoint(
        "s3gen", seed=0, tag=FULL_TAG, transform=full_transform, drop=full_drop()
    )
    from safetensors.torch import load_file

    weights = load_file(str(path))
    s3gen = S3Token2Wav().eval()
    mel2wav = {k[len("mel2wav.") :]: v for k, v in weights.items() if k.startswith("mel2wav.")}
    s3gen.mel2wav.load_state_dict(mel2wav, strict=True)

    rng = np.random.default_rng(5)
    mel = torch.from_numpy((rng.standard_normal((1, 80, 24)) - 4.0).astype(np.float32))
    torch.manual_seed(5)
    out = run(s3gen.mel2wav, mel)
    with torch.inference_mode():  # S3Token2Wav.inference's fade-in, on a copy
        faded = out["wav"].clone()
        faded[:, : len(s3gen.trim_fade)] *= s3gen.trim_fade
    out.update(mel=mel, wav_faded=faded, trim_fade=s3gen.trim_fade)
    out["scales"] = np.array([F0_SCALE, POST_SCALE], dtype=np.float32)
    out["tag"] = np.array(FULL_TAG)
    return out


def main():
    torch.set_num_threads(2)
    print("reduced")
    save_golden("hift", reduced(), SCRIPT, notes="reduced HiFT, see the script's docstring")
    print("full")
    save_golden("hift_full", full(), SCRIPT, notes="full HiFT on the random s3gen checkpoint")


if __name__ == "__main__":
    main()

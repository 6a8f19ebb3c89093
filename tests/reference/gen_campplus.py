"""Goldens for the CAMPPlus speaker x-vector (chatterbox/models/s3gen/xvector.py).

Two files:
- ``campplus.npz``: a reduced CAMPPlus (small growth rate / init channels / embedding;
  the FCM head and the 12/24/16 layer counts are fixed by the reference). Its weights,
  BatchNorm statistics included, are ``checkpoints.random_tensor(key, shape, dtype, SEED)``
  for each state_dict key: only the keys and shapes are stored (``state_keys``,
  ``state_shapes``) and the test rebuilds the identical values with numpy. Outputs: the
  network on features (``features_*`` -> ``xvec_*``) and ``inference`` on a batch of two
  clips of different length (zero-padded features, as the reference does). Also one
  ``CAMLayer`` alone (``cam_x`` ``[B, C, T]`` -> ``cam_y``), its weights ``random_tensor`` of
  its own state_dict keys (``linear_local.weight``, ...) with the same seed.
- ``campplus_full.npz``: the full-size CAMPPlus loaded from the ``speaker_encoder.``
  tensors of the real-layout random ``s3gen.safetensors`` (tests/helpers/checkpoints.py,
  seed 0), run by ``inference`` on 2 s of espeak-ng speech at 16 kHz.

Run: .refenv/bin/python tests/reference/gen_campplus.py
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
from chatterbox.models.s3gen.xvector import CAMLayer, CAMPPlus, extract_feature
from common import save_golden

from tests.helpers.checkpoints import layout, random_tensor

SCRIPT = "tests/reference/gen_campplus.py"
REDUCED_SEED = 7
REDUCED = dict(feat_dim=80, embedding_size=24, growth_rate=8, bn_size=2, init_channels=16)


def espeak_16k(text: str, seconds: float) -> np.ndarray:
    """``seconds`` of espeak-ng speech, resampled to 16 kHz mono float32 by sox
    (``-D``: no dither, so the samples are the same on every run)."""
    with tempfile.TemporaryDirectory() as tmp:
        raw, out = Path(tmp) / "raw.wav", Path(tmp) / "out.raw"
        subprocess.run(["espeak-ng", "-s", "150", "-w", str(raw), text], check=True)
        subprocess.run(
            ["sox", "-D", str(raw), "-r", "16000", "-c", "1", "-b", "16", "-e", "signed", str(out)],
            check=True,
        )
        wav = np.fromfile(out, dtype="<i2").astype(np.float32) / 32768.0
    n = int(seconds * 16000)
    assert len(wav) >= n, f"espeak produced only {len(wav) / 16000:.2f} s"
    return wav[:n]


def random_state(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Every tensor of ``model``'s state_dict from ``random_tensor`` (non-trivial BatchNorm
    statistics too: the reference's defaults are 0 / 1)."""
    state = {}
    for key, value in model.state_dict().items():
        dtype = "int64" if value.dtype == torch.int64 else "float32"
        state[key] = torch.from_numpy(random_tensor(key, tuple(value.shape), dtype, seed))
    return state


@torch.no_grad()
def reduced() -> None:
    model = CAMPPlus(**REDUCED, memory_efficient=False).eval()
    state = random_state(model, REDUCED_SEED)
    model.load_state_dict(state, strict=True)
    float_keys = [k for k, v in state.items() if v.dtype == torch.float32]

    gen = torch.Generator().manual_seed(2)
    # 250 frames -> 125 after the TDNN: two full 100-frame CAM segments plus a partial one.
    # Per-item scales and offsets, so the two items' time statistics differ.
    scale = 0.5 + torch.rand(2, 1, 80, generator=gen)
    features_a = torch.randn(2, 250, 80, generator=gen) * scale
    features_a += torch.randn(2, 1, 80, generator=gen)
    features_b = torch.randn(1, 7, 80, generator=gen)  # tiny: 4 frames after the TDNN

    speech = espeak_16k("Quick brown foxes jump over lazy dogs.", 1.6)
    wav_long = torch.from_numpy(speech[:16000])
    wav_short = torch.from_numpy(speech[4000:15200])  # 0.7 s, fewer frames: zero-padded
    batch_features, _, _ = extract_feature([wav_long, wav_short])

    # One CAM layer alone, on input whose level drifts across its 100-frame segments (in the
    # whole network the segment context has only a small effect on random weights).
    cam = CAMLayer(8, 4, 3, stride=1, padding=2, dilation=2, bias=False)
    cam.load_state_dict(random_state(cam, REDUCED_SEED))
    time = torch.arange(250, dtype=torch.float32)
    phase = 6.283 * torch.rand(2, 8, 1, generator=gen)
    cam_x = torch.randn(2, 8, 250, generator=gen) + 3 * torch.sin(time / 27 + phase)

    arrays = {
        "cam_x": cam_x,
        "cam_y": cam(cam_x),
        "state_keys": np.array(float_keys),
        "state_shapes": np.array(json.dumps([list(state[k].shape) for k in float_keys])),
        "seed": np.array(REDUCED_SEED),
        "config": np.array([REDUCED[k] for k in sorted(REDUCED)]),
        "config_keys": np.array(sorted(REDUCED)),
        "features_a": features_a,
        "xvec_a": model(features_a),
        "features_b": features_b,
        "xvec_b": model(features_b),
        "wav_long": wav_long,
        "wav_short": wav_short,
        "batch_features": batch_features,
        "xvec_batch": model.inference([wav_long, wav_short]),
    }
    path = save_golden("campplus", arrays, SCRIPT, notes=f"reduced CAMPPlus {REDUCED}")
    print(path, {k: tuple(np.shape(v)) for k, v in arrays.items()})


@torch.no_grad()
def full() -> None:
    prefix = "speaker_encoder."
    state = {
        k[len(prefix) :]: torch.from_numpy(random_tensor(k, shape, dtype, seed=0))
        for k, (shape, dtype) in layout("s3gen").items()
        if k.startswith(prefix)
    }
    model = CAMPPlus(memory_efficient=False).eval()
    model.load_state_dict(state, strict=True)

    wav = torch.from_numpy(espeak_16k("The speaker encoder hears this sentence.", 2.0))[None]
    features, _, _ = extract_feature(wav)
    xvec = model.inference(wav)  # exactly as S3Token2Mel.embed_ref calls it
    arrays = {"wav": wav, "features": features, "xvec": xvec}
    path = save_golden(
        "campplus_full",
        arrays,
        SCRIPT,
        notes="full-size CAMPPlus, speaker_encoder.* of checkpoints.random_weights('s3gen', 0)",
    )
    print(path, {k: tuple(v.shape) for k, v in arrays.items()})


if __name__ == "__main__":
    torch.set_num_threads(2)
    reduced()
    full()

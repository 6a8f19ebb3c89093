"""HiFT vocoder speed: seconds of compute per second of 24 kHz audio, ours vs the reference.

Both run the full-size vocoder from the same real-layout random checkpoint
(tests/helpers/checkpoints.py, the ``mel2wav.`` tensors of ``s3gen.safetensors``) on the
same mel. The reference runs in its own venv (``.refenv``) as a subprocess of this script.

    python benchmarks/hift.py [--seconds 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import best_time  # noqa: E402
from tests.helpers.checkpoints import cached_checkpoint  # noqa: E402

REFENV = ROOT / ".refenv" / "bin" / "python"
FRAMES_PER_SECOND = 50  # 24000 / 480


def checkpoint() -> Path:
    """The full random s3gen checkpoint the other tests share (only mel2wav.* is read)."""
    return cached_checkpoint("s3gen", seed=0)


def make_mel(seconds: float) -> np.ndarray:
    """[1, frames, 80] log-mel-like values (channels-last)."""
    frames = int(seconds * FRAMES_PER_SECOND)
    rng = np.random.default_rng(0)
    return (rng.standard_normal((1, frames, 80)) - 4.0).astype(np.float32)


def run_ours(seconds: float, repeats: int) -> tuple[float, str]:
    """(best time, which formulations ran: CHATTERBOX_MLX_CPU_KERNELS=off runs the GPU's)."""
    # isort: off
    import chatterbox_mlx  # noqa: F401  (loads BLAS before mlx.core)
    import mlx.core as mx
    # isort: on

    from chatterbox_mlx.models import hift, layers

    model = hift.load(checkpoint())
    mel = mx.array(make_mel(seconds))
    kernels = "CPU kernels" if layers.cpu_kernels_active() else "MLX formulations"
    return best_time(lambda: mx.eval(model(mel)[0]), repeats), kernels


def reference_model(seconds: float):
    """The reference's HiFTGenerator and a torch-layout mel of ``seconds``."""
    import torch
    from chatterbox.models.s3gen.f0_predictor import ConvRNNF0Predictor
    from chatterbox.models.s3gen.hifigan import HiFTGenerator
    from safetensors import safe_open

    # Built exactly as S3Token2Wav builds its mel2wav.
    model = HiFTGenerator(
        sampling_rate=24000,
        upsample_rates=[8, 5, 3],
        upsample_kernel_sizes=[16, 11, 7],
        source_resblock_kernel_sizes=[7, 7, 11],
        source_resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        f0_predictor=ConvRNNF0Predictor(),
    ).eval()
    with safe_open(str(checkpoint()), "pt") as f:
        names = [k for k in f.keys() if k.startswith("mel2wav.")]
        weights = {k[len("mel2wav.") :]: f.get_tensor(k) for k in names}
    model.load_state_dict(weights, strict=True)
    mel = torch.from_numpy(make_mel(seconds)).transpose(1, 2).contiguous()
    return model, mel


def run_reference(seconds: float, repeats: int) -> float:
    model, mel = reference_model(seconds)
    return best_time(lambda: model.inference(speech_feat=mel), repeats)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="audio length")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.reference:
        print(json.dumps({"seconds": run_reference(args.seconds, args.repeats)}))
        return

    checkpoint()  # write the cached checkpoint once, outside both timings
    if not REFENV.exists():
        sys.exit(f"reference venv not found at {REFENV}: bash benchmarks/reference/setup_refenv.sh")
    cmd = [str(REFENV), __file__, "--reference", "--seconds", str(args.seconds)]
    cmd += ["--repeats", str(args.repeats)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    ref = json.loads(out.strip().splitlines()[-1])["seconds"]
    ours, kernels = run_ours(args.seconds, args.repeats)

    audio = args.seconds
    print(f"HiFT vocoder, {audio:g} s of audio (best of {args.repeats}):")
    print(f"  reference (torch): {ref:.3f} s  = {ref / audio:.3f} s per s of audio")
    print(f"  ours (mlx):        {ours:.3f} s  = {ours / audio:.3f} s per s of audio ({kernels})")
    print(f"  ratio ours / reference: {ours / ref:.2f}x")


if __name__ == "__main__":
    main()

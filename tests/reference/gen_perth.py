"""Goldens for the Perth implicit watermark (real weights from resemble-perth).

Step 1 (reference venv): espeak-ng speech at 24 kHz (Chatterbox's output rate) and at
32 kHz (PerthNet's own rate, no resampling), marked by ``PerthImplicitWatermarker``, with
the reference's intermediate 32 kHz signals and its unrounded detector scores.

Step 2 (main env, started by step 1): chatterbox_mlx marks the same speech and writes it to
a temporary file; step 1 then scores that audio with the reference detector and stores the
scores in the golden (``ref_score_mlx_marked_*``).

    .refenv/bin/python tests/reference/gen_perth.py     # both steps
    MLX_PYTHON=/path/to/python ...                       # the python that has chatterbox_mlx

Running it twice gives the same numbers (espeak-ng and sox are deterministic, no dither).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
ROOT = HERE.parents[2]
TEXT = "The quick brown fox jumps over the lazy dog."
RATES = (24000, 32000)


def speech(sample_rate: int) -> np.ndarray:
    """espeak-ng speech resampled by sox to ``sample_rate``, float32 in [-1, 1]."""
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        raw, out = Path(tmp, "raw.wav"), Path(tmp, "out.wav")
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(raw), TEXT], check=True)
        subprocess.run(
            [
                "sox",
                "-D",
                str(raw),
                "-e",
                "floating-point",
                "-b",
                "32",
                str(out),
                "rate",
                "-v",
                str(sample_rate),
            ],
            check=True,
        )
        wav, sr = sf.read(out, dtype="float32")
    assert sr == sample_rate
    return np.ascontiguousarray(wav)


def raw_score(wm, wav: np.ndarray, sr: int) -> np.ndarray:
    """The decoder's output before get_watermark clips it to [0, 1] (same resampling)."""
    import librosa
    import torch

    net = wm.perth_net
    if sr != net.hp.sample_rate:
        wav = librosa.resample(wav, orig_sr=sr, target_sr=net.hp.sample_rate, res_type="polyphase")
    magspec, _phase = net.ap.signal_to_magphase(torch.from_numpy(wav))
    return net.decoder(magspec[None])[0]


def reference_arrays() -> dict[str, np.ndarray]:
    import librosa
    import torch
    from perth import PerthImplicitWatermarker

    torch.manual_seed(0)
    wm = PerthImplicitWatermarker()
    wm.perth_net.eval()
    model_sr = wm.perth_net.hp.sample_rate
    out = {}
    with torch.no_grad():
        for sr in RATES:
            wav = speech(sr)
            marked = wm.apply_watermark(wav, sample_rate=sr).astype(np.float32)
            out[f"speech_{sr}"] = wav
            out[f"marked_{sr}"] = marked
            for name, signal in (("speech", wav), ("marked", marked)):
                out[f"ref_score_{name}_{sr}"] = wm.get_watermark(signal, sr, round=False)
                out[f"ref_raw_score_{name}_{sr}"] = raw_score(wm, signal, sr)
            if sr != model_sr:
                # what get_watermark feeds the decoder: scipy's polyphase resampling
                out[f"marked_{sr}_poly_32k"] = librosa.resample(
                    marked, orig_sr=sr, target_sr=model_sr, res_type="polyphase"
                ).astype(np.float32)
    return out


def score_with_reference(marked: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import torch
    from perth import PerthImplicitWatermarker

    wm = PerthImplicitWatermarker()
    scores = {}
    with torch.no_grad():
        for sr in RATES:
            wav = marked[f"mlx_marked_{sr}"]
            scores[f"ref_score_mlx_marked_{sr}"] = wm.get_watermark(wav, sr, round=False)
            scores[f"ref_raw_score_mlx_marked_{sr}"] = raw_score(wm, wav, sr)
    return scores


def mlx_mark(golden: Path, dest: Path) -> None:
    """Main-env step: mark the golden's speech with chatterbox_mlx, save to ``dest`` (.npz)."""
    sys.path.insert(0, str(ROOT))
    from chatterbox_mlx.pipeline.watermark import apply_watermark

    with np.load(golden) as data:
        arrays = {f"mlx_marked_{sr}": apply_watermark(data[f"speech_{sr}"], sr) for sr in RATES}
    np.savez(dest, **arrays)


def main() -> None:
    sys.path.insert(0, str(HERE.parent))
    from common import save_golden

    script = "tests/reference/gen_perth.py"
    arrays = reference_arrays()
    notes = (
        "Perth implicit watermark, real weights. speech_R: espeak-ng via sox at R Hz; "
        "marked_R: reference apply_watermark; marked_R_poly_32k: the 32 kHz signal its detector "
        "reads; ref_score_*: reference get_watermark(round=False); ref_raw_score_*: the "
        "decoder output before clipping; "
        "ref_(raw_)score_mlx_marked_R: reference detector on chatterbox_mlx's marked audio."
    )
    path = save_golden("perth", arrays, script, notes)

    mlx_python = os.environ.get("MLX_PYTHON") or shutil.which("python3") or "python3"
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp, "mlx_marked.npz")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cmd = [mlx_python, str(HERE), "--mlx-mark", str(path), str(dest)]
        if subprocess.run(cmd, env=env, cwd=ROOT).returncode != 0:
            raise SystemExit(
                f"step 2 failed with {mlx_python}: set MLX_PYTHON to a python that has mlx and "
                "chatterbox_mlx's dependencies (the golden was saved without the MLX scores)"
            )
        with np.load(dest) as data:
            mlx_marked = {k: data[k] for k in data.files}
    scores = score_with_reference(mlx_marked)
    for key, value in scores.items():
        print(f"{key}: {float(value):.6f}")
    save_golden("perth", {**arrays, **scores}, script, notes)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--mlx-mark":
        mlx_mark(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        main()

"""Pitch-preserving time-stretch libraries compared on espeak-ng speech (issue 17).

    python benchmarks/speed.py              # quality and cost of every installed candidate
    python benchmarks/speed.py --wheels     # also the install weight (pip download, PyPI)

The candidates are not dependencies: install them beside the project, e.g. in a venv
made with ``--system-site-packages``: ``pip install pedalboard python-stretch audiotsm
pytsmod librosa pyrubberband`` (and the ``rubberband`` command-line tool).

Each candidate stretches the same speech (two espeak-ng voices, resampled to 24 kHz)
at speeds 0.5, 0.8, 1.25 and 2.0. Measured, per candidate and speed:

- ``dur%``: output duration against ``input / speed``, in percent.
- ``F0%``: pitch change in percent, the median over frames voiced in both of
  F0(output at t) / F0(input at t * speed) (YIN, ``tests/test_speed.py:pitch_ratio``);
  0 means the pitch was kept. (Comparing the two signals' median F0 instead is biased
  by a few percent: stretching changes which frames pass as voiced.)
- ``per``: change of the mean periodicity (YIN's ``1 - d'(tau)``, 1 = perfectly
  periodic) over the voiced frames. Phasiness and roughness (the smeared, reverberant
  sound of a phase vocoder without phase locking) lower it; it is a proxy, not a
  listening test.
- ``mel dB``: mean absolute difference, in dB, between the output's 80-band log-mel
  spectrogram and the input's, sampled at the time-scaled frame centres (frames above
  -50 dB of the loudest only; the best constant offset within +-30 ms, so that a fixed
  latency does not count). Smearing of harmonics, doubled transients and uneven timing
  all raise it; it also counts WSOLA's small local timing shifts.
- ``ms/s``: wall time per second of input audio (best of 3 after one warm-up), and
  ``gen%``: that time against generating one second of speech with Turbo on this CPU
  (about 3.5 s, README Performance table).

A candidate that is not installed is listed as such. The install weights are the
wheel sizes (and, with their dependencies, what ``pip`` downloads beyond what
chatterbox-mlx already requires) for CPython 3.11 on macOS arm64, Linux x86-64 and
Linux aarch64.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.common import best_time  # noqa: E402
from tests.test_speed import espeak_speech, f0_track, pitch_ratio  # noqa: E402

SR = 24000
SPEEDS = (0.5, 0.8, 1.25, 2.0)
VOICES = ("en-us", "en-us+f3")  # espeak-ng's male default and a female variant
TURBO_S_PER_AUDIO_S = 3.5
TEXT = (
    "Chatterbox speaks rather fast, so a speed control helps listeners follow long "
    "passages. The quick brown fox jumps over the lazy dog, and then it rests."
)


# ---- candidates: (wav float32 [T], sr, speed) -> float32 [T'] ------------------------


def _pedalboard(high_quality: bool):
    def run(wav, sr, speed):
        import pedalboard

        out = pedalboard.time_stretch(wav[None], sr, stretch_factor=speed,
                                      high_quality=high_quality)  # fmt: skip
        return out[0]

    return run


def _signalsmith(wav, sr, speed):
    import python_stretch

    stretch = python_stretch.Signalsmith.Stretch()
    stretch.preset(1, sr)
    stretch.setTimeFactor(speed)
    return stretch.process(wav[None])[0]


def _audiotsm(wav, sr, speed):
    from audiotsm import wsola
    from audiotsm.io.array import ArrayReader, ArrayWriter

    writer = ArrayWriter(1)
    wsola(1, speed=speed).run(ArrayReader(wav[None].astype(np.float64)), writer)
    return writer.data[0].astype(np.float32)


def _pytsmod(wav, sr, speed):
    import pytsmod

    return np.asarray(pytsmod.wsola(wav, 1.0 / speed), dtype=np.float32)


def _librosa(wav, sr, speed):
    import librosa

    return librosa.effects.time_stretch(wav, rate=speed)


def _pyrubberband(wav, sr, speed):
    import pyrubberband

    return pyrubberband.time_stretch(wav, sr, speed).astype(np.float32)


CANDIDATES: dict[str, tuple[str, Callable]] = {
    "pedalboard": ("pedalboard", _pedalboard(True)),
    "pedalboard-fast": ("pedalboard", _pedalboard(False)),
    "python-stretch": ("python_stretch", _signalsmith),
    "audiotsm": ("audiotsm", _audiotsm),
    "pytsmod": ("pytsmod", _pytsmod),
    "librosa": ("librosa", _librosa),
    "pyrubberband": ("pyrubberband", _pyrubberband),
}
WHAT = {
    "pedalboard": "Rubber Band R3 ('finer') in Spotify's pedalboard, high_quality=True",
    "pedalboard-fast": "the same, high_quality=False (Rubber Band R2 'faster')",
    "python-stretch": "Signalsmith Stretch (C++, MIT) via nanobind",
    "audiotsm": "WSOLA, pure Python + numpy (last release 2017)",
    "pytsmod": "WSOLA, pure Python + numpy/scipy",
    "librosa": "phase vocoder (librosa.effects.time_stretch)",
    "pyrubberband": "Rubber Band command-line tool through files (default R2 engine)",
}
# PyPI names of the candidates and of what chatterbox-mlx already pulls in.
WHEELS = {
    "pedalboard": "pedalboard",
    "python-stretch": "python-stretch",
    "audiotsm": "audiotsm",
    "pytsmod": "pytsmod",
    "librosa": "librosa",
    "pyrubberband": "pyrubberband",
    "pylibrb": "pylibrb",
}
PLATFORMS = {
    "macOS arm64": ["macosx_14_0_arm64"],
    "Linux x86-64": ["manylinux_2_28_x86_64", "manylinux2014_x86_64"],
    "Linux aarch64": ["manylinux_2_28_aarch64", "manylinux2014_aarch64"],
}
OURS = ["numpy", "soundfile", "soxr", "tokenizers", "safetensors", "huggingface_hub", "rich"]


# ---- measurements ---------------------------------------------------------------------


N_FFT, HOP = 1024, 240


def log_mel(wav: np.ndarray, sr: int, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """[frames, 80] log10-power mel spectrogram (dB), Hann window."""
    from chatterbox_mlx import audio

    wav = np.asarray(wav, dtype=np.float64)
    n = 1 + max(0, len(wav) - n_fft) // hop
    frames = wav[np.arange(n)[:, None] * hop + np.arange(n_fft)[None, :]] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    bank = np.asarray(audio.mel_filters(sr, n_fft, 80), dtype=np.float64)  # [80, bins]
    return 10 * np.log10(power @ bank.T + 1e-10)


def mel_distance(original: np.ndarray, stretched: np.ndarray, speed: float) -> float:
    """Mean |dB| between the output's log-mel frames and the input's at the time-scaled
    frame centres, at the best of the constant offsets within +-30 ms (a stretcher's
    fixed latency is not a quality problem)."""
    a, b = log_mel(original, SR), log_mel(stretched, SR)
    centre = N_FFT / 2
    best = np.inf
    for shift in range(-3, 4):
        pos = (((np.arange(len(b)) + shift) * HOP + centre) * speed - centre) / HOP
        keep = (pos >= 0) & (pos <= len(a) - 1)
        lo = np.floor(pos[keep]).astype(int)
        hi = np.minimum(lo + 1, len(a) - 1)
        frac = (pos[keep] - lo)[:, None]
        ref = (1 - frac) * a[lo] + frac * a[hi]
        loud = ref.max(axis=1) > ref.max() - 50
        best = min(best, float(np.mean(np.abs(ref[loud] - b[keep][loud]))))
    return best


def periodicity(wav: np.ndarray) -> float:
    f0, per = f0_track(wav, SR)
    return float(np.mean(per[~np.isnan(f0)]))


def measure(fn, speeches, speed) -> dict:
    rows = []
    for wav in speeches:
        out = np.asarray(fn(wav, SR, speed), dtype=np.float32)
        rows.append(
            (
                100 * (len(out) * speed / len(wav) - 1),
                100 * (pitch_ratio(wav, out, speed, SR) - 1),
                periodicity(out) - periodicity(wav),
                mel_distance(wav, out, speed),
            )
        )
    seconds = sum(len(w) for w in speeches) / SR
    cost = best_time(lambda: [fn(w, SR, speed) for w in speeches], repeats=3)
    worst = lambda k: max((r[k] for r in rows), key=abs)  # noqa: E731
    return {
        "dur%": worst(0),
        "F0%": worst(1),
        "per": float(np.mean([r[2] for r in rows])),
        "mel dB": float(np.mean([r[3] for r in rows])),
        "ms/s": 1000 * cost / seconds,
    }


def quality_table(names: list[str]) -> None:
    speeches = [espeak_speech(TEXT, voice, SR) for voice in VOICES]
    seconds = [len(w) / SR for w in speeches]
    medians = [float(np.nanmedian(f0_track(w, SR)[0])) for w in speeches]
    print(f"speech: espeak-ng voices {', '.join(VOICES)}: {', '.join(f'{s:.2f}' for s in seconds)}"
          f" s at {SR} Hz, median F0 {', '.join(f'{m:.1f}' for m in medians)} Hz")  # fmt: skip
    print("dur% and F0%: the worse of the two voices; per and mel dB: their mean\n")
    header = f"{'candidate':16} {'speed':>5} {'dur%':>7} {'F0%':>6} {'per':>7} {'mel dB':>7}"
    print(header + f" {'ms/s':>7} {'gen%':>6}")
    for name in names:
        module, fn = CANDIDATES[name]
        try:
            __import__(module)
        except ImportError:
            print(f"{name:16} not installed ({module})")
            continue
        if name == "pyrubberband" and shutil.which("rubberband") is None:
            print(f"{name:16} needs the rubberband command-line tool (not found)")
            continue
        for speed in SPEEDS:
            m = measure(fn, speeches, speed)
            gen = m["ms/s"] / (10 * TURBO_S_PER_AUDIO_S)
            print(f"{name:16} {speed:5.2f} {m['dur%']:+7.2f} {m['F0%']:+6.2f} {m['per']:+7.3f} "
                  f"{m['mel dB']:7.2f} {m['ms/s']:7.1f} {gen:5.1f}%")  # fmt: skip
    print()
    for name in names:
        print(f"{name:16} {WHAT[name]}")


# ---- install weight ---------------------------------------------------------------------


def _download(packages: list[str], tags: list[str], deps: bool, dest: Path) -> dict[str, int]:
    """{wheel file: bytes} that pip downloads for ``packages`` on the platform ``tags``."""
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
           "--python-version", "3.11", "-d", str(dest)]  # fmt: skip
    for tag in tags:
        cmd += ["--platform", tag]
    if not deps:
        cmd.append("--no-deps")
    result = subprocess.run(cmd + packages, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip().splitlines()[-1])
    return {p.name: p.stat().st_size for p in dest.glob("*.whl")}


def _project(wheel: str) -> str:
    return wheel.split("-")[0].lower().replace("_", "-")


def wheel_table() -> None:
    print("\ninstall weight (CPython 3.11 wheels, MB): the package / with the dependencies "
          "chatterbox-mlx does not already have")  # fmt: skip
    print(f"{'candidate':16} " + " ".join(f"{p:>22}" for p in PLATFORMS))
    with tempfile.TemporaryDirectory() as tmp:
        ours = {}
        for plat, tags in PLATFORMS.items():
            have = _download(OURS, tags, True, Path(tmp) / f"ours-{tags[0]}")
            ours[plat] = {_project(w) for w in have}
        extras, metadata = {}, {}
        for name, pypi in WHEELS.items():
            cells = []
            for plat, tags in PLATFORMS.items():
                try:
                    own = _download([pypi], tags, False, Path(tmp) / f"{name}-{tags[0]}-own")
                    full = _download([pypi], tags, True, Path(tmp) / f"{name}-{tags[0]}")
                except RuntimeError:
                    cells.append(f"{'no wheel':>22}")
                    continue
                added = {w: s for w, s in full.items() if _project(w) not in ours[plat]}
                extras.setdefault(name, set()).update(_project(w) for w in added)
                size = sum(own.values()) / 1e6
                cells.append(f"{size:8.2f} / {sum(added.values()) / 1e6:8.2f}".rjust(22))
            print(f"{name:16} " + " ".join(cells))
            metadata[name] = _metadata(Path(tmp) / f"{name}-{PLATFORMS['Linux x86-64'][0]}-own")
        for name, added in extras.items():
            others = sorted(added - {WHEELS[name]})
            if others:
                print(f"  {name} adds: {', '.join(others)}")
        print()
        for name, meta in metadata.items():
            print(f"{name:16} {meta}")
    print("pyrubberband also needs the rubberband command-line tool (apt, brew), not counted")


def _metadata(folder: Path) -> str:
    """Licence and Requires-Python from the wheel's METADATA."""
    import zipfile

    for wheel in folder.glob("*.whl"):
        with zipfile.ZipFile(wheel) as z:
            name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            lines = z.read(name).decode("utf-8", "replace").splitlines()
        classifiers = [ln for ln in lines if ln.startswith("Classifier: License")]
        licence = [ln.split("::")[-1].strip() for ln in classifiers]
        licence += [ln[9:].strip()[:40] for ln in lines if ln.startswith("License: ")]
        python = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Requires-Python")]
        return f"licence: {(licence or ['?'])[0]}; Python {(python or ['any'])[0]}"
    return "no wheel"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", choices=list(CANDIDATES), default=list(CANDIDATES))
    parser.add_argument("--wheels", action="store_true", help="also measure the wheel sizes")
    args = parser.parse_args()
    print(f"machine: {platform.machine()} {platform.system()}, Python {platform.python_version()}"
          f", espeak-ng {'found' if shutil.which('espeak-ng') else 'MISSING'}")  # fmt: skip
    versions = []
    for name in ("pedalboard", "python_stretch", "audiotsm", "pytsmod", "librosa"):
        try:
            module = __import__(name)
            versions.append(f"{name} {getattr(module, '__version__', '?')}")
        except ImportError:
            pass
    if shutil.which("rubberband"):
        out = subprocess.run(["rubberband", "--version"], capture_output=True, text=True)
        versions.append(f"rubberband CLI {(out.stdout or out.stderr).strip()}")
    print("versions: " + ", ".join(versions))
    quality_table(args.only)
    if args.wheels:
        wheel_table()


if __name__ == "__main__":
    main()

"""Resemble AI's Perth implicit watermark: mark generated speech, detect the mark.

Chatterbox marks every output by default, as upstream does. The weights are the ones
released in the ``resemble-perth`` package (``pip install resemble-perth``: it declares no
dependencies, so it pulls no torch); they are read from the installed package without
importing it, or from an explicit path.

    from chatterbox_mlx.pipeline.watermark import apply_watermark, get_watermark
    marked = apply_watermark(wav, 24000)
    get_watermark(marked, 24000)  # 1.0: marked, 0.0: not marked

Like the reference, marking resamples to the model's 32 kHz with librosa's default
resampler (soxr HQ) and back; detection resamples with scipy's polyphase filter.
"""

from __future__ import annotations

import importlib.metadata
import math
import sys
from functools import lru_cache
from pathlib import Path

import mlx.core as mx
import numpy as np

from .. import audio
from ..models.perth import PerthConfig, PerthNet, sanitize
from ..models.weights import load_safetensors, load_strict

PACKAGE = "resemble-perth"
PACKAGE_DIR = "perth/perth_net/pretrained/implicit"
CHECKPOINT_SUFFIX = ".pth.tar"
POLYPHASE_CHUNK = 1 << 16  # output samples per vectorized step of the polyphase resampler


class WatermarkWeightsNotFound(FileNotFoundError):
    """The Perth weights are neither installed nor at the given path."""


# ------------------------------------------------------------------- locating weights


def _installed_dir() -> Path | None:
    """``perth/perth_net/pretrained/implicit`` of an installed resemble-perth, not imported."""
    try:
        dist = importlib.metadata.distribution(PACKAGE)
        candidates = [Path(dist.locate_file(PACKAGE_DIR))]
    except importlib.metadata.PackageNotFoundError:
        candidates = []
    candidates += [Path(p) / PACKAGE_DIR for p in sys.path if p]
    for folder in candidates:
        if folder.is_dir() and _checkpoints(folder):
            return folder
    return None


def _checkpoints(folder: Path) -> list[Path]:
    """Weight files in ``folder``, latest training step last (as perth's CheckpointManager)."""
    found = [p for p in folder.iterdir() if p.name.endswith((CHECKPOINT_SUFFIX, ".safetensors"))]

    def step(p: Path) -> int:
        digits = p.name.split(".")[0].split("_")[-1]
        return int(digits) if digits.isdigit() else -1

    return sorted(found, key=step)


def find_weights(path: str | Path | None = None) -> Path:
    """The Perth weight file: ``path`` (a file, or a folder holding one), else the installed
    resemble-perth's ``perth_net_250000.pth.tar``."""
    if path is not None:
        path = Path(path).expanduser()
        if path.is_dir():
            files = _checkpoints(path)
            if not files:
                raise WatermarkWeightsNotFound(
                    f"no Perth weights (*{CHECKPOINT_SUFFIX} or *.safetensors) in {path}; pass "
                    "the folder of perth_net_250000.pth.tar and hparams.yaml"
                )
            return files[-1]
        if not path.is_file():
            raise WatermarkWeightsNotFound(f"Perth weights not found: {path} does not exist")
        return path
    folder = _installed_dir()
    if folder is None:
        raise WatermarkWeightsNotFound(
            "the Perth watermark weights were not found: install them with "
            "`pip install resemble-perth` (no dependencies, no torch), or pass the path of "
            "perth_net_250000.pth.tar; to generate without a watermark use watermark=False"
        )
    return _checkpoints(folder)[-1]


def _parse_value(text: str):
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip("'\"")


def read_hparams(path: Path) -> dict:
    """The flat ``key: value`` ``hparams.yaml`` that perth writes (no YAML library needed)."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"{path}: cannot read line {line!r} (expected `key: value`)")
        values[key.strip()] = _parse_value(value.strip())
    return values


def load_weights(path: Path) -> dict[str, mx.array]:
    """Tensors of a ``.pth.tar`` (the ``model`` entry, read without torch) or safetensors."""
    if path.name.endswith(".safetensors"):
        return load_safetensors(path)
    from ..checkpoints import torch_pickle

    checkpoint = torch_pickle.load(path, extra_globals=())
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise ValueError(f"{path} is not a PerthNet checkpoint (no 'model' entry)")
    return {k: mx.array(v) for k, v in checkpoint["model"].items()}


# --------------------------------------------------------------------------- resampling


def _kaiser_lowpass(num_taps: int, cutoff: float, beta: float) -> np.ndarray:
    """``scipy.signal.firwin(num_taps, cutoff, window=("kaiser", beta))`` (cutoff rel. Nyquist)."""
    m = np.arange(num_taps) - (num_taps - 1) / 2
    h = cutoff * np.sinc(cutoff * m) * np.kaiser(num_taps, beta)
    return h / h.sum()


def resample_polyphase(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """``librosa.resample(res_type="polyphase")``, i.e. ``scipy.signal.resample_poly`` with its
    default Kaiser (beta 5) filter and zero padding; float64 inside, like scipy.

    Output sample n is the filter centred on upsampled position ``half_len + n * down``; only
    the taps that land on real (not inserted zero) samples are computed."""
    g = math.gcd(orig_sr, target_sr)
    up, down = target_sr // g, orig_sr // g
    n_in = wav.shape[-1]
    n_out = -(-n_in * up // down)
    half_len = 10 * max(up, down)
    h = _kaiser_lowpass(2 * half_len + 1, 1.0 / max(up, down), 5.0) * up
    taps = -(-h.shape[0] // up)
    bank = np.zeros(taps * up)
    bank[: h.shape[0]] = h
    bank = bank.reshape(taps, up).T  # bank[phase, j] = h[phase + up * j]
    centre = half_len + down * np.arange(n_out)
    phase, base = centre % up, centre // up  # tap j reads input sample base - j
    right = max(int(base[-1]) - n_in + 1, 0) if n_out else 0
    padded = np.concatenate([np.zeros(taps - 1), wav.astype(np.float64), np.zeros(right)])
    offsets = taps - 1 - np.arange(taps)
    out = np.empty(n_out, dtype=np.float64)
    for start in range(0, n_out, POLYPHASE_CHUNK):
        stop = min(start + POLYPHASE_CHUNK, n_out)
        window = padded[base[start:stop, None] + offsets]
        out[start:stop] = (window * bank[phase[start:stop]]).sum(axis=1)
    return out.astype(wav.dtype)


# ------------------------------------------------------------------------------ the API


def _check_signal(wav, sample_rate) -> np.ndarray:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise TypeError(f"sample_rate must be an int in Hz, got {sample_rate!r}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(
            f"expected a mono waveform of shape [samples], got shape {wav.shape}; "
            "watermark each channel / batch item separately, or mix down to mono"
        )
    if not np.all(np.isfinite(wav)):
        raise ValueError("the waveform contains NaN or inf samples; fix the audio first")
    return wav


class Watermarker:
    """Perth implicit watermarker (``perth.PerthImplicitWatermarker`` in MLX)."""

    def __init__(self, net: PerthNet):
        self.net = net
        self.sample_rate = net.config.sample_rate

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None) -> Watermarker:
        """Load the released weights: ``path`` (``.pth.tar``/``.safetensors`` file or its
        folder), else the installed ``resemble-perth``. ``hparams.yaml`` next to the file sets
        the config (the released values are the defaults)."""
        weights_path = find_weights(path)
        hparams = weights_path.parent / "hparams.yaml"
        config = PerthConfig.from_dict(read_hparams(hparams)) if hparams.is_file() else None
        net = PerthNet(config or PerthConfig())
        load_strict(net, sanitize(load_weights(weights_path)), f"PerthNet ({weights_path})")
        mx.eval(net.parameters())
        return cls(net)

    def _min_samples(self, sample_rate: int) -> int:
        # the STFT reflect-pads n_fft // 2 samples at the model rate
        need = self.net.config.n_fft // 2 + 1
        return math.ceil(need * sample_rate / self.sample_rate) + 1

    def _check(self, wav, sample_rate) -> np.ndarray:
        wav = _check_signal(wav, sample_rate)
        shortest = self._min_samples(sample_rate)
        if wav.shape[0] < shortest:
            raise ValueError(
                f"audio of {wav.shape[0]} samples is too short to watermark; at {sample_rate} Hz "
                f"it needs at least {shortest} samples ({shortest / sample_rate * 1000:.0f} ms)"
            )
        return wav

    def apply(self, wav, sample_rate: int) -> np.ndarray:
        """Marked copy of a mono float waveform. At 32 kHz the length becomes a multiple of
        the hop (320), as in the reference; other rates go through 32 kHz and back."""
        signal = self._check(wav, sample_rate)
        model_sr = self.sample_rate
        if sample_rate != model_sr:
            signal = np.asarray(audio.resample(signal, sample_rate, model_sr), np.float32)
        marked = self.net.embed(mx.array(signal)[None])[0]
        marked = np.array(marked)
        if sample_rate != model_sr:
            marked = np.asarray(audio.resample(marked, model_sr, sample_rate), np.float32)
        return marked

    def detect(self, wav, sample_rate: int, round: bool = True) -> float:
        """Watermark confidence in [0, 1] (rounded to 0 or 1 unless ``round=False``).

        Audio with no frame above the silence threshold carries no mark and scores 0 (the
        reference returns NaN there)."""
        signal = self._check(wav, sample_rate)
        if sample_rate != self.sample_rate:
            signal = resample_polyphase(signal, sample_rate, self.sample_rate)
        score = float(self.net.detect(mx.array(signal)[None])[0])
        if math.isnan(score):
            return 0.0
        score = min(max(score, 0.0), 1.0)
        return float(np.round(score)) if round else score


@lru_cache(maxsize=1)
def default_watermarker() -> Watermarker:
    """The released Perth model, loaded once per process."""
    return Watermarker.from_pretrained()


def apply_watermark(wav, sample_rate: int) -> np.ndarray:
    """Mark ``wav`` (mono, float) with the released Perth model; returns float32 numpy."""
    return default_watermarker().apply(wav, sample_rate)


def get_watermark(wav, sample_rate: int, round: bool = True) -> float:
    """Perth watermark confidence of ``wav``: 1.0 marked, 0.0 not (``round=False``: raw)."""
    return default_watermarker().detect(wav, sample_rate, round=round)

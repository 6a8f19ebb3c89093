"""Speaker VoiceEncoder (256-d): 40-bin mel partials -> 3-layer LSTM -> projection -> ReLU
-> L2 norm; utterance embedding = renormalised mean over partials.

Spec: chatterbox ``models/voice_encoder/voice_encoder.py`` (``VoiceEncoder``,
``get_frame_step``, ``get_num_wins``, ``embeds_from_wavs``).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..constants import S3_SR
from .config_utils import from_dict
from .layers import lstm_recurrence


@dataclass
class VoiceEncoderConfig:
    num_mels: int = 40
    sample_rate: int = S3_SR
    speaker_embed_size: int = 256
    ve_hidden_size: int = 256
    num_layers: int = 3
    ve_partial_frames: int = 160
    ve_final_relu: bool = True

    @classmethod
    def from_dict(cls, params: dict) -> VoiceEncoderConfig:
        return from_dict(cls, params)


def frame_step(config: VoiceEncoderConfig, overlap: float = 0.5, rate: float | None = None):
    """Frames between two partials (``get_frame_step``)."""
    if not 0 <= overlap < 1:
        raise ValueError(f"VoiceEncoder: overlap must be in [0, 1), got {overlap}")
    if rate is None:
        step = round(config.ve_partial_frames * (1 - overlap))  # half to even, as np.round
    else:
        step = round((config.sample_rate / rate) / config.ve_partial_frames)
    if not 0 < step <= config.ve_partial_frames:
        raise ValueError(
            f"VoiceEncoder: rate {rate} / overlap {overlap} give a step of {step} frames; "
            f"it must be in 1..{config.ve_partial_frames}"
        )
    return step


def num_partials(n_frames: int, step: int, min_coverage: float, config: VoiceEncoderConfig):
    """(number of partials, frames they span) for an utterance (``get_num_wins``): the
    last partial is kept when at least ``min_coverage`` of it is real frames."""
    if n_frames <= 0:
        raise ValueError("VoiceEncoder: an utterance has no mel frames")
    win = config.ve_partial_frames
    n_wins, remainder = divmod(max(n_frames - win + step, 0), step)
    if n_wins == 0 or (remainder + (win - step)) / win >= min_coverage:
        n_wins += 1
    return n_wins, win + step * (n_wins - 1)


class LSTM(nn.Module):
    """PyTorch ``nn.LSTM(batch_first=True)`` (gate order i, f, g, o), zero initial state.

    Each layer projects its whole input sequence with one matmul, then runs the
    recurrence, which only multiplies by the hidden-to-hidden weight."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int):
        super().__init__()
        self.layers = []
        for i in range(num_layers):
            size = input_size if i == 0 else hidden_size
            scale = hidden_size**-0.5
            self.layers.append(
                {
                    "weight_ih": mx.random.uniform(-scale, scale, (4 * hidden_size, size)),
                    "weight_hh": mx.random.uniform(-scale, scale, (4 * hidden_size, hidden_size)),
                    "bias_ih": mx.zeros((4 * hidden_size,)),
                    "bias_hh": mx.zeros((4 * hidden_size,)),
                }
            )

    def __call__(self, x: mx.array) -> mx.array:
        """x ``[B, T, input]`` -> the last layer's hidden states ``[B, T, hidden]``."""
        for layer in self.layers:
            x_gates = x @ layer["weight_ih"].T + (layer["bias_ih"] + layer["bias_hh"])
            x = lstm_recurrence(x_gates, layer["weight_hh"])
        return x


class VoiceEncoder(nn.Module):
    def __init__(self, config: VoiceEncoderConfig | None = None):
        super().__init__()
        self.config = config or VoiceEncoderConfig()
        c = self.config
        self.lstm = LSTM(c.num_mels, c.ve_hidden_size, c.num_layers)
        self.proj = nn.Linear(c.ve_hidden_size, c.speaker_embed_size)
        # Only used for training-time cosine similarity scaling; kept so the file loads strictly.
        self.similarity_weight = mx.array([10.0])
        self.similarity_bias = mx.array([-5.0])

    def __call__(self, mels: mx.array) -> mx.array:
        """Partials ``[B, partial_frames, num_mels]`` -> L2-normalised embeddings ``[B, E]``."""
        hidden = self.lstm(mels)[:, -1]
        embeds = self.proj(hidden)
        if self.config.ve_final_relu:
            embeds = nn.relu(embeds)
        return embeds / mx.linalg.norm(embeds, axis=1, keepdims=True)

    def inference(
        self,
        mels: mx.array,
        mel_lens,
        overlap: float = 0.5,
        rate: float | None = None,
        min_coverage: float = 0.8,
        batch_size: int | None = None,
    ) -> mx.array:
        """Utterance embeddings ``[B, E]`` of padded mels ``[B, T, num_mels]``: each is cut
        into partials, embedded, averaged and renormalised."""
        c = self.config
        if not 0 < min_coverage <= 1:
            raise ValueError(f"VoiceEncoder: min_coverage must be in (0, 1], got {min_coverage}")
        step = frame_step(c, overlap, rate)
        wins = [num_partials(int(n), step, min_coverage, c) for n in mel_lens]
        longest = max(target for _, target in wins)
        if longest > mels.shape[1]:
            mels = mx.pad(mels, [(0, 0), (0, longest - mels.shape[1]), (0, 0)])
        partials = [
            mels[b, i * step : i * step + c.ve_partial_frames]
            for b, (n, _) in enumerate(wins)
            for i in range(n)
        ]
        partials = mx.stack(partials)
        size = batch_size or partials.shape[0]
        partial_embeds = mx.concatenate(
            [self(partials[i : i + size]) for i in range(0, partials.shape[0], size)]
        )
        ends = list(accumulate(n for n, _ in wins))
        starts = [0, *ends[:-1]]
        raw = mx.stack(
            [mx.mean(partial_embeds[s:e], axis=0) for s, e in zip(starts, ends, strict=True)]
        )
        return raw / mx.linalg.norm(raw, axis=1, keepdims=True)

    def embeds_from_mels(self, mels: list, as_spk: bool = False, batch_size: int = 32, **kwargs):
        """Utterance embeddings ``[B, E]`` (or one speaker embedding ``[E]`` when ``as_spk``)
        of a list of unpadded mels ``[T_i, num_mels]``."""
        mels = [mx.array(m) for m in mels]
        for m in mels:
            if m.ndim != 2 or m.shape[1] != self.config.num_mels:
                raise ValueError(
                    f"VoiceEncoder: mels must be [frames, {self.config.num_mels}], "
                    f"got {tuple(m.shape)}"
                )
        lens = [m.shape[0] for m in mels]
        width = max(lens)
        packed = mx.stack([mx.pad(m, [(0, width - m.shape[0]), (0, 0)]) for m in mels])
        embeds = self.inference(packed, lens, batch_size=batch_size, **kwargs)
        return utt_to_spk_embed(embeds) if as_spk else embeds

    def embeds_from_wavs(
        self,
        wavs: list,
        sample_rate: int,
        as_spk: bool = False,
        batch_size: int = 32,
        trim_top_db: float | None = 20,
        **kwargs,
    ):
        """Embeddings of 16 kHz waveforms: silence trimmed (``trim_top_db``), 40-bin mel,
        partials at ``rate`` 1.3 per second unless given (Resemble's default)."""
        if sample_rate != self.config.sample_rate:
            raise ValueError(
                f"VoiceEncoder.embeds_from_wavs: audio at {sample_rate} Hz; resample to "
                f"{self.config.sample_rate} Hz first (chatterbox_mlx.audio.resample)"
            )
        from ..audio import trim_silence, voice_encoder_mel

        wavs = [np.asarray(w, dtype=np.float32) for w in wavs]
        if trim_top_db:
            wavs = [trim_silence(w, top_db=trim_top_db) for w in wavs]
        kwargs.setdefault("rate", 1.3)
        mels = [voice_encoder_mel(w) for w in wavs]
        return self.embeds_from_mels(mels, as_spk=as_spk, batch_size=batch_size, **kwargs)


def utt_to_spk_embed(utt_embeds: mx.array) -> mx.array:
    """Mean of L2-normalised utterance embeddings ``[N, E]``, renormalised -> ``[E]``."""
    mean = mx.mean(utt_embeds, axis=0)
    return mean / mx.linalg.norm(mean)


def sanitize(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """``ve.safetensors`` -> MLX names: ``lstm.weight_ih_l0`` -> ``lstm.layers.0.weight_ih``."""
    out = {}
    for key, value in weights.items():
        if key.startswith("lstm."):
            name, layer = key[len("lstm.") :].rsplit("_l", 1)
            key = f"lstm.layers.{layer}.{name}"
        out[key] = value
    return out

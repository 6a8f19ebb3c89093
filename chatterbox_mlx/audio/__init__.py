"""Weight-free audio DSP shared by every network.

Each function reproduces the library call the PyTorch reference makes (torch.stft,
librosa, torchaudio, pyloudnorm), so features and tokens match the reference.
Time-frequency outputs are channels-last: ``[batch, frames, bins]``.

Modules (imports run down this list, never up): ``common`` (``AudioError``),
``spectral`` (STFT/iSTFT, framing), ``features`` (the four feature extractors, mel
filterbanks, silence trimming), ``resampling`` (soxr, torchaudio's sinc), ``loudness``
(BS.1770 loudness, normalization), ``io`` (reading and validating audio files),
``encoder`` and ``formats`` (writing WAV, FLAC, MP3, Opus and PCM, whole or streamed),
``speed`` (time stretch). ``formats`` and ``speed`` are imported by their own names
(``chatterbox_mlx.audio.formats``); everything else is re-exported here:
``from chatterbox_mlx import audio; audio.stft(...)``.
"""

from .common import AudioError
from .features import (
    kaldi_fbank,
    mel_filters,
    s3gen_mel,
    trim_silence,
    voice_encoder_mel,
    whisper_log_mel,
)
from .io import check_audio, load_audio
from .loudness import loudness_lufs, normalize_loudness
from .resampling import resample, resample_sinc
from .spectral import frame_signal, hann_window, istft, stft

__all__ = [
    "AudioError",
    "check_audio",
    "frame_signal",
    "hann_window",
    "istft",
    "kaldi_fbank",
    "load_audio",
    "loudness_lufs",
    "mel_filters",
    "normalize_loudness",
    "resample",
    "resample_sinc",
    "s3gen_mel",
    "stft",
    "trim_silence",
    "voice_encoder_mel",
    "whisper_log_mel",
]

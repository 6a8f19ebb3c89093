"""Voice cloning conditionals: a reference clip -> what T3 and S3Gen are conditioned on.

Spec: ``prepare_conditionals`` of the reference's ``tts.py`` (English), ``mtl_tts.py``
(Multilingual), ``tts_turbo.py`` (Turbo and Nano), ``vc.py:set_target_voice`` (S3Gen only)
and ``S3Token2Mel.embed_ref``. The component networks are passed in; nothing is loaded here.

- T3 gets the VoiceEncoder embedding of the whole clip (16 kHz, soxr), the S3 tokens of its
  first 6 s (Turbo/Nano: 15 s), at most ``speech_cond_prompt_len`` of them (150 / 375),
  and the ``exaggeration`` as ``emotion_adv [1, 1, 1]``.
- S3Gen gets, from the first 10 s at 24 kHz: the 80-bin mel (``prompt_feat``), the S3
  tokens and the CAMPPlus x-vector of the clip resampled to 16 kHz by the torchaudio sinc
  resampler, with the token count cut to half the mel frames.
- Turbo/Nano first require more than 5 s and normalise loudness to -27 LUFS.
"""

from __future__ import annotations

import hashlib
import os
import warnings

import mlx.core as mx
import numpy as np

from .. import audio
from ..constants import S3_SR, S3GEN_SR
from ..files import sha256_file
from ..models.t3 import T3Cond
from ..variants import CFG_PROMPT, PromptSettings, get_variant
from .conditionals import Conditionals, GenCond

DEC_COND_SECONDS = 10
# A clip quieter than this (RMS, dBFS) holds no usable speech; quieter than the second,
# it is probably a mistake (a muted input, the wrong file) and is accepted with a warning.
SILENT_DBFS = -70.0
QUIET_DBFS = -50.0


def _mono(wav, what: str) -> np.ndarray:
    """``[T]``, ``[C, T]`` or ``[T, C]`` (C <= 8 channels) -> the channel mean ``[T]``."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 2:
        channels_first = wav.shape[0] <= 8 and wav.shape[0] < wav.shape[1]
        if not channels_first and wav.shape[1] > 8:
            raise audio.AudioError(
                f"{what}: cannot tell channels from samples in shape {wav.shape}; "
                "pass [samples] or [channels, samples]"
            )
        wav = wav.mean(axis=0 if channels_first else 1, dtype=np.float32)
    return wav


def load_reference(source, sr: int | None = None, what: str = "reference audio") -> np.ndarray:
    """A path (any format/rate/channels) or an array with its ``sr`` -> mono float32 at
    24 kHz, as ``librosa.load(path, sr=24000)``. Raises ``AudioError`` for unreadable,
    empty, silent or non-finite audio."""
    if isinstance(source, (str, os.PathLike)):
        wav, _ = audio.load_audio(source, sr=S3GEN_SR)
        return wav
    if sr is None:
        raise ValueError(f"{what}: an array was given without its sample rate; pass sr=")
    wav = np.asarray(source, dtype=np.float32)
    if wav.ndim not in (1, 2):
        raise audio.AudioError(
            f"{what}: expected [samples] or [channels, samples], got {wav.shape}"
        )
    if wav.size == 0:
        raise audio.AudioError(f"{what}: the audio is empty (0 samples); pass a recording")
    wav = audio.check_audio(_mono(wav, what), sr, what)
    return audio.resample(wav, sr, S3GEN_SR)


def _check_level(wav_24k: np.ndarray, what: str) -> None:
    rms = float(np.sqrt(np.mean(np.square(wav_24k, dtype=np.float64))))
    dbfs = 20 * np.log10(max(rms, 1e-12))
    if dbfs < SILENT_DBFS:
        raise audio.AudioError(
            f"{what} is near-silent ({dbfs:.0f} dBFS RMS, below {SILENT_DBFS:.0f}): it holds "
            "no speech to clone; record or pick a clip of someone speaking"
        )
    if dbfs < QUIET_DBFS:
        warnings.warn(
            f"{what} is very quiet ({dbfs:.0f} dBFS RMS); if the cloned voice sounds wrong, "
            "use a louder recording",
            stacklevel=3,
        )


def _check_length(wav_24k: np.ndarray, settings: PromptSettings, campplus, what: str) -> None:
    _check_level(wav_24k, what)
    seconds = len(wav_24k) / S3GEN_SR
    if settings.min_seconds is not None and not seconds > settings.min_seconds:
        raise audio.AudioError(
            f"{what} is {seconds:.2f} s long; this variant needs more than "
            f"{settings.min_seconds:g} s of reference speech. Record a longer clip"
        )
    need = campplus.min_samples / S3_SR if campplus is not None else 0.0
    if seconds < max(need, 1 / 25):
        raise audio.AudioError(
            f"{what} is {seconds * 1000:.0f} ms long; at least {max(need, 0.04) * 1000:.0f} ms "
            "are needed (several seconds of speech give a usable voice)"
        )


# ---------------------------------------------------------------------------- S3Gen


def embed_ref(wav, sr: int, s3tokenizer, campplus) -> GenCond:
    """``S3Token2Mel.embed_ref``: mel at 24 kHz, and tokens / x-vector at 16 kHz (both
    resampled with the torchaudio sinc resampler from ``sr``)."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 2 and wav.shape[0] == 1:
        wav = wav[0]
    wav_24 = wav if sr == S3GEN_SR else audio.resample_sinc(wav, sr, S3GEN_SR)
    mels = audio.s3gen_mel(mx.array(np.asarray(wav_24, np.float32))[None])
    wav_16 = wav if sr == S3_SR else audio.resample_sinc(wav, sr, S3_SR)
    wav_16 = np.asarray(wav_16, dtype=np.float32)
    embedding = campplus.inference(wav_16)
    tokens, token_lens = s3tokenizer.tokenize([wav_16])
    if mels.shape[1] != 2 * tokens.shape[1]:
        # The reference's fix when the clip is not a whole number of 40 ms tokens.
        tokens = tokens[:, : mels.shape[1] // 2]
        token_lens = mx.array([tokens.shape[1]], dtype=mx.int32)
    return GenCond(
        prompt_token=tokens.astype(mx.int32),
        prompt_token_len=token_lens.astype(mx.int32),
        prompt_feat=mels,
        prompt_feat_len=None,
        embedding=embedding,
    )


def prepare_gen_conditionals(source, s3tokenizer, campplus, sr: int | None = None) -> GenCond:
    """``ChatterboxVC.set_target_voice``: S3Gen conditioning from the first 10 s."""
    wav = load_reference(source, sr, "target voice")
    _check_length(wav, CFG_PROMPT, campplus, "target voice")
    return embed_ref(wav[: DEC_COND_SECONDS * S3GEN_SR], S3GEN_SR, s3tokenizer, campplus)


# ---------------------------------------------------------------------------- T3 + S3Gen


def prepare_conditionals(
    source,
    *,
    s3tokenizer,
    campplus,
    voice_encoder,
    variant: str = "english",
    exaggeration: float = 0.5,
    norm_loudness: bool = True,
    sr: int | None = None,
) -> Conditionals:
    """``prepare_conditionals`` of the given variant's pipeline.

    ``source``: an audio file path, or an array (``[T]`` or ``[channels, T]``) with ``sr``.
    ``norm_loudness`` only applies to Turbo/Nano (their pipeline's argument)."""
    settings = get_variant(variant).prompt
    wav = load_reference(source, sr)
    sha256, seconds = _fingerprint(source, wav)
    _check_length(wav, settings, campplus, "reference audio")
    if settings.normalize_loudness and norm_loudness:
        wav = audio.normalize_loudness(wav, S3GEN_SR)
    wav_16 = audio.resample(wav, S3GEN_SR, S3_SR)

    gen = embed_ref(wav[: DEC_COND_SECONDS * S3GEN_SR], S3GEN_SR, s3tokenizer, campplus)
    prompt = wav_16[: settings.t3_prompt_seconds * S3_SR]
    tokens, _ = s3tokenizer.tokenize([prompt], max_len=settings.t3_prompt_tokens)
    speaker = voice_encoder.embeds_from_wavs([wav_16], sample_rate=S3_SR)
    speaker = mx.mean(speaker, axis=0, keepdims=True)
    t3 = T3Cond(
        speaker_emb=speaker,
        cond_prompt_speech_tokens=tokens.astype(mx.int32),
        emotion_adv=exaggeration * mx.ones((1, 1, 1)),
    )
    return Conditionals(t3, gen, source_sha256=sha256, source_seconds=seconds)


def _fingerprint(source, wav_24k: np.ndarray) -> tuple[str, float]:
    """sha256 of the clip's file (or of its float32 samples) and its duration."""
    if isinstance(source, (str, os.PathLike)):
        digest = sha256_file(source)
    else:
        digest = hashlib.sha256(np.ascontiguousarray(source, dtype=np.float32)).hexdigest()
    return digest, len(wav_24k) / S3GEN_SR

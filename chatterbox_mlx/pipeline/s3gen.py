"""S3Gen: speech tokens -> 24 kHz waveform (upstream ``S3Token2Wav``).

Joins the networks that live in their own modules: the S3 tokenizer and CAMPPlus
(reference conditioning), the flow (tokens -> mel) and HiFT (mel -> waveform).
Entry points keep upstream's names; each random draw can be passed in explicitly.
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np

from ..constants import S3GEN_SILENCE_TOKEN, S3GEN_SR, SPEECH_VOCAB_SIZE
from ..models.hift import fade_in
from ..models.layers import random_normal
from ..voice.conditionals import Conditionals, GenCond
from ..voice.prepare import embed_ref
from .checks import check_finite

S3GEN_SIL = S3GEN_SILENCE_TOKEN  # upstream's name


def drop_invalid_tokens(tokens) -> mx.array:
    """Keep speech ids only (< 6561), as upstream does before S3Gen."""
    tokens = np.asarray(tokens).reshape(-1)
    return mx.array(tokens[tokens < SPEECH_VOCAB_SIZE].astype(np.int32))


class S3Gen:
    def __init__(self, flow, mel2wav, tokenizer=None, speaker_encoder=None, meanflow=False):
        self.flow = flow
        self.mel2wav = mel2wav
        self.tokenizer = tokenizer
        self.speaker_encoder = speaker_encoder
        self.meanflow = meanflow

    def embed_ref(self, ref_wav, ref_sr: int) -> GenCond:
        """Reference clip -> S3Gen conditioning (prompt tokens, prompt mel, x-vector)."""
        if self.tokenizer is None or self.speaker_encoder is None:
            raise RuntimeError("this S3Gen was loaded without its S3 tokenizer / CAMPPlus")
        return embed_ref(ref_wav, ref_sr, self.tokenizer, self.speaker_encoder)

    def flow_inference(
        self,
        speech_tokens,
        ref_dict: GenCond | dict,
        n_cfm_timesteps: int | None = None,
        noise: mx.array | None = None,
        finalize: bool = True,
        key: mx.array | None = None,
    ) -> mx.array:
        """Tokens ``[T]`` -> mel ``[1, 2T, 80]`` (channels-last) after the prompt.

        ``ref_dict``: a ``GenCond`` or upstream's plain dict. ``noise``: the CFM's initial
        state over prompt + generated frames (``[1, 2 (T_prompt + T), 80]``); drawn from
        ``key`` (else ``mx.random``) when absent. Default steps: the flow's own (10, or 2
        for meanflow).
        """
        ref_dict = as_gen_cond(ref_dict)
        steps = n_cfm_timesteps or self.flow.config.n_timesteps
        prompt_tokens = ref_dict.prompt_token
        prompt_feat = ref_dict.prompt_feat
        return self.flow(
            speech_tokens,
            prompt_tokens=None if prompt_tokens is None else prompt_tokens.reshape(-1),
            prompt_feat=None if prompt_feat is None else prompt_feat.reshape(-1, 80),
            embedding=ref_dict.embedding.reshape(-1),
            noise=noise,
            n_timesteps=steps,
            finalize=finalize,
            key=key,
        )

    def hift_inference(
        self,
        speech_feat: mx.array,
        cache_source: mx.array | None = None,
        phase: mx.array | None = None,
        noise: mx.array | None = None,
        key: mx.array | None = None,
    ) -> tuple[mx.array, mx.array]:
        """Mel ``[1, T, 80]`` -> (waveform ``[1, 480 T]``, excitation source).

        ``phase`` / ``noise``: the neural source filter's draws (see ``models.hift``),
        drawn from ``key`` (else ``mx.random``) when absent."""
        if key is not None:
            phase_key, noise_key = mx.random.split(key, 2)
            draws = self.hift_draws(speech_feat.shape[1], phase_key, noise_key)
            phase = draws[0] if phase is None else phase
            noise = draws[1] if noise is None else noise
        return self.mel2wav(speech_feat, cache_source=cache_source, phase=phase, noise=noise)

    def hift_draws(self, frames: int, phase_key: mx.array, noise_key: mx.array):
        """HiFT's source draws for ``frames`` mel frames: the initial phase of each
        harmonic (uniform in [-pi, pi)) and the standard normal noise per sample."""
        harmonics = self.mel2wav.m_source.harmonics
        samples = frames * self.mel2wav.config.upsample_factor
        phase = mx.random.uniform(-math.pi, math.pi, (1, harmonics), key=phase_key)
        return phase, random_normal((1, samples, harmonics), key=noise_key)

    def inference(
        self,
        speech_tokens,
        ref_dict: GenCond,
        n_cfm_timesteps: int | None = None,
        noise: mx.array | None = None,
        phase: mx.array | None = None,
        source_noise: mx.array | None = None,
        key: mx.array | None = None,
        hift_key: mx.array | None = None,
    ) -> tuple[mx.array, mx.array]:
        """Tokens -> (waveform ``[1, 960 T]``, source), with upstream's 40 ms trim/fade-in.

        Tokens >= 6561 are dropped first (upstream does it in the pipelines). Draws not
        given (``noise`` for the flow, ``phase``/``source_noise`` for HiFT) come from
        ``key`` / ``hift_key``, else from ``mx.random``. A stage whose output is not
        finite raises ``NonFiniteError`` naming it."""
        tokens = drop_invalid_tokens(speech_tokens)
        if tokens.size == 0:
            raise ValueError("no speech tokens to synthesize (all ids were >= 6561 or empty)")
        mel = self.flow_inference(tokens, ref_dict, n_cfm_timesteps, noise=noise, key=key)
        check_finite(mel, "the S3Gen flow's mel", FIX_WEIGHTS)
        wav, source = self.hift_inference(mel, phase=phase, noise=source_noise, key=hift_key)
        check_finite(wav, "HiFT's waveform", FIX_WEIGHTS)
        return fade_in(wav, S3GEN_SR), source


FIX_WEIGHTS = "the checkpoint holds non-finite or broken weights; re-convert or re-download it"


def as_gen_cond(ref_dict) -> GenCond:
    """A ``GenCond``, or upstream's plain ``ref_dict`` (a dict of arrays) as one."""
    if isinstance(ref_dict, GenCond):
        return ref_dict
    if isinstance(ref_dict, dict):
        return Conditionals.from_flat(
            {f"gen.{k}": v for k, v in ref_dict.items() if v is not None}
        ).gen
    raise TypeError(f"ref_dict must be a GenCond or upstream's dict, got {type(ref_dict).__name__}")

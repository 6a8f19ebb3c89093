"""S3Gen: speech tokens -> 24 kHz waveform (upstream ``S3Token2Wav``).

Joins the networks that live in their own modules: the S3 tokenizer and CAMPPlus
(reference conditioning), the flow (tokens -> mel) and HiFT (mel -> waveform).
Entry points keep upstream's names; each random draw can be passed in explicitly.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from .conditionals import GenCond, embed_ref
from .models.hift import fade_in

S3GEN_SR = 24000
S3_SR = 16000
SPEECH_VOCAB_SIZE = 6561  # ids >= this (start/stop/padding) are not speech
S3GEN_SIL = 4299  # the silence token Turbo appends
SAMPLES_PER_TOKEN = S3GEN_SR // 25  # 960: tokens are 25 Hz, mel frames 50 Hz


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
        ref_dict: GenCond,
        n_cfm_timesteps: int | None = None,
        noise: mx.array | None = None,
        finalize: bool = True,
    ) -> mx.array:
        """Tokens ``[T]`` -> mel ``[1, 2T, 80]`` (channels-last) after the prompt.

        ``noise``: the CFM's initial state over prompt + generated frames
        (``[1, 2 (T_prompt + T), 80]``); drawn from ``mx.random`` when absent.
        """
        steps = n_cfm_timesteps or (2 if self.meanflow else 10)
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
        )

    def hift_inference(
        self,
        speech_feat: mx.array,
        cache_source: mx.array | None = None,
        phase: mx.array | None = None,
        noise: mx.array | None = None,
    ) -> tuple[mx.array, mx.array]:
        """Mel ``[1, T, 80]`` -> (waveform ``[1, 480 T]``, excitation source).

        ``phase`` / ``noise``: the neural source filter's draws (see ``models.hift``)."""
        return self.mel2wav(speech_feat, cache_source=cache_source, phase=phase, noise=noise)

    def inference(
        self,
        speech_tokens,
        ref_dict: GenCond,
        n_cfm_timesteps: int | None = None,
        noise: mx.array | None = None,
        phase: mx.array | None = None,
        source_noise: mx.array | None = None,
    ) -> tuple[mx.array, mx.array]:
        """Tokens -> (waveform ``[1, 960 T]``, source), with upstream's 40 ms trim/fade-in.

        Tokens >= 6561 are dropped first (upstream does it in the pipelines). Draws not
        given (``noise`` for the flow, ``phase``/``source_noise`` for HiFT) come from
        ``mx.random`` (seed it with ``mx.random.seed`` for reproducible output)."""
        tokens = drop_invalid_tokens(speech_tokens)
        if tokens.size == 0:
            raise ValueError("no speech tokens to synthesize (all ids were >= 6561 or empty)")
        mel = self.flow_inference(tokens, ref_dict, n_cfm_timesteps, noise=noise)
        wav, source = self.hift_inference(mel, phase=phase, noise=source_noise)
        return fade_in(wav, S3GEN_SR), source

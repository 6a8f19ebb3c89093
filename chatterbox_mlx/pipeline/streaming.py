"""Incremental S3Gen for streaming: speech tokens in, audio out, linear total cost.

Flow: each call renders only the tokens that arrived since the last one. The previous
``context_tokens`` tokens and their (already rendered) mel are appended to the reference
prompt, so every chunk costs the same whatever the utterance length, and the new mel
continues the old one. The flow encoder looks 3 tokens ahead, so the newest 3 tokens are
held back until more arrive (or the stream ends).

HiFT: each chunk's mel is vocoded with ``overlap_frames`` of the previous mel in front
and the previous excitation for them as ``cache_source`` (the sine phase carries on).
Both renderings of the overlap are unreliable only near their own edge, so the audio
switches from the old to the new rendering with a short raised-cosine cross-fade in the
middle of the overlap.

Cost: every flow call runs over the reference prompt as well as the chunk, so the prompt
is paid once per chunk. ``prompt_tokens`` keeps only the reference prompt's last tokens
for the stream, and a ``chunk schedule`` (a small first chunk for early audio, then
larger ones: fewer calls) bounds the number of chunks. ``benchmarks/streaming.py``
measures both against the mel departure from one-shot rendering.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import mlx.core as mx
import numpy as np

from ..constants import MEL_FRAMES_PER_TOKEN as FRAMES_PER_TOKEN
from ..constants import SAMPLES_PER_FRAME
from ..models.hift import fade_in
from ..voice.conditionals import GenCond
from .checks import check_finite
from .s3gen import FIX_WEIGHTS


def chunk_sizes(schedule: int | Sequence[int]) -> Iterator[int]:
    """The chunk sizes of a schedule, in order, the last repeating forever."""
    sizes = (schedule,) if isinstance(schedule, int) else tuple(schedule)
    yield from sizes
    while True:
        yield sizes[-1]


def _crossfade(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Old audio in the first half, new in the second, a cosine fade over the middle."""
    n = len(old)
    fade_len = max(n // 4, 1)
    start = (n - fade_len) // 2
    weight = np.zeros(n, np.float32)
    weight[start : start + fade_len] = (1 - np.cos(np.linspace(0, np.pi, fade_len))) / 2
    weight[start + fade_len :] = 1.0
    return old * (1 - weight) + new * weight


def _check_covers(name: str, bank: mx.array, needed: int, unit: str) -> None:
    if bank.ndim != 3 or bank.shape[0] != 1 or bank.shape[1] < needed:
        raise ValueError(
            f"{name} has shape {tuple(bank.shape)} but this chunk needs [1, >= {needed}, ...] "
            f"({unit}); draw it for the longest stream you will push"
        )


class StreamingVocoder:
    def __init__(
        self,
        s3gen,
        gen: GenCond,
        n_timesteps: int,
        context_tokens: int = 50,
        lookahead_tokens: int = 3,
        overlap_frames: int = 8,
        cfm_noise: mx.array | None = None,
        phase: mx.array | None = None,
        source_noise: mx.array | None = None,
        key: mx.array | None = None,
        hift_key: mx.array | None = None,
        prompt_tokens: int | None = None,
    ):
        """``prompt_tokens``: how many of the reference prompt's tokens (its last ones,
        with their mel) condition each chunk's flow; all of them when None.
        ``cfm_noise`` ``[1, P + F, 80]`` (P prompt frames, then the generated frames in
        order), ``phase`` ``[1, harmonics]`` and ``source_noise`` ``[1, 480 F, harmonics]``
        fix the random draws by absolute position, so that a stream can be compared with
        a one-shot rendering given the same draws; each is drawn per chunk when absent,
        from ``key`` (flow) and ``hift_key`` (HiFT) when given, else from ``mx.random``."""
        if prompt_tokens is not None and (isinstance(prompt_tokens, bool) or prompt_tokens < 0):
            raise ValueError(
                f"prompt_tokens must be None (the whole prompt) or an integer >= 0, "
                f"got {prompt_tokens!r}"
            )
        self.s3gen = s3gen
        self.key, self.hift_key = key, hift_key
        self.cfm_noise, self.phase, self.source_noise = cfm_noise, phase, source_noise
        self.n_timesteps = n_timesteps
        self.context_tokens = context_tokens
        self.lookahead = lookahead_tokens
        self.overlap = overlap_frames
        tokens = np.asarray(gen.prompt_token).reshape(-1).astype(np.int32)
        feat = np.asarray(gen.prompt_feat, np.float32).reshape(-1, 80)
        # Keep the prompt mel at exactly 2 frames per token so chunk lengths stay exact.
        feat = feat[: FRAMES_PER_TOKEN * len(tokens)]
        tokens = tokens[: len(feat) // FRAMES_PER_TOKEN]
        # Draws are indexed as if the whole prompt were there (as in one-shot rendering).
        self.noise_offset = len(feat)
        kept = len(tokens) if prompt_tokens is None else min(int(prompt_tokens), len(tokens))
        self.prompt_tokens = tokens[len(tokens) - kept :]
        self.prompt_feat = feat[len(feat) - FRAMES_PER_TOKEN * kept :]
        self.embedding = gen.embedding
        self.tokens: list[int] = []
        self.rendered = 0  # tokens whose mel is final
        self.mel = np.zeros((0, 80), np.float32)  # mel of the rendered tokens
        self.source = None  # excitation of the last vocoded chunk
        self.held_back = np.zeros(0, np.float32)  # audio of the last overlap, not yet sent
        self.emitted = 0

    def push(self, tokens: list[int]) -> np.ndarray:
        """Add tokens; return the audio that is now final (possibly empty)."""
        self.tokens.extend(int(t) for t in tokens)
        if len(self.tokens) - self.lookahead <= self.rendered:
            return np.zeros(0, np.float32)
        return self._render(finalize=False)

    def finish(self, tail_tokens: list[int] = ()) -> np.ndarray:
        """Add the last tokens and return everything not yet sent."""
        self.tokens.extend(int(t) for t in tail_tokens)
        audio = self._render(finalize=True) if len(self.tokens) > self.rendered else None
        out = [audio] if audio is not None else []
        out.append(self.held_back)
        self.held_back = np.zeros(0, np.float32)
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def _flow(self, finalize: bool) -> np.ndarray:
        start = max(0, self.rendered - self.context_tokens)
        context = self.tokens[start : self.rendered]
        prompt_tokens = np.concatenate([self.prompt_tokens, np.array(context, np.int32)])
        prompt_feat = np.concatenate(
            [
                self.prompt_feat,
                self.mel[FRAMES_PER_TOKEN * start : FRAMES_PER_TOKEN * self.rendered],
            ]
        )
        noise = None
        if self.cfm_noise is not None:
            offset, n_prompt = self.noise_offset, len(self.prompt_feat)
            end = offset + FRAMES_PER_TOKEN * (
                len(self.tokens) - (0 if finalize else self.lookahead)
            )
            _check_covers("cfm_noise", self.cfm_noise, end, "prompt + 2 per speech token")
            noise = mx.concatenate(
                [
                    self.cfm_noise[:, offset - n_prompt : offset],
                    self.cfm_noise[:, offset + FRAMES_PER_TOKEN * start : end],
                ],
                axis=1,
            )
        key = None
        if self.key is not None:
            self.key, key = mx.random.split(self.key)
        mel = self.s3gen.flow(
            mx.array(self.tokens[self.rendered :], dtype=mx.int32),
            prompt_tokens=mx.array(prompt_tokens),
            prompt_feat=mx.array(prompt_feat),
            embedding=self.embedding.reshape(-1),
            noise=noise,
            n_timesteps=self.n_timesteps,
            finalize=finalize,
            key=key,
        )
        check_finite(mel, "the S3Gen flow's mel", FIX_WEIGHTS)
        return np.asarray(mel[0], np.float32)

    def _render(self, finalize: bool) -> np.ndarray:
        new_mel = self._flow(finalize)
        first = self.rendered == 0
        overlap = len(self.held_back) // SAMPLES_PER_FRAME  # frames rendered twice
        mel_in = np.concatenate([self.mel[len(self.mel) - overlap :], new_mel])
        cache = None
        if overlap and self.source is not None:
            cache = self.source[:, self.source.shape[1] - overlap * SAMPLES_PER_FRAME :]
        noise = None
        if self.source_noise is not None:
            first_sample = SAMPLES_PER_FRAME * (len(self.mel) - overlap)
            end = first_sample + SAMPLES_PER_FRAME * len(mel_in)
            _check_covers("source_noise", self.source_noise, end, "960 per speech token")
            noise = self.source_noise[:, first_sample:end]
        key = None
        if self.hift_key is not None:
            self.hift_key, key = mx.random.split(self.hift_key)
            if self.phase is None:  # one initial phase for the whole stream
                self.phase = self.s3gen.hift_draws(1, *mx.random.split(key, 2))[0]
        wav, source = self.s3gen.hift_inference(
            mx.array(mel_in[None]), cache_source=cache, phase=self.phase, noise=noise, key=key
        )
        check_finite(wav, "HiFT's waveform", FIX_WEIGHTS)
        if first:
            wav = fade_in(wav)
        wav = np.asarray(wav[0], np.float32)
        self.source = source

        self.mel = np.concatenate([self.mel, new_mel])
        self.rendered += len(new_mel) // FRAMES_PER_TOKEN
        split = overlap * SAMPLES_PER_FRAME
        joined = _crossfade(self.held_back, wav[:split]) if split else np.zeros(0, np.float32)
        body = wav[split:]
        if finalize:
            self.held_back = np.zeros(0, np.float32)
            return np.concatenate([joined, body])
        keep = min(self.overlap * SAMPLES_PER_FRAME, len(body))
        self.held_back = body[len(body) - keep :]
        return np.concatenate([joined, body[: len(body) - keep]])

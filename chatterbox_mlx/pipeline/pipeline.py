"""``TTSPipeline``: text -> speech for every variant.

What differs between variants is data in ``variants.Variant`` (text front end, voice
prompt, defaults, sampler, tail tokens, flow steps). A call is checked whole and resolved
into a ``Request`` first; then each chunk goes T3 -> S3Gen (flow, HiFT), or through the
streaming vocoder chunk by chunk. See ``chatterbox_mlx.tts`` for the public classes."""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import mlx.core as mx
import numpy as np

from .. import params as params_mod
from .. import text as text_mod
from ..audio.speed import check_speed, time_stretch
from ..checkpoints import hub
from ..constants import (
    S3GEN_SR,
    SAMPLES_PER_TOKEN,
    SPEECH_VOCAB_SIZE,
    STREAM_CHUNK_SCHEDULE,
    STREAM_PROMPT_TOKENS,
)
from ..devices import use_device
from ..variants import Variant, get_variant
from ..voice import voice_file as voices
from ..voice.conditionals import Conditionals, GenCond
from ..voice.prepare import prepare_conditionals
from .batch import batch_requests, resolve_batch_size, solo_speech
from .checks import check_finite
from .progress import NULL_PROGRESS, Progress
from .requests import Chunk, Request, call_key, evaluated
from .s3gen import S3Gen
from .stream_rows import StreamRows
from .threads import COMPUTE_LOCK, on_own_thread
from .watermark import apply_watermark

MAX_CHUNK_CHARS = 300  # long text is split at sentence ends into chunks of at most this
JOIN_PAUSE_S = 0.1  # silence between long-text chunks (each already fades in and out)


def _fade_out(wav: np.ndarray, sr: int = S3GEN_SR, seconds: float = 0.01) -> np.ndarray:
    n = min(len(wav), int(sr * seconds))
    if n:
        wav = wav.copy()
        wav[-n:] *= (np.cos(np.linspace(0, np.pi, n)) + 1) / 2
    return wav


def watermark_output(wav: np.ndarray, enabled: bool) -> np.ndarray:
    return apply_watermark(wav, S3GEN_SR) if enabled else wav


def as_output(wav: np.ndarray) -> mx.array:
    return mx.array(np.asarray(wav, dtype=np.float32)[None, :])


class TTSPipeline:
    """Text -> speech for any variant; see the module docstring."""

    VARIANT = "english"
    sr = S3GEN_SR

    def __init__(self, t3, s3gen: S3Gen, ve, tokenizer, device=None,
                 conds: Conditionals | None = None, *,
                 variant: str | Variant | None = None):  # fmt: skip
        self.t3 = t3
        self.s3gen = s3gen
        self.ve = ve
        self.tokenizer = tokenizer
        self.device = use_device(device)
        for module in (t3, s3gen.flow, s3gen.mel2wav, s3gen.tokenizer, s3gen.speaker_encoder, ve):
            if module is not None:
                mx.eval(module.parameters())  # served from other threads (see _evaluated)
        self.conds = evaluated(conds)
        self.variant = (
            variant if isinstance(variant, Variant) else get_variant(variant or self.VARIANT)
        )
        self.last_stats: dict = {}  # of the last finished call (informational)

    # ---- loading ------------------------------------------------------------------------

    @classmethod
    def _load(cls, name, variant: str, device=None, quantize: int | None = None,
              revision: str | None = None):  # fmt: skip
        use_device(device)
        components = hub.load_components(name or get_variant(variant).repo_id, variant,
                                     revision=revision)  # fmt: skip
        return cls._from_components(components, quantize, device)

    @classmethod
    def from_pretrained(cls, device=None, *, name: str | Path | None = None,
                        quantize: int | None = None, revision: str | None = None):  # fmt: skip
        """Upstream's ``from_pretrained(device)``. ``name``: a converted MLX directory, a
        hub repo with converted weights, or an original Resemble AI repo / directory
        (converted on first use and cached); default: the variant's Resemble AI repo."""
        return cls._load(name, cls.VARIANT, device, quantize, revision)

    @classmethod
    def from_local(cls, ckpt_dir: str | Path, device=None, *, quantize: int | None = None):
        """Upstream's ``from_local(ckpt_dir, device)``: an original or converted directory."""
        return cls._load(Path(ckpt_dir), cls.VARIANT, device, quantize)

    @classmethod
    def _from_components(cls, c, quantize: int | None = None, device=None):
        if quantize:
            from ..models.t3 import quantize_t3

            quantize_t3(c.t3, bits=quantize, group_size=64)
        s3gen = S3Gen(c.flow, c.hift, c.s3tokenizer, c.campplus, meanflow=c.variant.meanflow)
        tokenizer = text_mod.load_front_end(c.variant.text_frontend, c.path)
        return cls(c.t3, s3gen, c.voice_encoder, tokenizer, device, c.conds, variant=c.variant)

    # ---- voice --------------------------------------------------------------------------

    def prepare_conditionals(self, wav_fpath, exaggeration: float = 0.5, **kwargs) -> None:
        """Clone a voice from a clip (path, or array with ``sr=``); sets ``self.conds``."""
        self.conds = self.prepare_voice(wav_fpath, exaggeration=exaggeration, **kwargs)

    def prepare_voice(self, wav_fpath, exaggeration: float = 0.5, norm_loudness: bool = True,
                      sr: int | None = None) -> Conditionals:  # fmt: skip
        """Like ``prepare_conditionals`` but returns the voice instead of keeping it, for
        passing as ``voice=`` to one call (a server serving several voices)."""
        with COMPUTE_LOCK:
            return evaluated(
                prepare_conditionals(
                    wav_fpath,
                    s3tokenizer=self.s3gen.tokenizer,
                    campplus=self.s3gen.speaker_encoder,
                    voice_encoder=self.ve,
                    variant=self.variant.name,
                    exaggeration=exaggeration,
                    norm_loudness=norm_loudness,
                    sr=sr,
                )
            )

    def save_voice(self, path, voice: Conditionals | None = None) -> voices.VoiceMeta:
        """Save ``voice`` (default: the model's voice, e.g. after ``prepare_conditionals``,
        or the built-in one) as a voice file that ``load_voice`` and
        ``generate(audio_prompt_path="me.voice")`` read without re-analysing the clip."""
        conds = voice if voice is not None else self.conds
        if conds is None:
            raise ValueError("no voice to save: call prepare_conditionals() first")
        return voices.save_voice(path, conds, family=self.variant.family,
                                 source_sha256=conds.source_sha256,
                                 source_seconds=conds.source_seconds)  # fmt: skip

    def load_voice(self, path) -> Conditionals:
        """Read a voice file (no S3Tokenizer, CAMPPlus or VoiceEncoder work); it becomes the
        model's voice, and is returned for ``voice=``."""
        voice = voices.load_voice(path, family=self.variant.family, require_t3=True)
        self.conds = evaluated(replace(voice.conds, source_sha256=voice.meta.source_sha256,
                                        source_seconds=voice.meta.source_seconds))  # fmt: skip
        return self.conds

    def _resolve_voice(self, audio_prompt_path, voice, params: dict) -> Conditionals:
        """The voice of one call: ``voice`` (this call only), else a clip (which becomes
        the model's voice, as upstream), else the model's voice; with its exaggeration."""
        exaggeration = params.get("exaggeration", 0.5)
        if voice is not None:
            conds = voice
        elif audio_prompt_path and voices.is_voice_file(audio_prompt_path):
            conds = self.load_voice(audio_prompt_path)
        elif audio_prompt_path:
            kwargs = {"norm_loudness": params["norm_loudness"]} if "norm_loudness" in params else {}
            conds = self.prepare_voice(audio_prompt_path, exaggeration=exaggeration, **kwargs)
            self.conds = conds
        else:
            conds = self.conds
        if conds is None:
            raise ValueError(
                "no voice: this model has no built-in voice; pass audio_prompt_path= or call "
                "prepare_conditionals() first"
            )
        if not isinstance(conds, Conditionals) or conds.t3 is None:
            raise TypeError("voice= takes a Conditionals with a T3 part (see prepare_voice)")
        if "exaggeration" in self.variant.generation:
            conds = self._with_exaggeration(conds, float(exaggeration), keep=voice is None)
        return conds

    def _with_exaggeration(self, conds: Conditionals, exaggeration: float, keep: bool):
        current = conds.t3.emotion_adv
        current = float(np.asarray(current).reshape(-1)[0]) if current is not None else None
        if current == exaggeration:
            return conds
        conds = replace(conds, t3=replace(conds.t3, emotion_adv=exaggeration * mx.ones((1, 1, 1))))
        evaluated(conds)
        if keep:  # upstream updates the model's voice
            self.conds = conds
        return conds

    # ---- text ---------------------------------------------------------------------------

    def _encode(self, text: str, language_id: str | None) -> mx.array:
        ids = self.tokenizer.t3_ids(text, language_id)
        if self.tokenizer.framed:
            ids = [self.t3.config.start_text_token, *ids, self.t3.config.stop_text_token]
        return mx.array([ids], dtype=mx.int32)

    def _check_language(self, language_id: str | None) -> str | None:
        if self.variant.needs_language:
            return text_mod.check_language(language_id)
        if language_id is not None:
            import warnings

            warnings.warn(
                f"language_id={language_id!r} is not used by {self.variant.name}: only the "
                "multilingual model takes a language",
                stacklevel=4,
            )
        return None

    # ---- one call -----------------------------------------------------------------------

    def _request(self, text, audio_prompt_path, voice, seed, given: dict, language_id,
                 watermark: bool, progress, speed: float = 1.0) -> Request:  # fmt: skip
        """Checks everything (parameters, language, every chunk's text) before any work."""
        text_mod.check_text(text, "text")
        params = params_mod.resolve(self.variant, given)
        speed = check_speed(speed)
        language_id = self._check_language(language_id)
        key = call_key(seed)
        chunks, lead_in = self._plan(text, language_id, key)
        # computed here: a stream runs on a thread of its own, and the caller may have left
        # the model's voice lazy (an edited ``model.conds``)
        conds = evaluated(self._resolve_voice(audio_prompt_path, voice, params))
        for chunk in chunks:
            limit = self.t3.max_new_tokens_for(conds.t3, chunk.tokens)
            if params["max_new_tokens"] > limit:
                raise params_mod.ParameterError(
                    f"max_new_tokens must be at most {limit} for this model and text, got "
                    f"{params['max_new_tokens']}"
                )
        return Request(chunks, lead_in, conds, params, watermark, progress or NULL_PROGRESS, speed)

    def _plan(self, text: str, language_id, key: mx.array) -> tuple[tuple[Chunk, ...], float]:
        """Text chunks (each tokenized now, so a bad character anywhere fails before any
        synthesis) with the silence after each, and the silence before the first."""
        plan = text_mod.plan_text(text, MAX_CHUNK_CHARS)
        pieces = [item for item in plan if isinstance(item, str)]
        keys = mx.random.split(key, len(pieces))
        chunks: list[Chunk] = []
        lead_in, explicit = 0.0, False
        for item in plan:
            if isinstance(item, text_mod.Pause):
                if chunks:
                    chunks[-1] = replace(
                        chunks[-1], pause_after=chunks[-1].pause_after + item.seconds
                    )
                else:
                    lead_in += item.seconds
                explicit = True
                continue
            if chunks and not explicit:
                chunks[-1] = replace(chunks[-1], pause_after=JOIN_PAUSE_S)
            chunks.append(Chunk(item, self._encode(item, language_id), keys[len(chunks)]))
            explicit = False
        mx.eval([c.key for c in chunks], [c.tokens for c in chunks])  # see _evaluated
        return tuple(chunks), lead_in

    def _sampler(self, params: dict):
        names = inspect.signature(self.variant.sampler).parameters
        return self.variant.sampler(**{k: params[k] for k in params if k in names})

    def _speech_steps(self, request: Request, chunk: Chunk, t3_key: mx.array):
        return self.t3.generate_steps(
            request.conds.t3,
            chunk.tokens,
            self._sampler(request.params),
            max_new_tokens=request.params["max_new_tokens"],
            key=t3_key,
        )

    def _speech_tokens(self, request: Request, chunk: Chunk, t3_key: mx.array) -> list[int]:
        """The chunk's speech ids (stop and other special ids dropped), from the call's
        batch where it has one, else from T3 alone; why T3 ended goes to the request."""
        count = request.params["max_new_tokens"]
        with request.progress.task("speech tokens", count) as advance:
            if request.speech is not None and chunk in request.speech:
                sampled, finished = request.speech.speech(chunk, advance)
            else:
                steps = self._speech_steps(request, chunk, t3_key)
                sampler, stop = self._sampler(request.params), self.t3.config.stop_speech_token
                sampled, finished = solo_speech(steps, sampler, count, stop, advance)
        request.t3_finished.append(finished)
        tokens = [token for token in sampled if token < SPEECH_VOCAB_SIZE]
        if not tokens:
            raise RuntimeError("T3 produced no speech tokens for this text")
        return tokens

    def _render(self, tokens: list[int], gen: GenCond, flow_key, hift_key) -> np.ndarray:
        speech = mx.array([*tokens, *self.variant.tail_tokens], dtype=mx.int32)
        wav, _ = self.s3gen.inference(speech, gen, self.variant.flow_steps, key=flow_key,
                                      hift_key=hift_key)  # fmt: skip
        wav = np.asarray(wav[0], dtype=np.float32)
        if self.variant.drop_last_token_audio:
            wav = wav[: max(1, len(tokens) - 1) * SAMPLES_PER_TOKEN]
        return wav

    def _one_chunk(self, request: Request, chunk: Chunk) -> np.ndarray:
        t3_key, flow_key, hift_key = mx.random.split(chunk.key, 3)
        started = time.perf_counter()
        tokens = self._speech_tokens(request, chunk, t3_key)
        t3_time = time.perf_counter() - started
        wav = self._render(tokens, request.conds.gen, flow_key, hift_key)
        rate = len(tokens) / max(t3_time, 1e-9)
        if request.speech is not None:  # every row's tokens over the batch's time
            rate = request.speech.tokens_per_second()
        self.last_stats = {
            "speech tokens": len(tokens) + len(self.variant.tail_tokens),
            "T3 tokens/s": f"{rate:.1f}",
            "T3 finished": request.t3_finished[-1],  # "stop_token" or "max_new_tokens"
            "T3 finished per chunk": list(request.t3_finished),
            "T3 batch": request.speech.batch_size if request.speech is not None else 1,
        }
        return wav

    def _batched(self, requests: list[Request], batch_size: int) -> list[Request]:
        return batch_requests(requests, batch_size, self.t3, self._sampler)

    def _finish(self, wav: np.ndarray, request: Request) -> mx.array:
        check_finite(wav, "the generated waveform", "no file was written")
        wav = time_stretch(wav, self.sr, request.speed)
        return as_output(watermark_output(wav, request.watermark))

    def _silence(self, seconds: float) -> np.ndarray:
        return np.zeros(int(round(seconds * self.sr)), np.float32)

    def _pieces(self, request: Request) -> Iterator[np.ndarray]:
        """Each chunk's audio (faded out when there are several or a pause follows), then
        its silence."""
        chunks = request.chunks
        if request.lead_in:
            yield self._silence(request.lead_in)
        with request.progress.task("chunks", len(chunks)) as advance:
            for chunk in chunks:
                with COMPUTE_LOCK:
                    wav = self._one_chunk(request, chunk)
                yield _fade_out(wav) if len(chunks) > 1 or chunk.pause_after else wav
                if chunk.pause_after:
                    yield self._silence(chunk.pause_after)
                advance(1)

    # ---- public entry points ------------------------------------------------------------

    def generate(self, text: str, audio_prompt_path=None, *, repetition_penalty=None,
                 min_p=None, top_p=None, exaggeration=None, cfg_weight=None, temperature=None,
                 top_k=None, norm_loudness=None, max_new_tokens=None, language_id=None,
                 seed: int | None = None, watermark: bool = True,
                 progress: Progress | None = None, voice: Conditionals | None = None,
                 speed: float = 1.0, batch_size: int | None = None) -> mx.array:  # fmt: skip
        """Text -> waveform ``[1, samples]`` at 24 kHz.

        Takes every keyword of upstream's ``generate``; parameters not given take the
        variant's upstream defaults (``model.variant.generation``). ``seed`` makes the
        result reproducible whatever else runs; ``voice`` (from ``prepare_voice``) is
        used for this call only; ``speed`` (0.5-2) stretches the speech, pitch kept. Long
        text is split at sentence ends and joined with short pauses; its chunks go through
        T3 together, ``batch_size`` at a time (default ``DEFAULT_BATCH_SIZE``; 1: chunk by
        chunk), each speaking what it speaks alone."""
        batch_size = resolve_batch_size(batch_size)
        given = dict(repetition_penalty=repetition_penalty, min_p=min_p, top_p=top_p,
                     exaggeration=exaggeration, cfg_weight=cfg_weight, temperature=temperature,
                     top_k=top_k, norm_loudness=norm_loudness,
                     max_new_tokens=max_new_tokens)  # fmt: skip
        request = self._request(text, audio_prompt_path, voice, seed, given, language_id,
                                watermark, progress, speed)  # fmt: skip
        (request,) = self._batched([request], batch_size)
        return self._finish(np.concatenate(list(self._pieces(request))), request)

    def generate_pieces(self, text: str, audio_prompt_path=None, *, seed: int | None = None,
                        watermark: bool = True, progress: Progress | None = None,
                        voice: Conditionals | None = None, language_id=None, speed: float = 1.0,
                        batch_size: int | None = None, **given) -> Iterator[mx.array]:  # fmt: skip
        """``generate`` for long texts (a chapter, a book): yields each text chunk's audio,
        then its pause, as soon as it is made (in order), so it can be written out with
        flat memory. Same keywords as ``generate`` (``batch_size`` included); each piece
        is watermarked (and stretched) alone."""
        batch_size = resolve_batch_size(batch_size)
        request = self._request(text, audio_prompt_path, voice, seed, given, language_id,
                                watermark, progress, speed)  # fmt: skip
        (request,) = self._batched([request], batch_size)
        return (self._finish(piece, request) for piece in self._pieces(request))

    def generate_batch(self, texts: list[str], audio_prompt_path=None, **kwargs) -> list[mx.array]:
        """Several texts with the same voice and settings, one waveform each (text ``i``
        with seed ``seed + i`` when a seed is given, as ``generate`` would make it): the
        waveforms of ``generate_each`` (same keywords) as a list."""
        return list(self.generate_each(texts, audio_prompt_path, **kwargs))

    def generate_each(self, texts: list[str], audio_prompt_path=None, *,
                      seed: int | Sequence[int] | None = None, voice: Conditionals | None = None,
                      watermark: bool = True, progress: Progress | None = None,
                      language_id=None, speed: float = 1.0, batch_size: int | None = None,
                      **given) -> Iterator[mx.array]:  # fmt: skip
        """Several texts with the same voice and settings: each text's waveform, in order,
        as soon as it is made. ``seed``: text ``i`` gets ``seed + i``, or ``seed[i]`` from
        a list of one seed per text. Every text is checked before the first is
        synthesized; the chunks of all texts go through T3 together, ``batch_size`` at a
        time (1: one after another)."""
        if isinstance(texts, str) or not texts:
            raise text_mod.TextError(
                "generate_batch and generate_each take a non-empty list of texts, "
                'e.g. ["One.", "Two."]'
            )
        batch_size = resolve_batch_size(batch_size)
        seeds = _text_seeds(seed, len(texts))
        if voice is None and audio_prompt_path:  # the texts first, then the clip
            for text in texts:
                text_mod.check_text(text, "text")
                self._plan(text, self._check_language(language_id), mx.random.key(0))
            params = params_mod.resolve(self.variant, given)
            voice = self.prepare_voice(audio_prompt_path, **voice_kwargs(params))
            self.conds = voice
        requests = [
            self._request(
                text, None, voice, seeds[i], given, language_id, watermark, progress, speed
            )
            for i, text in enumerate(texts)
        ]
        requests = self._batched(requests, batch_size)
        return (self._finish(np.concatenate(list(self._pieces(r))), r) for r in requests)

    def generate_stream(self, text: str, audio_prompt_path=None, **kwargs) -> Iterator[mx.array]:
        """Yield waveform chunks ``[1, n]`` while T3 is still generating.

        ``chunk_tokens``: speech tokens per chunk, one size or a schedule whose last size
        repeats (default ``STREAM_CHUNK_SCHEDULE``: a small first chunk for early audio,
        then larger ones, since every chunk pays for the flow over the voice's prompt).
        Each chunk goes through the flow with the previous tokens' mel as extra prompt
        (bounded context, so the total cost grows linearly) and through HiFT with its
        source cache and a cross-fade (see ``streaming``). ``flow_prompt_tokens``: how
        many of the voice prompt's last tokens condition each chunk (None: all).
        Given the same seed, T3 speaks the same tokens as ``generate``. Watermarking,
        when on, is applied per chunk. Everything is checked before the first chunk;
        the other keywords are ``generate``'s (``batch_size`` aside)."""
        return on_own_thread(self.stream_rows(text, audio_prompt_path, **kwargs).solo())

    def stream_rows(self, text: str, audio_prompt_path=None, *,
                    chunk_tokens: int | Sequence[int] = STREAM_CHUNK_SCHEDULE,
                    flow_prompt_tokens: int | None = STREAM_PROMPT_TOKENS,
                    seed: int | None = None, watermark: bool = True,
                    progress: Progress | None = None, voice: Conditionals | None = None,
                    language_id=None, speed: float = 1.0, **given) -> StreamRows:  # fmt: skip
        """``generate_stream``'s call, checked whole, as T3 rows for a caller that decodes
        them itself (the server decodes many calls' rows in one batch); same keywords."""
        schedule = params_mod.check_schedule(chunk_tokens)
        if flow_prompt_tokens is not None:
            flow_prompt_tokens = params_mod.check_value("flow_prompt_tokens", flow_prompt_tokens)
        request = self._request(text, audio_prompt_path, voice, seed, given, language_id,
                                watermark, progress, speed)  # fmt: skip
        return StreamRows(self, request, schedule, flow_prompt_tokens)


def _text_seeds(seed, count: int) -> list[int | None]:
    """One seed per text: ``seed + i``, the given list's, or None for each."""
    if seed is None:
        return [None] * count
    if isinstance(seed, list | tuple):
        if len(seed) != count:
            raise params_mod.ParameterError(
                f"seed has {len(seed)} seeds for {count} texts: give one seed per text, "
                "or a single seed (text i gets seed + i)"
            )
        return [params_mod.check_value("seed", s) for s in seed]
    seed = params_mod.check_value("seed", seed)
    return [seed + i for i in range(count)]


def voice_kwargs(kwargs: dict) -> dict:
    out = {}
    if kwargs.get("exaggeration") is not None:
        out["exaggeration"] = kwargs["exaggeration"]
    if kwargs.get("norm_loudness") is not None:
        out["norm_loudness"] = kwargs["norm_loudness"]
    return out

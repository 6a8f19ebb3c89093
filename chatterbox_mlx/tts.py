"""The pipelines users touch: ``ChatterboxTTS``, ``ChatterboxTurboTTS`` (``nano=True``),
``ChatterboxMultilingualTTS`` and ``ChatterboxVC``.

They mirror upstream's classes (same names, entry points and generation defaults), so a
script ports by changing the import. Components keep upstream's names: ``model.t3``,
``model.s3gen`` (``embed_ref``, ``flow_inference``, ``hift_inference``, ``inference``,
``tokenizer``), ``model.ve``, ``model.tokenizer``, ``model.conds`` (``.t3``, ``.gen``).

Outputs are float32 24 kHz waveforms ``[1, samples]`` (``mx.array``), Perth-watermarked
by default as upstream does (``watermark=False`` to opt out).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import mlx.core as mx
import numpy as np

from . import text as text_mod
from .conditionals import Conditionals, prepare_conditionals, prepare_gen_conditionals
from .models.t3 import T3Cond
from .progress import NULL_PROGRESS, Progress
from .s3gen import S3GEN_SIL, S3GEN_SR, SAMPLES_PER_TOKEN, S3Gen, drop_invalid_tokens
from .streaming import StreamingVocoder

MAX_CHUNK_CHARS = 300  # long text is split at sentence ends into chunks of at most this
JOIN_PAUSE_S = 0.1  # silence between long-text chunks (each already fades in and out)


def _fade_out(wav: np.ndarray, sr: int = S3GEN_SR, seconds: float = 0.01) -> np.ndarray:
    n = min(len(wav), int(sr * seconds))
    if n:
        wav = wav.copy()
        wav[-n:] *= (np.cos(np.linspace(0, np.pi, n)) + 1) / 2
    return wav


def _watermark(wav: np.ndarray, enabled: bool) -> np.ndarray:
    if not enabled:
        return wav
    from .watermark import apply_watermark

    return apply_watermark(wav, S3GEN_SR)


def _as_output(wav: np.ndarray) -> mx.array:
    return mx.array(np.asarray(wav, dtype=np.float32)[None, :])


class _Pipeline:
    """What every text-to-speech variant shares; subclasses set the variant's text
    handling and T3 call."""

    variant = "english"
    sr = S3GEN_SR
    punc_variant = "english"

    def __init__(self, t3, s3gen: S3Gen, ve, tokenizer, conds: Conditionals | None = None):
        self.t3 = t3
        self.s3gen = s3gen
        self.ve = ve
        self.tokenizer = tokenizer
        self.conds = conds
        self.last_stats: dict = {}

    # ---- loading ------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name: str | Path | None = None, quantize: int | None = None,
                        revision: str | None = None, variant: str | None = None):  # fmt: skip
        """Load a converted MLX directory, a hub repo with converted weights, or an original
        Resemble AI repo / directory (converted on first use and cached)."""
        from .hub import load_components

        variant = variant or cls.variant
        components = load_components(name or _default_repo(variant), variant, revision=revision)
        return cls._from_components(components, quantize)

    @classmethod
    def from_local(cls, ckpt_dir: str | Path, quantize: int | None = None):
        return cls.from_pretrained(Path(ckpt_dir), quantize=quantize)

    @classmethod
    def _from_components(cls, c, quantize: int | None = None):
        if quantize:
            from .models.t3 import quantize_t3

            quantize_t3(c.t3, bits=quantize, group_size=64)
        s3gen = S3Gen(c.flow, c.hift, c.s3tokenizer, c.campplus, meanflow=c.variant.meanflow)
        tokenizer = _load_text_tokenizer(c.variant.name, c.path)
        model = cls(c.t3, s3gen, c.voice_encoder, tokenizer, conds=c.conds)
        model.variant = c.variant.name
        model.generation_defaults = c.generation
        return model

    # ---- conditioning -------------------------------------------------------------------

    def prepare_conditionals(self, wav_fpath, exaggeration: float = 0.5, **kwargs) -> None:
        """Clone a voice from a clip (path, or array with ``sr=``); sets ``self.conds``."""
        self.conds = prepare_conditionals(
            wav_fpath,
            s3tokenizer=self.s3gen.tokenizer,
            campplus=self.s3gen.speaker_encoder,
            voice_encoder=self.ve,
            variant=self.variant,
            exaggeration=exaggeration,
            **kwargs,
        )

    def _conds_for(self, audio_prompt_path, exaggeration, **kwargs) -> Conditionals:
        if audio_prompt_path:
            self.prepare_conditionals(audio_prompt_path, exaggeration=exaggeration, **kwargs)
        if self.conds is None:
            raise ValueError(
                "no voice: this model has no built-in voice; pass audio_prompt_path= or call "
                "prepare_conditionals() first"
            )
        return self.conds

    # ---- text -> tokens -----------------------------------------------------------------

    def _text_tokens(self, text: str, **kwargs) -> mx.array:
        ids = self.tokenizer.encode(text_mod.punc_norm(text, self.punc_variant), strict=True)
        return self._framed(ids)

    def _framed(self, ids: list[int]) -> mx.array:
        """``[1, N]``: the ids between T3's start and stop text tokens (as upstream pads)."""
        cfg = self.t3.config
        return mx.array([[cfg.start_text_token, *ids, cfg.stop_text_token]], dtype=mx.int32)

    # ---- generation ---------------------------------------------------------------------

    def _finish_tokens(self, tokens: mx.array) -> mx.array:
        return drop_invalid_tokens(tokens)

    def _trim_output(self, wav: np.ndarray, n_tokens: int) -> np.ndarray:
        return wav

    def _params(self, overrides: dict) -> dict:
        params = dict(getattr(self, "generation_defaults", {}) or self.DEFAULTS)
        params.update({k: v for k, v in overrides.items() if v is not None})
        return params

    def _check_text(self, text) -> str:
        if not isinstance(text, str) or not text.strip():
            raise text_mod.TextError("text is empty or only whitespace: give some words to speak")
        return text

    def _one_chunk(self, text: str, conds, params: dict, progress: Progress) -> np.ndarray:
        text_tokens = self._text_tokens(text, **params)
        started = time.perf_counter()
        tokens = self._speech_tokens(text_tokens, conds, params, progress)
        t3_time = time.perf_counter() - started
        tokens = self._finish_tokens(tokens)
        if tokens.size == 0:
            raise RuntimeError("T3 produced no speech tokens for this text")
        wav, _ = self.s3gen.inference(tokens, conds.gen, n_cfm_timesteps=params["n_cfm_timesteps"])
        wav = np.asarray(wav[0], dtype=np.float32)
        self.last_stats = {
            "speech tokens": int(tokens.size),
            "T3 tokens/s": f"{tokens.size / max(t3_time, 1e-9):.1f}",
        }
        return self._trim_output(wav, int(tokens.size))

    def _setup(self, text, audio_prompt_path, seed, params) -> tuple[dict, Conditionals]:
        """Checks, parameters with defaults, seeding and the voice, for one generation."""
        self._check_text(text)
        params = self._params(params)
        if seed is not None:
            mx.random.seed(seed)
        exaggeration = params.get("exaggeration", 0.5)
        conds = self._conds_for(audio_prompt_path, exaggeration, **self._cond_kwargs(params))
        return params, self._with_exaggeration(conds, params)

    def generate(self, text: str, audio_prompt_path=None, seed: int | None = None,
                 watermark: bool = True, progress: Progress | None = None,
                 **params) -> mx.array:  # fmt: skip
        """Text -> waveform ``[1, samples]`` at 24 kHz. Parameters not given take the
        variant's upstream defaults (``self.DEFAULTS``); ``seed`` makes the result
        reproducible. Long text is split at sentence ends and joined with short pauses."""
        params, conds = self._setup(text, audio_prompt_path, seed, params)
        progress = progress or NULL_PROGRESS
        chunks = text_mod.chunk_text(text, MAX_CHUNK_CHARS)
        pieces = []
        with progress.task("chunks", len(chunks)) as advance:
            for i, chunk in enumerate(chunks):
                wav = self._one_chunk(chunk, conds, params, progress)
                if len(chunks) > 1:
                    pieces.append(_fade_out(wav))
                    if i + 1 < len(chunks):
                        pieces.append(np.zeros(int(JOIN_PAUSE_S * self.sr), np.float32))
                else:
                    pieces.append(wav)
                advance(1)
        wav = np.concatenate(pieces)
        return _as_output(_watermark(wav, watermark))

    def generate_batch(self, texts: list[str], **kwargs) -> list[mx.array]:
        """Several texts with the same voice and settings, one waveform each."""
        return [self.generate(t, **kwargs) for t in texts]

    def generate_stream(self, text: str, audio_prompt_path=None, seed: int | None = None,
                        watermark: bool = True, progress: Progress | None = None,
                        chunk_tokens: int = 25, **params) -> Iterator[mx.array]:  # fmt: skip
        """Yield waveform chunks ``[1, n]`` while T3 is still generating.

        Every ``chunk_tokens`` new speech tokens go through the flow with the previous
        tokens' mel as extra prompt (bounded context, so the total cost grows linearly)
        and through HiFT with its source cache and a cross-fade (see ``streaming``).
        Watermarking, when on, is applied per chunk."""
        params, conds = self._setup(text, audio_prompt_path, seed, params)
        progress = progress or NULL_PROGRESS
        for chunk_text in text_mod.chunk_text(text, MAX_CHUNK_CHARS):
            vocoder = StreamingVocoder(self.s3gen, conds.gen, params["n_cfm_timesteps"])
            for tokens in self._token_stream(self._text_tokens(chunk_text, **params), conds,
                                             params, chunk_tokens):  # fmt: skip
                wav = vocoder.push(tokens)
                if wav.size:
                    yield _as_output(_watermark(wav, watermark))
            tail = vocoder.finish(self._tail_tokens())
            if tail.size:
                yield _as_output(_watermark(tail, watermark))

    def _tail_tokens(self) -> list[int]:
        return []

    def _token_stream(self, text_tokens, conds, params, chunk_tokens) -> Iterator[list[int]]:
        """Groups of ``chunk_tokens`` valid speech ids as T3 samples them."""
        pending: list[int] = []
        for step in self._steps(text_tokens, conds, params):
            token = int(step.token)
            if token < 6561:
                pending.append(token)
            if len(pending) >= chunk_tokens:
                yield pending
                pending = []
        if pending:
            yield pending

    def _cond_kwargs(self, params: dict) -> dict:
        return {}

    def _with_exaggeration(self, conds: Conditionals, params: dict) -> Conditionals:
        return conds


class ChatterboxTTS(_Pipeline):
    """English (Llama T3 with CFG, 10-step flow)."""

    variant = "english"
    punc_variant = "english"
    DEFAULTS = dict(exaggeration=0.5, cfg_weight=0.5, temperature=0.8, repetition_penalty=1.2,
                    min_p=0.05, top_p=1.0, max_new_tokens=1000, n_cfm_timesteps=10)  # fmt: skip

    def _with_exaggeration(self, conds: Conditionals, params: dict) -> Conditionals:
        exaggeration = float(params.get("exaggeration", 0.5))
        current = conds.t3.emotion_adv
        current = float(np.asarray(current).reshape(-1)[0]) if current is not None else None
        if current != exaggeration:
            t3 = replace(conds.t3, emotion_adv=exaggeration * mx.ones((1, 1, 1)))
            conds = Conditionals(t3, conds.gen)
            self.conds = conds
        return conds

    def _t3_kwargs(self, params: dict) -> dict:
        return dict(
            max_new_tokens=params["max_new_tokens"],
            temperature=params["temperature"],
            cfg_weight=params["cfg_weight"],
            repetition_penalty=params["repetition_penalty"],
            min_p=params["min_p"],
            top_p=params["top_p"],
        )

    def _steps(self, text_tokens, conds, params):
        return self.t3.inference_steps(conds.t3, text_tokens, **self._t3_kwargs(params))

    def _speech_tokens(self, text_tokens, conds, params, progress, callback=None):
        tokens = []
        with progress.task("speech tokens", params["max_new_tokens"]) as advance:
            for step in self._steps(text_tokens, conds, params):
                tokens.append(int(step.token))
                advance(1)
        return mx.array(tokens, dtype=mx.int32)


class ChatterboxMultilingualTTS(ChatterboxTTS):
    """23 languages (``language_id`` required); ``t3_model="v2"`` (default) or ``"v3"``."""

    variant = "multilingual"
    punc_variant = "multilingual"

    @classmethod
    def from_pretrained(cls, name=None, quantize=None, revision=None, t3_model: str = "v2"):
        variant = {"v2": "multilingual", "v3": "multilingual-v3"}.get(t3_model)
        if variant is None:
            raise ValueError(f"unknown t3_model {t3_model!r}; use 'v2' or 'v3'")
        return super().from_pretrained(name, quantize, revision, variant=variant)

    @classmethod
    def get_supported_languages(cls) -> dict[str, str]:
        return dict(text_mod.SUPPORTED_LANGUAGES)

    def _text_tokens(self, text: str, language_id=None, **kwargs) -> mx.array:
        language_id = text_mod.check_language(language_id)
        text = text_mod.punc_norm(text, self.punc_variant)
        return self._framed(self.tokenizer.encode(text, language_id, strict=True))

    def generate(self, text: str, language_id: str | None = None, **kwargs) -> mx.array:
        text_mod.check_language(language_id)
        return super().generate(text, language_id=language_id, **kwargs)

    def generate_stream(self, text: str, language_id: str | None = None, **kwargs):
        text_mod.check_language(language_id)
        return super().generate_stream(text, language_id=language_id, **kwargs)

    def _trim_output(self, wav: np.ndarray, n_tokens: int) -> np.ndarray:
        # Upstream HEAD drops the last token's audio (~40 ms of noise just before EOS).
        return wav[: max(1, n_tokens - 1) * SAMPLES_PER_TOKEN]


class ChatterboxTurboTTS(_Pipeline):
    """Turbo (GPT-2 medium T3, 2 meanflow steps); ``nano=True`` for Nano (GPT-2 small)."""

    variant = "turbo"
    punc_variant = "turbo"
    DEFAULTS = dict(temperature=0.8, top_k=1000, top_p=0.95, repetition_penalty=1.2,
                    max_new_tokens=1000, n_cfm_timesteps=2, norm_loudness=True)  # fmt: skip

    @classmethod
    def from_pretrained(cls, name=None, quantize=None, revision=None, nano: bool = False):
        variant = "nano" if nano else "turbo"
        return super().from_pretrained(name, quantize, revision, variant=variant)

    @classmethod
    def from_local(cls, ckpt_dir: str | Path, quantize: int | None = None, nano: bool = False):
        return cls.from_pretrained(Path(ckpt_dir), quantize=quantize, nano=nano)

    def _text_tokens(self, text: str, **kwargs) -> mx.array:
        ids = self.tokenizer.encode(text_mod.punc_norm(text, self.punc_variant))
        return mx.array([ids], dtype=mx.int32)

    def _cond_kwargs(self, params: dict) -> dict:
        return {"norm_loudness": bool(params.get("norm_loudness", True))}

    def _steps(self, text_tokens, conds, params):
        # Upstream's loop samples one token before its max_gen_len steps; cap the count
        # so that max_new_tokens means what it says.
        steps = self.t3.inference_turbo_steps(
            conds.t3,
            text_tokens,
            temperature=params["temperature"],
            top_k=params["top_k"],
            top_p=params["top_p"],
            repetition_penalty=params["repetition_penalty"],
            max_gen_len=params["max_new_tokens"],
        )
        return itertools.islice(steps, params["max_new_tokens"])

    def _speech_tokens(self, text_tokens, conds, params, progress, callback=None):
        tokens = []
        stop = self.t3.config.stop_speech_token
        with progress.task("speech tokens", params["max_new_tokens"]) as advance:
            for step in self._steps(text_tokens, conds, params):
                if int(step.token) != stop:
                    tokens.append(int(step.token))
                advance(1)
        return mx.array(tokens, dtype=mx.int32)

    def _finish_tokens(self, tokens: mx.array) -> mx.array:
        tokens = drop_invalid_tokens(tokens)
        return mx.concatenate([tokens, mx.array([S3GEN_SIL] * 3, dtype=mx.int32)])

    def _tail_tokens(self) -> list[int]:
        return [S3GEN_SIL] * 3


class ChatterboxVC:
    """Voice conversion: source audio -> S3 tokens -> S3Gen with the target voice."""

    sr = S3GEN_SR

    def __init__(self, s3gen: S3Gen, ref_dict=None):
        self.s3gen = s3gen
        self.ref_dict = ref_dict

    @classmethod
    def from_pretrained(cls, name: str | Path | None = None, revision: str | None = None):
        from .hub import load_components

        c = load_components(name or _default_repo("english"), "english", revision=revision,
                            networks=("flow", "hift", "s3tokenizer", "campplus"))  # fmt: skip
        s3gen = S3Gen(c.flow, c.hift, c.s3tokenizer, c.campplus, meanflow=False)
        return cls(s3gen, c.conds.gen if c.conds is not None else None)

    @classmethod
    def from_local(cls, ckpt_dir: str | Path):
        return cls.from_pretrained(Path(ckpt_dir))

    def set_target_voice(self, wav_fpath, sr: int | None = None) -> None:
        self.ref_dict = prepare_gen_conditionals(
            wav_fpath, self.s3gen.tokenizer, self.s3gen.speaker_encoder, sr=sr
        )

    def generate(self, audio, target_voice_path=None, watermark: bool = True,
                 seed: int | None = None, sr: int | None = None, **_) -> mx.array:  # fmt: skip
        """``audio``: the speech to convert (path, or array with ``sr=``)."""
        from . import audio as audio_mod
        from .conditionals import load_reference
        from .s3gen import S3_SR

        if target_voice_path:
            self.set_target_voice(target_voice_path)
        if self.ref_dict is None:
            raise ValueError("no target voice: pass target_voice_path= or call set_target_voice()")
        if seed is not None:
            mx.random.seed(seed)
        wav = load_reference(audio, sr, "source audio")  # 24 kHz mono, checked
        wav_16 = audio_mod.resample(wav, S3GEN_SR, S3_SR)
        tokens, _ = self.s3gen.tokenizer.tokenize([wav_16])
        out, _ = self.s3gen.inference(tokens[0], self.ref_dict)
        return _as_output(_watermark(np.asarray(out[0], np.float32), watermark))


def _default_repo(variant: str) -> str:
    from .variants import get_variant

    return get_variant(variant).repo_id


def _load_text_tokenizer(variant: str, path: Path):
    if variant in ("turbo", "nano"):
        return text_mod.TurboTokenizer(path)
    if variant.startswith("multilingual"):
        return text_mod.MTLTokenizer(path / "grapheme_mtl_merged_expanded_v1.json")
    return text_mod.EnTokenizer(path / "tokenizer.json")


PIPELINES = {
    "english": ChatterboxTTS,
    "turbo": ChatterboxTurboTTS,
    "nano": ChatterboxTurboTTS,
    "multilingual": ChatterboxMultilingualTTS,
    "multilingual-v3": ChatterboxMultilingualTTS,
}


def load_pipeline(model: str, vc: bool = False, quantize: int | None = None):
    """The CLI's loader: a variant name, a local directory or a hub repo id."""
    from .hub import load_components
    from .variants import VARIANTS

    if vc:
        return ChatterboxVC.from_pretrained(None if model in VARIANTS else model)
    if model in VARIANTS:
        components = load_components(_default_repo(model), model)
    else:
        components = load_components(model)
    return PIPELINES[components.variant.name]._from_components(components, quantize)


__all__ = [
    "ChatterboxMultilingualTTS",
    "ChatterboxTTS",
    "ChatterboxTurboTTS",
    "ChatterboxVC",
    "T3Cond",
    "load_pipeline",
]

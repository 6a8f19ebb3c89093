"""The pipelines users touch: ``ChatterboxTTS``, ``ChatterboxTurboTTS`` (``nano=True``),
``ChatterboxMultilingualTTS`` and ``ChatterboxVC``.

One pipeline (``TTSPipeline``) runs every text-to-speech variant; what differs between
them is data in ``variants.Variant`` (text front end, voice prompt, defaults, sampler,
tail tokens, flow steps). The public classes only keep upstream's names, constructors and
``generate`` keywords, so a script ports by changing the import. Components keep
upstream's names: ``model.t3``, ``model.s3gen``, ``model.ve``, ``model.tokenizer``,
``model.conds`` (``.t3``, ``.gen``).

Outputs are float32 24 kHz waveforms ``[1, samples]`` (``mx.array``), Perth-watermarked
by default as upstream does (``watermark=False`` to opt out).

Threads: one model object may serve several threads. Each call resolves its voice,
exaggeration and random key once, at its start, and keeps them to its end; the MLX
computation itself runs one call at a time per process (``COMPUTE_LOCK``; a stream takes
it per chunk, so streams interleave). Upstream's sequential semantics stay: a prompt
passed to ``generate`` becomes the model's voice for later calls that pass none.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx

from . import text as text_mod
from .checkpoints import hub
from .models.t3 import T3Cond
from .pipeline.pipeline import TTSPipeline
from .pipeline.threads import COMPUTE_LOCK
from .pipeline.vc import ChatterboxVC
from .variants import VARIANTS, get_variant


class ChatterboxTTS(TTSPipeline):
    """English (Llama T3 with CFG, 10-step flow)."""

    VARIANT = "english"


class ChatterboxMultilingualTTS(TTSPipeline):
    """23 languages (``language_id`` required); ``t3_model="v2"`` (default) or ``"v3"``."""

    VARIANT = "multilingual"

    @classmethod
    def from_pretrained(
        cls, device=None, *, name=None, quantize=None, revision=None, t3_model: str = "v2"
    ):
        return cls._load(name, _multilingual_variant(t3_model), device, quantize, revision)

    @classmethod
    def from_local(cls, ckpt_dir, device=None, *, quantize=None, t3_model: str = "v2"):
        return cls._load(Path(ckpt_dir), _multilingual_variant(t3_model), device, quantize)

    @classmethod
    def get_supported_languages(cls) -> dict[str, str]:
        return dict(text_mod.SUPPORTED_LANGUAGES)

    def generate(
        self, text: str, language_id: str | None = None, audio_prompt_path=None, **kwargs
    ) -> mx.array:
        return super().generate(text, audio_prompt_path, language_id=language_id, **kwargs)

    def generate_stream(
        self, text: str, language_id: str | None = None, audio_prompt_path=None, **kwargs
    ):
        return super().generate_stream(text, audio_prompt_path, language_id=language_id, **kwargs)


def _multilingual_variant(t3_model: str) -> str:
    variant = {"v2": "multilingual", "v3": "multilingual-v3"}.get(t3_model)
    if variant is None:
        raise ValueError(f"unknown t3_model {t3_model!r}; use 'v2' or 'v3'")
    return variant


class ChatterboxTurboTTS(TTSPipeline):
    """Turbo (GPT-2 medium T3, 2 meanflow steps); ``nano=True`` for Nano (GPT-2 small)."""

    VARIANT = "turbo"

    @classmethod
    def from_pretrained(
        cls, device=None, *, name=None, quantize=None, revision=None, nano: bool = False
    ):
        return cls._load(name, "nano" if nano else "turbo", device, quantize, revision)

    @classmethod
    def from_local(cls, ckpt_dir, device=None, *, quantize=None, nano: bool = False):
        return cls._load(Path(ckpt_dir), "nano" if nano else "turbo", device, quantize)


PIPELINES = {
    "english": ChatterboxTTS,
    "turbo": ChatterboxTurboTTS,
    "nano": ChatterboxTurboTTS,
    "multilingual": ChatterboxMultilingualTTS,
    "multilingual-v3": ChatterboxMultilingualTTS,
}


def load_pipeline(model: str, vc: bool = False, quantize: int | None = None):
    """The CLI's loader: a variant name, a local directory or a hub repo id."""
    if vc:
        return ChatterboxVC.from_pretrained(name=None if model in VARIANTS else model)
    if model in VARIANTS:
        components = hub.load_components(get_variant(model).repo_id, model)
    else:
        components = hub.load_components(model)
    return PIPELINES[components.variant.name]._from_components(components, quantize)


__all__ = [
    "ChatterboxMultilingualTTS",
    "ChatterboxTTS",
    "ChatterboxTurboTTS",
    "COMPUTE_LOCK",
    "ChatterboxVC",
    "T3Cond",
    "TTSPipeline",
    "load_pipeline",
]

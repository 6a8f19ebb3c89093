"""The Chatterbox variants, as data: which hub files each one loads, how its text and
voice prompt are prepared, how T3 samples, and upstream's generation defaults.

Taken from upstream's pipelines (chatterbox-tts 0.1.7 ``tts.py``, ``tts_turbo.py``,
``mtl_tts.py``; git HEAD for Nano, the Multilingual repetition penalty and the dropped
last token). Every network module is shared, sized by its config; the one pipeline in
``tts.py`` reads everything else from a ``Variant``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .constants import S3GEN_SILENCE_TOKEN
from .models.t3 import Sampler

ENGLISH_REPO = "ResembleAI/chatterbox"
TURBO_REPO = "ResembleAI/chatterbox-turbo"
NANO_REPO = "ResembleAI/chatterbox-nano"

GPT2_TOKENIZER_FILES = (
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
)

# ChatterboxTTS.generate / ChatterboxMultilingualTTS.generate (HEAD: repetition 1.2).
CFG_DEFAULTS = {
    "temperature": 0.8,
    "cfg_weight": 0.5,
    "exaggeration": 0.5,
    "repetition_penalty": 1.2,
    "min_p": 0.05,
    "top_p": 1.0,
    "max_new_tokens": 1000,
}

# ChatterboxTurboTTS.generate: no CFG, no exaggeration, no min_p.
TURBO_DEFAULTS = {
    "temperature": 0.8,
    "top_k": 1000,
    "top_p": 0.95,
    "repetition_penalty": 1.2,
    "max_new_tokens": 1000,
    "norm_loudness": True,
}

# Upstream's Turbo accepts these and ignores them (with a warning); so does this port.
TURBO_IGNORED = {"exaggeration": 0.0, "cfg_weight": 0.0, "min_p": 0.0}


@dataclass(frozen=True)
class PromptSettings:
    """How ``prepare_conditionals`` cuts a voice clip for one variant family."""

    t3_prompt_seconds: int  # ENC_COND_LEN / 16 kHz
    t3_prompt_tokens: int  # T3Config.speech_cond_prompt_len
    normalize_loudness: bool = False
    min_seconds: float | None = None  # the clip must be strictly longer

    @classmethod
    def for_variant(cls, variant: str) -> PromptSettings:
        return get_variant(variant).prompt


CFG_PROMPT = PromptSettings(6, 150)
TURBO_PROMPT = PromptSettings(15, 375, normalize_loudness=True, min_seconds=5.0)


class UnknownVariantError(ValueError):
    """The variant name is not one of :data:`VARIANTS`."""


@dataclass(frozen=True)
class Variant:
    name: str
    repo_id: str  # the original Resemble AI repository
    t3_file: str
    t3_config: str  # name of the T3Config constructor: T3Config.<t3_config>()
    s3gen_file: str
    meanflow: bool  # S3Gen flow decoder distilled to meanflow (Turbo/Nano)
    tokenizer_files: tuple[str, ...]
    # "cfg" (English, Multilingual) or "turbo" (Turbo, Nano): the voice prompt, the
    # sampler and saved-voice files are shared within a family
    family: str = "cfg"
    text_frontend: str = "english"  # punc_norm rules and tokenizer: english|multilingual|turbo
    prompt: PromptSettings = CFG_PROMPT
    # upstream generate()'s defaults, and what it accepts but does not use (warned when
    # set otherwise); plain dicts that nothing mutates (the converter writes them as JSON)
    generation: Mapping = field(default_factory=lambda: dict(CFG_DEFAULTS))
    ignored: Mapping = field(default_factory=dict)
    sampler: Callable[..., Sampler] = Sampler.cfg  # built from the generation parameters
    flow_steps: int = 10  # Euler steps of the flow (meanflow: 2)
    tail_tokens: tuple[int, ...] = ()  # appended before S3Gen (Turbo: three silences)
    drop_last_token_audio: bool = False  # HEAD's Multilingual: ~40 ms of noise before EOS
    needs_language: bool = False
    ve_file: str = "ve.safetensors"
    conds_file: str = "conds.pt"
    optional_files: tuple[str, ...] = ()  # copied when present (e.g. Cangjie table)
    # torch pickles holding the same tensors, used when the safetensors file is absent
    fallback_files: dict = field(default_factory=dict)

    @property
    def weight_files(self) -> tuple[str, ...]:
        return (self.ve_file, self.t3_file, self.s3gen_file)

    @property
    def required_files(self) -> tuple[str, ...]:
        return (*self.weight_files, *self.tokenizer_files, self.conds_file)

    @property
    def download_patterns(self) -> list[str]:
        """The files to fetch (``snapshot_download(allow_patterns=)``); the torch-pickle
        fallbacks only when their safetensors twin is missing."""
        return [*self.required_files, *self.optional_files]


def _multilingual(name: str, t3_file: str) -> Variant:
    return Variant(
        name=name,
        repo_id=ENGLISH_REPO,
        t3_file=t3_file,
        t3_config="multilingual",
        s3gen_file="s3gen.safetensors",
        meanflow=False,
        tokenizer_files=("grapheme_mtl_merged_expanded_v1.json",),
        optional_files=("Cangjie5_TC.json",),
        text_frontend="multilingual",
        drop_last_token_audio=True,
        needs_language=True,
        fallback_files={"ve.safetensors": "ve.pt", "s3gen.safetensors": "s3gen.pt"},
    )


def _turbo(name: str, repo_id: str, t3_file: str) -> Variant:
    return Variant(
        name=name,
        repo_id=repo_id,
        t3_file=t3_file,
        t3_config=name,
        s3gen_file="s3gen_meanflow.safetensors",
        meanflow=True,
        tokenizer_files=GPT2_TOKENIZER_FILES,
        family="turbo",
        text_frontend="turbo",
        prompt=TURBO_PROMPT,
        generation=TURBO_DEFAULTS,
        ignored=TURBO_IGNORED,
        sampler=Sampler.turbo,
        flow_steps=2,
        tail_tokens=(S3GEN_SILENCE_TOKEN,) * 3,
    )


VARIANTS: dict[str, Variant] = {
    "english": Variant(
        name="english",
        repo_id=ENGLISH_REPO,
        t3_file="t3_cfg.safetensors",
        t3_config="english",
        s3gen_file="s3gen.safetensors",
        meanflow=False,
        tokenizer_files=("tokenizer.json",),
    ),
    "turbo": _turbo("turbo", TURBO_REPO, "t3_turbo_v1.safetensors"),
    "nano": _turbo("nano", NANO_REPO, "t3_nano_v1.safetensors"),
    "multilingual": _multilingual("multilingual", "t3_mtl23ls_v2.safetensors"),
    "multilingual-v3": _multilingual("multilingual-v3", "t3_mtl23ls_v3.safetensors"),
}

ALIASES = {"multilingual-v2": "multilingual", "en": "english", "mtl": "multilingual"}

# When a directory holds several T3 files, the first match in this order wins
# (the repo's own default), unless the repo id names another variant.
PRIORITY = ("english", "turbo", "nano", "multilingual", "multilingual-v3")


def get_variant(name: str) -> Variant:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in VARIANTS:
        known = ", ".join([*VARIANTS, *ALIASES])
        raise UnknownVariantError(f"unknown variant {name!r}; choose one of: {known}")
    return VARIANTS[key]


def default_variant_for_repo(repo_id: str) -> Variant | None:
    """The variant a Resemble AI repository id stands for by default (None if not theirs)."""
    for name in PRIORITY:
        if VARIANTS[name].repo_id.lower() == repo_id.lower():
            return VARIANTS[name]
    return None


def detect_variant(directory: str | Path, repo_id: str | None = None) -> Variant:
    """Pick the variant of an original checkpoint directory from its T3 file name."""
    directory = Path(directory)
    present = [VARIANTS[n] for n in PRIORITY if (directory / VARIANTS[n].t3_file).is_file()]
    if not present:
        wanted = ", ".join(f"{v.t3_file} ({v.name})" for v in VARIANTS.values())
        raise UnknownVariantError(
            f"{directory} holds no known T3 checkpoint; expected one of: {wanted}"
        )
    if repo_id is not None:
        preferred = default_variant_for_repo(repo_id)
        if preferred in present:
            return preferred
    return present[0]

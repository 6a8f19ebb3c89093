"""What a voice's tensors must look like: names, dtypes and shapes per family (from the
networks' configs), and the values (finite, token ids in range). Both the saved-voice
reader and writer ask these; every finding is a line of text for the error message."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from ..constants import MEL_FRAMES_PER_TOKEN, SPEECH_VOCAB_SIZE
from ..models.flow import FlowConfig
from ..models.t3 import T3Config

FAMILY_CFG = "cfg"  # English and Multilingual: 6 s / 150-token T3 prompt, exaggeration
FAMILY_TURBO = "turbo"  # Turbo and Nano: 15 s / 375 tokens, loudness-normalized
FAMILIES = (FAMILY_CFG, FAMILY_TURBO)
FAMILY_NAMES = MappingProxyType({FAMILY_CFG: "English/Multilingual", FAMILY_TURBO: "Turbo/Nano"})


# safetensors dtype codes that numpy can hold (BF16 and the float8s cannot, and are never
# a voice tensor's dtype anyway)
NUMPY_DTYPES = MappingProxyType(
    {
        "F64": np.dtype("<f8"),
        "F32": np.dtype("<f4"),
        "F16": np.dtype("<f2"),
        "I64": np.dtype("<i8"),
        "I32": np.dtype("<i4"),
        "I16": np.dtype("<i2"),
        "I8": np.dtype("i1"),
        "U64": np.dtype("<u8"),
        "U32": np.dtype("<u4"),
        "U16": np.dtype("<u2"),
        "U8": np.dtype("u1"),
        "BOOL": np.dtype("?"),
    }
)
DTYPE_NAMES = MappingProxyType({"F32": "float32", "I32": "int32"})


@dataclass(frozen=True)
class Spec:
    dtype: str  # safetensors code
    shape: tuple  # ints, or a letter for a dimension of any size >= 1
    required: bool = True


def specs(family: str, has_t3: bool) -> dict[str, Spec]:
    """What ``prepare_conditionals`` makes for ``family``, sized by the consumers' configs."""
    t3_config = T3Config.english() if family == FAMILY_CFG else T3Config.turbo()
    flow = FlowConfig.english() if family == FAMILY_CFG else FlowConfig.meanflow_config()
    specs = {
        "gen.prompt_token": Spec("I32", (1, "T")),
        "gen.prompt_token_len": Spec("I32", (1,)),
        "gen.prompt_feat": Spec("F32", (1, "F", flow.output_size)),
        "gen.prompt_feat_len": Spec("I32", (1,), required=False),
        "gen.embedding": Spec("F32", (1, flow.spk_embed_dim)),
    }
    if has_t3:
        specs.update(
            {
                "t3.speaker_emb": Spec("F32", (1, t3_config.speaker_embed_size)),
                "t3.cond_prompt_speech_tokens": Spec("I32", (1, "P")),
                # Turbo/Nano's T3 has no exaggeration input; upstream still fills the slot.
                "t3.emotion_adv": Spec("F32", (1, 1, 1), required=family == FAMILY_CFG),
            }
        )
    return specs


def max_prompt_tokens(family: str) -> int:
    config = T3Config.english() if family == FAMILY_CFG else T3Config.turbo()
    return config.speech_cond_prompt_len


def shape_text(shape: Iterable) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def check_specs(entries: Mapping[str, tuple[str, tuple]], family: str) -> list[str]:
    """Problems with the names, dtypes and shapes of ``{name: (dtype code, shape)}``."""
    has_t3 = any(name.startswith("t3.") for name in entries)
    expected = specs(family, has_t3)
    problems = []
    missing = [n for n, s in expected.items() if s.required and n not in entries]
    if missing:
        problems.append(f"missing tensors {missing}")
    unexpected = sorted(set(entries) - set(expected))
    if unexpected:
        problems.append(f"unexpected tensors {unexpected} (a voice holds {sorted(expected)})")
    for name, (code, shape) in sorted(entries.items()):
        spec = expected.get(name)
        if spec is None:
            continue
        want = shape_text(spec.shape)
        if code != spec.dtype:
            got = NUMPY_DTYPES[code].name if code in NUMPY_DTYPES else code
            problems.append(f"{name} is {got}, expected {DTYPE_NAMES[spec.dtype]} {want}")
            continue
        fits = len(shape) == len(spec.shape) and all(
            d == s if isinstance(s, int) else d >= 1 for d, s in zip(shape, spec.shape, strict=True)
        )
        if not fits:
            problems.append(f"{name} has shape {shape_text(shape)}, expected {want}")
    return problems


def check_values(arrays: Mapping[str, np.ndarray], family: str) -> list[str]:
    """Problems with the values of tensors whose names, dtypes and shapes are right."""
    problems = []
    for name, value in sorted(arrays.items()):
        if value.dtype.kind == "f":
            bad = int(value.size - np.count_nonzero(np.isfinite(value)))
            if bad:
                problems.append(f"{name} has {bad} non-finite values (NaN or infinity)")
    for name in ("t3.cond_prompt_speech_tokens", "gen.prompt_token"):
        tokens = arrays.get(name)
        if tokens is not None and ((tokens < 0) | (tokens >= SPEECH_VOCAB_SIZE)).any():
            problems.append(f"{name} holds ids outside 0..{SPEECH_VOCAB_SIZE - 1} (speech tokens)")
    prompt = arrays.get("t3.cond_prompt_speech_tokens")
    limit = max_prompt_tokens(family)
    if prompt is not None and prompt.shape[1] > limit:
        problems.append(
            f"t3.cond_prompt_speech_tokens has {prompt.shape[1]} tokens; "
            f"{FAMILY_NAMES[family]} voices have at most {limit}"
        )
    tokens, feat = arrays.get("gen.prompt_token"), arrays.get("gen.prompt_feat")
    if tokens is not None and feat is not None:
        n_tok, n_mel = tokens.shape[1], feat.shape[1]
        if n_mel > MEL_FRAMES_PER_TOKEN * n_tok + 1:
            problems.append(
                f"gen.prompt_feat has {n_mel} frames for {n_tok} gen.prompt_token tokens "
                f"(at most {MEL_FRAMES_PER_TOKEN * n_tok + 1})"
            )
        for name, size in (("gen.prompt_token_len", n_tok), ("gen.prompt_feat_len", n_mel)):
            length = arrays.get(name)
            if length is not None and not 1 <= int(length[0]) <= size:
                problems.append(f"{name} is {int(length[0])}, expected 1..{size}")
    return problems


# First bytes of the audio files most likely to be passed where a voice file is expected.
_AUDIO_MAGIC = (
    (b"RIFF", 8, b"WAVE", "WAV"),
    (b"RF64", 8, b"WAVE", "WAV (RF64)"),
    (b"FORM", 8, b"AIFF", "AIFF"),
    (b"FORM", 8, b"AIFC", "AIFF"),
    (b"fLaC", None, None, "FLAC"),
    (b"OggS", None, None, "Ogg"),
    (b"ID3", None, None, "MP3"),
    (b"caff", None, None, "CAF"),
)


def audio_kind(head: bytes) -> str | None:
    for magic, at, tag, kind in _AUDIO_MAGIC:
        if head.startswith(magic) and (at is None or head[at : at + len(tag)] == tag):
            return kind
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "MP3"
    return None

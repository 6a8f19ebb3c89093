"""The conditionals a voice gives the networks: ``T3Cond`` for T3 and ``GenCond`` for
S3Gen, together a ``Conditionals`` (upstream's ``Conditionals``). Stored as flat
safetensors (``to_flat``/``from_flat``; the built-in ``conds.safetensors``); the saved-voice
format around them is ``voice_file``. How a clip becomes them is ``prepare``."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..files import atomic_write
from ..models.t3 import T3Cond
from ..models.weights import load_safetensors

FORMAT = "chatterbox-mlx-conds"


@dataclass
class GenCond:
    """S3Gen's reference conditioning (the reference's ``ref_dict`` of ``embed_ref``)."""

    prompt_token: mx.array  # [1, T] int32 S3 tokens
    prompt_token_len: mx.array  # [1] int32
    prompt_feat: mx.array  # [1, 2T, 80] 24 kHz log-mel
    prompt_feat_len: mx.array | None = None  # always None in the reference
    embedding: mx.array | None = None  # [1, 192] CAMPPlus x-vector


@dataclass
class Conditionals:
    t3: T3Cond | None
    gen: GenCond
    # the clip it was prepared from (for saved-voice files); None for built-in voices
    source_sha256: str | None = None
    source_seconds: float | None = None

    def to_flat(self) -> dict[str, mx.array]:
        """``{"t3.speaker_emb": ..., "gen.prompt_feat": ...}``; None entries are left out."""
        out = {}
        for part, obj in (("t3", self.t3), ("gen", self.gen)):  # the tensors only
            if obj is None:
                continue
            for f in fields(obj):
                value = getattr(obj, f.name)
                if value is None:
                    continue
                out[f"{part}.{f.name}"] = mx.array(value)
        return out

    @classmethod
    def from_flat(cls, tensors: dict[str, mx.array], source: str = "conditionals"):
        """Inverse of ``to_flat`` (also reads the converter's flattened ``conds.pt``)."""
        parts: dict[str, dict] = {"t3": {}, "gen": {}}
        for key, value in tensors.items():
            part, _, name = key.partition(".")
            if part not in parts:
                raise ValueError(f"{source}: unexpected entry {key!r} (expected t3.* or gen.*)")
            parts[part][name] = value
        t3 = _build(T3Cond, parts["t3"], source, "t3") if parts["t3"] else None
        gen = _build(GenCond, parts["gen"], source, "gen")
        for name in ("prompt_token", "prompt_token_len"):
            setattr(gen, name, getattr(gen, name).astype(mx.int32))
        if t3 is not None and t3.cond_prompt_speech_tokens is not None:
            t3.cond_prompt_speech_tokens = t3.cond_prompt_speech_tokens.astype(mx.int32)
        return cls(t3, gen)

    def save(self, path: str | Path) -> None:
        """Write as safetensors (atomically), reusable with ``Conditionals.load``."""
        from safetensors.numpy import save

        arrays = {name: np.asarray(value) for name, value in self.to_flat().items()}
        with atomic_write(path) as f:
            f.write(save(arrays, metadata={"format": FORMAT}))

    @classmethod
    def load(cls, path: str | Path) -> Conditionals:
        return cls.from_flat(load_safetensors(path), str(path))


def _build(kind, values: dict, source: str, part: str):
    names = {f.name for f in fields(kind)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{source}: unknown {part} entries {unknown}; known: {sorted(names)}")
    try:
        return kind(**values)
    except TypeError as err:
        raise ValueError(f"{source}: incomplete {part} conditionals ({err})") from None


# ---------------------------------------------------------------------------- audio in

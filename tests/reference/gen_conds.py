"""Real ``torch.save`` files for the torch-free archive reader (checkpoints.torch_pickle).

Writes, with the reference venv's torch:
- ``tests/golden/conds.pt``: a built-in voice saved by upstream's own
  ``Conditionals.save`` (English layout, a short prompt so the file stays small),
  with ``gen.prompt_feat`` a transposed, non-contiguous view as ``embed_ref`` makes it.
- ``tests/golden/conds_dtypes.pt``: every storage type the reader accepts, views with
  a storage offset, shared storages, nested containers, an ``nn.Parameter``.
- ``tests/golden/conds.npz``: the expected values of both (flattened keys).
"""

from __future__ import annotations

import collections

import numpy as np
import torch
from chatterbox.models.t3.modules.cond_enc import T3Cond
from chatterbox.tts import Conditionals
from common import GOLDEN_DIR, save_golden

PROMPT_TOKENS = 60  # S3 tokens at 25 Hz; the mel runs at 50 Hz (2 frames per token)


def english_conds() -> Conditionals:
    g = torch.Generator().manual_seed(0)
    mel = torch.randn(1, 80, 2 * PROMPT_TOKENS, generator=g)  # mel_extractor output [B, C, T]
    t3 = T3Cond(
        speaker_emb=torch.randn(1, 256, generator=g),
        cond_prompt_speech_tokens=torch.randint(0, 6561, (1, 150), generator=g),
        emotion_adv=0.5 * torch.ones(1, 1, 1),
    )
    gen = dict(
        prompt_token=torch.randint(0, 6561, (1, PROMPT_TOKENS), generator=g),
        prompt_token_len=torch.tensor([PROMPT_TOKENS]),
        prompt_feat=mel.transpose(1, 2),  # as in S3Gen.embed_ref: a strided view
        prompt_feat_len=None,
        embedding=torch.randn(1, 192, generator=g),
    )
    assert not gen["prompt_feat"].is_contiguous()
    return Conditionals(t3, gen)


def dtypes_object() -> dict:
    g = torch.Generator().manual_seed(1)
    base = torch.randn(6, 7, generator=g)
    return {
        "float64": torch.randn(3, 2, generator=g, dtype=torch.float64),
        "float16": torch.randn(4, 5, generator=g).half(),
        "bfloat16": torch.randn(4, 5, generator=g).bfloat16(),
        "int32": torch.randint(-1000, 1000, (5,), generator=g, dtype=torch.int32),
        "int16": torch.randint(-1000, 1000, (5,), generator=g, dtype=torch.int16),
        "int8": torch.randint(-100, 100, (5,), generator=g, dtype=torch.int8),
        "uint8": torch.randint(0, 255, (5,), generator=g, dtype=torch.uint8),
        "bool": torch.randint(0, 2, (7,), generator=g).bool(),
        "scalar": torch.tensor(3.25),
        "base": base,
        "row_slice": base[2:4],  # storage offset 14, shares base's storage
        "col_slice": base[:, 3:5],  # offset 3, non-contiguous
        "transposed": base.t(),
        "stepped": base[::2, ::3],
        "parameter": torch.nn.Parameter(torch.randn(2, 3, generator=g)),
        "nested": collections.OrderedDict(a=[1, 2.5, None, "text"], b=(True, {"c": base[5]})),
    }


def flatten(obj, prefix: str = "") -> dict[str, np.ndarray]:
    """tensor leaves -> {dotted.key: array}; bfloat16 compared as its float32 value."""
    out = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}{key}."))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            out.update(flatten(value, f"{prefix}{i}."))
    elif torch.is_tensor(obj):
        t = obj.detach()
        out[prefix[:-1]] = (t.float() if t.dtype == torch.bfloat16 else t).numpy()
    return out


def main() -> None:
    conds = english_conds()
    conds.save(GOLDEN_DIR / "conds.pt")
    dtypes = dtypes_object()
    torch.save(dtypes, GOLDEN_DIR / "conds_dtypes.pt")
    saved = dict(t3=conds.t3.__dict__, gen=conds.gen)
    arrays = {f"conds.{k}": v for k, v in flatten(saved).items()}
    arrays.update({f"dtypes.{k}": v for k, v in flatten(dtypes).items()})
    save_golden(
        "conds",
        arrays,
        "tests/reference/gen_conds.py",
        notes="expected tensors of conds.pt / conds_dtypes.pt (written by torch.save)",
    )


if __name__ == "__main__":
    main()

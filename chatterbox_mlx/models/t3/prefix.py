"""The conditioning prefix of T3's prompts, computed once per voice.

Every prompt starts with its voice's conditioning (speaker embedding, prompt speech tokens,
exaggeration): for every text in that voice the same positions hold the same inputs, so
every layer's keys and values there are the same. Turbo's is 376 of a prompt's ~420
positions, most of a prefill that takes seconds on a CPU.

A prompt is always prefilled in two passes, the conditioning alone (batch 1) and then the
text and BOS after it, whether the conditioning's keys and values come from here or have
just been computed: so a hit cannot change a token. ``PrefixCache`` keeps the last
``PREFIX_VOICES`` voices of one T3 (Turbo: 74 MB each in float32); the model clears it when
its weights change (``T3.update``).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import mlx.core as mx
import numpy as np

from .config import T3Cond

PREFIX_VOICES = 4

LayerPrefix = tuple[mx.array, mx.array]  # keys, values [1, kv_heads, length, head_dim]


def prefix_key(cond: T3Cond, dtype) -> bytes:
    """A digest of everything the conditioning prefix is computed from (and the dtype)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(dtype).encode())
    for part in (cond.speaker_emb, cond.cond_prompt_speech_tokens, cond.emotion_adv):
        if part is None:
            digest.update(b"-")
            continue
        values = mx.array(part)
        values = values.astype(mx.float32 if mx.issubdtype(values.dtype, mx.floating) else mx.int32)
        values = np.array(values)
        digest.update(f"{values.dtype}{values.shape}".encode())
        digest.update(values.tobytes())
    return digest.digest()


class PrefixCache:
    """The last ``capacity`` voices' per-layer keys and values (thread-safe)."""

    def __init__(self, capacity: int = PREFIX_VOICES):
        self.capacity = capacity
        self._entries: OrderedDict[bytes, list[LayerPrefix]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> list[LayerPrefix] | None:
        with self._lock:
            layers = self._entries.get(key)
            if layers is not None:
                self._entries.move_to_end(key)
            return layers

    def put(self, key: bytes, layers: list[LayerPrefix]) -> None:
        with self._lock:
            self._entries[key] = layers
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

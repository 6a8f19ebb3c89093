"""What every part of the audio package shares: its error type and array conversion."""

from __future__ import annotations

import mlx.core as mx
import numpy as np


class AudioError(ValueError):
    """Audio that cannot be used: unreadable, empty, silent or not finite."""


def as_mx(x, dtype=mx.float32) -> mx.array:
    """``x`` (array-like or ``mx.array``) as an ``mx.array`` of ``dtype``."""
    if isinstance(x, mx.array):
        return x.astype(dtype) if x.dtype != dtype else x
    return mx.array(np.asarray(x, dtype=np.float32 if dtype == mx.float32 else None))

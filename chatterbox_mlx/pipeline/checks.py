"""Finiteness checks at the boundaries between stages, so a NaN names where it began."""

from __future__ import annotations

import mlx.core as mx
import numpy as np


class NonFiniteError(ValueError):
    """A stage produced NaN or inf; the message names the stage."""


def check_finite(x, stage: str, fix: str) -> None:
    """Raise ``NonFiniteError`` naming ``stage`` when ``x`` holds NaN or inf."""
    finite = (
        bool(mx.all(mx.isfinite(x)).item())
        if isinstance(x, mx.array)
        else bool(np.isfinite(np.asarray(x)).all())
    )
    if not finite:
        raise NonFiniteError(f"{stage} is not finite (NaN or inf): {fix}")

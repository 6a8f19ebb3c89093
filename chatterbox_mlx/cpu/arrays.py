"""numpy views of MLX arrays, for the CPU paths that compute in numpy."""

from __future__ import annotations

import mlx.core as mx
import numpy as np


def numpy_buffer(x: mx.array) -> np.ndarray:
    """``x`` evaluated, as a numpy array viewing MLX's buffer (no copy). Only valid while
    ``x`` lives, and only for dtypes numpy has (not bfloat16)."""
    mx.eval(x)
    return np.array(x, copy=False)

"""Checking loaded tensors for NaN and infinities (chatterbox_mlx.models.weights)."""

from __future__ import annotations

import mlx.core as mx
import pytest
from mlx.utils import tree_flatten

pytestmark = pytest.mark.usefixtures("offline_env")


@pytest.mark.parametrize("dtype", [mx.float32, mx.float16, mx.bfloat16])
def test_finiteness_is_checked_in_batches(monkeypatch, dtype):
    """One reduction per tensor, ``FINITE_BATCH`` tensors per evaluation (not one each),
    on the numpy path (float32/16 on the CPU) and the MLX one (bfloat16) alike."""
    from chatterbox_mlx.models import weights as weights_mod

    evaluated = []
    real_eval = mx.eval

    def counting_eval(*args):
        evaluated.append(len(tree_flatten(list(args))))
        return real_eval(*args)

    monkeypatch.setattr(weights_mod.mx, "eval", counting_eval)
    tensors = {f"w{i}": mx.ones((3, 3), dtype=dtype) for i in range(150)}
    tensors["w7"] = mx.array([1.0, float("nan")], dtype=dtype)
    tensors["w99"] = mx.array([float("inf"), -float("inf"), 0.0], dtype=dtype)
    tensors["ids"] = mx.array([1, 2], dtype=mx.int32)  # not floating: skipped
    assert weights_mod.non_finite(tensors) == {"w7": 1, "w99": 2}
    batch, floating = weights_mod.FINITE_BATCH, 150
    assert evaluated == [min(batch, floating - i) for i in range(0, floating, batch)]

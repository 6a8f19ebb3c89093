"""Decode-sized ``Linear`` (a few rows) on the CPU, where reading the weight is the cost.

MLX hands every product to BLAS ``sgemm``, and OpenBLAS (0.3.21, no gemm-to-gemv
forwarding on x86) streams a row-major weight about 1.6x faster as the left operand
(``W @ x^T``) than as the transposed right one (``x @ W^T``), and faster still through
``sgemv``: measured on a 2-core EPYC over T3's layers, one row reads 11 GB/s as
``x @ W^T``, 18 as ``W @ x^T`` and 27.6 through ``sgemv`` (numpy's sum reads 26).
So one row calls the loaded BLAS's ``sgemv`` directly on MLX's buffers (this evaluates
the input: decoding evaluates once per layer instead of once per token, a few
milliseconds against tens saved), two to ``DECODE_ROWS`` rows go weight-first. The GPU
runs ``mlx.nn.Linear`` (``chatterbox_mlx.layers.Linear``).
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from . import blas

DECODE_ROWS = 16  # up to this many rows, (W @ x^T)^T beats x @ W^T on CPU BLAS


def matvec(weight: mx.array, x: mx.array, bias: mx.array | None) -> mx.array | None:
    """``weight [out, in] @ x`` (+ ``bias``) for one row ``x`` by BLAS ``sgemv``, reading
    MLX's buffers in place; None where that path does not apply (no BLAS loaded, not
    float32, or a weight that is not row-major in memory)."""
    gemv = blas.sgemv()
    if gemv is None or weight.dtype != mx.float32 or x.dtype != mx.float32:
        return None
    w = np.array(weight, copy=False)  # evaluates; a view of MLX's buffer
    if not w.flags.c_contiguous:
        return None
    v = np.ascontiguousarray(np.array(x, copy=False).reshape(-1))
    out_dims, in_dims = w.shape
    y = np.array(bias, dtype=np.float32) if bias is not None else np.empty(out_dims, np.float32)
    beta = 1.0 if bias is not None else 0.0
    row_major, no_trans = 101, 111
    gemv(row_major, no_trans, out_dims, in_dims, 1.0, w.ctypes.data, in_dims,
         v.ctypes.data, 1, beta, y.ctypes.data, 1)  # fmt: skip
    return mx.array(y)


def linear(x: mx.array, weight: mx.array, bias: mx.array | None) -> mx.array:
    """``x @ weight.T + bias`` for ``x [..., in]`` of at most ``DECODE_ROWS`` rows."""
    rows = x.size // x.shape[-1]
    if rows == 1 and (y := matvec(weight, x, bias)) is not None:
        return y.reshape(*x.shape[:-1], -1)
    y = (weight @ x.reshape(rows, x.shape[-1]).T).T.reshape(*x.shape[:-1], -1)
    return y if bias is None else y + bias

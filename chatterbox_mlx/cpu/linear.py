"""Decode-sized ``Linear`` (a few rows) on the CPU, where reading the weight is the cost.

MLX hands every product to BLAS ``sgemm``, and OpenBLAS (0.3.21, no gemm-to-gemv
forwarding on x86) streams a row-major weight about 1.6x faster as the left operand
(``W @ x^T``) than as the transposed right one (``x @ W^T``), and faster still through
``sgemv``: measured on a 2-core EPYC over T3's layers, one row reads 11 GB/s as
``x @ W^T``, 18 as ``W @ x^T`` and 27.6 through ``sgemv`` (numpy's sum reads 26).

So up to ``MATVEC_ROWS`` rows call the loaded BLAS's ``sgemv`` directly on MLX's
buffers, one call per row. With several rows the weight goes in blocks of about
``BLOCK_BYTES`` (the size of one core's L2), each block read from memory once and
from cache for the other rows: two rows (English T3's CFG batch) over English's 30
layers take 65 ms this way against 125 ms as one ``sgemm``, four rows 90 against 117,
eight rows lose (166 against 125). This evaluates the input: decoding evaluates once
per layer instead of once per token, a few milliseconds against tens saved. More rows,
up to ``DECODE_ROWS``, go weight-first. The GPU runs ``mlx.nn.Linear``
(``chatterbox_mlx.models.layers.Linear``).
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from . import blas

DECODE_ROWS = 16  # up to this many rows, (W @ x^T)^T beats x @ W^T on CPU BLAS
MATVEC_ROWS = 4  # up to this many rows, one sgemv per row beats one sgemm
BLOCK_BYTES = 2 << 20  # weight bytes per block when several rows share its reads


def matvec(weight: mx.array, x: mx.array, bias: mx.array | None) -> mx.array | None:
    """``x [rows, in] @ weight [out, in]^T`` (+ ``bias``) for at most ``MATVEC_ROWS``
    rows by BLAS ``sgemv``, reading MLX's buffers in place; None where that path does
    not apply (no BLAS loaded, not float32, too many rows, or a weight that is not
    row-major in memory)."""
    gemv = blas.sgemv()
    if gemv is None or weight.dtype != mx.float32 or x.dtype != mx.float32:
        return None
    rows = x.size // x.shape[-1]
    if rows > MATVEC_ROWS:
        return None
    w = np.array(weight, copy=False)  # evaluates; a view of MLX's buffer
    if not w.flags.c_contiguous:
        return None
    out_dims, in_dims = w.shape
    v = np.ascontiguousarray(np.array(x, copy=False).reshape(rows, in_dims))
    if bias is not None:
        y = np.repeat(np.array(bias, dtype=np.float32)[None], rows, axis=0)
    else:
        y = np.empty((rows, out_dims), np.float32)
    beta = 1.0 if bias is not None else 0.0
    block = out_dims if rows == 1 else max(1, BLOCK_BYTES // (4 * in_dims))
    row_major, no_trans = 101, 111
    for start in range(0, out_dims, block):
        size = min(block, out_dims - start)
        w_block = w.ctypes.data + 4 * start * in_dims
        for r in range(rows):
            gemv(row_major, no_trans, size, in_dims, 1.0, w_block, in_dims,
                 v[r].ctypes.data, 1, beta, y[r, start:].ctypes.data, 1)  # fmt: skip
    return mx.array(y)


def linear(x: mx.array, weight: mx.array, bias: mx.array | None) -> mx.array:
    """``x @ weight.T + bias`` for ``x [..., in]`` of at most ``DECODE_ROWS`` rows."""
    rows = x.size // x.shape[-1]
    if (y := matvec(weight, x, bias)) is not None:
        return y.reshape(*x.shape[:-1], -1)
    y = (weight @ x.reshape(rows, x.shape[-1]).T).T.reshape(*x.shape[:-1], -1)
    return y if bias is None else y + bias

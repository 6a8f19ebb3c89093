"""Decode-sized ``Linear`` (a few rows) on the CPU, where reading the weight is the cost.

MLX hands every product to BLAS ``sgemm``, and OpenBLAS (0.3.21, no gemm-to-gemv
forwarding on x86) streams a row-major weight about 1.6x faster as the left operand
(``W @ x^T``) than as the transposed right one (``x @ W^T``), and faster still through
``sgemv``: measured on a 2-core EPYC over T3's layers, one row reads 11 GB/s as
``x @ W^T``, 18 as ``W @ x^T`` and 27.6 through ``sgemv`` (numpy's sum reads 26).

Several rows (a batch, or English T3's CFG pair) want the weight read once for all of
them, which BLAS cannot do: ``sgemv`` takes one row and ``sgemm`` first copies the weight
into packed panels. The optional C extension (``decode.c``, built by setup.py; ``native.py``)
does it (``benchmarks/rows_kernel.py``, 192 MB of Turbo's layers, 2-core EPYC: one row
9.6 ms, 2 rows 10.5, 4 rows 14.3, 8 rows 18.7, 16 rows 33, where ``sgemm`` takes 22-33
ms at any of them). One row stays on ``sgemv`` (10.4 ms there: a tie). Without the
extension, up to ``MATVEC_ROWS`` rows call the loaded BLAS's ``sgemv`` on MLX's buffers,
one call per row over blocks of about ``BLOCK_BYTES`` so that the other rows read each
block from cache (four rows 22 ms), and more rows go weight-first through ``sgemm``.
Both evaluate the input: decoding evaluates once per layer instead of once per token, a
few milliseconds against tens saved. The GPU runs ``mlx.nn.Linear``
(``chatterbox_mlx.models.layers.Linear``).
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from . import blas, native

DECODE_ROWS = 16  # up to this many rows, (W @ x^T)^T beats x @ W^T on CPU BLAS
MATVEC_ROWS = 4  # up to this many rows, one sgemv per row beats one sgemm
BLOCK_BYTES = 2 << 20  # weight bytes per block when several rows share its reads
KERNEL_ROWS = range(2, DECODE_ROWS + 1)  # where the C kernel beats sgemv (one row: sgemv)


def rows_kernel():
    """The ``_decode`` extension's several-rows product, or None where it was not built."""
    return native.rows_matmul()


def matvec(weight: mx.array, x: mx.array, bias: mx.array | None) -> mx.array | None:
    """``x [rows, in] @ weight [out, in]^T`` (+ ``bias``), reading MLX's buffers in place:
    by the C kernel for ``KERNEL_ROWS`` rows where it was built, else by BLAS
    ``sgemv`` for at most ``MATVEC_ROWS``; None where neither applies (not float32, too
    many rows, a weight that is not row-major in memory, or no kernel and no BLAS)."""
    if weight.dtype != mx.float32 or x.dtype != mx.float32:
        return None
    rows = x.size // x.shape[-1]
    kernel = rows_kernel() if rows in KERNEL_ROWS else None
    gemv = blas.sgemv() if kernel is None and rows <= MATVEC_ROWS else None
    if kernel is None and gemv is None:
        return None
    w = np.array(weight, copy=False)  # evaluates; a view of MLX's buffer
    if not w.flags.c_contiguous:
        return None
    out_dims, in_dims = w.shape
    v = np.ascontiguousarray(np.array(x, copy=False).reshape(rows, in_dims))
    if bias is not None:
        y = np.repeat(np.array(bias, dtype=np.float32)[None], rows, axis=0)
    elif kernel is not None:
        y = np.zeros((rows, out_dims), np.float32)
    else:
        y = np.empty((rows, out_dims), np.float32)
    if kernel is not None:
        kernel(w.ctypes.data, v.ctypes.data, y.ctypes.data, rows, out_dims, in_dims)
        return mx.array(y)
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

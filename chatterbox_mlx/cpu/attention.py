"""Softmax attention in numpy, one (batch, head) pair at a time on each core.

MLX's CPU ``exp`` is scalar code where numpy's is vectorised, one head's T x T scores stay
in cache between the two products and the softmax, and numpy's bundled OpenBLAS runs
these small products faster than the system one MLX uses (the English estimator step, 56
attentions over 700 frames with batch 2: 4.0 -> 2.6 s on 2 cores; T3's causal prefill
over 300 positions and 16 heads: 15 -> 1.9 ms a layer). The GPU formulation
is ``mx.fast.scaled_dot_product_attention`` (``chatterbox_mlx.models.layers.attention``).
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

import mlx.core as mx
import numpy as np

from . import blas, native
from .arrays import numpy_buffer


def attention(
    q: mx.array, k: mx.array, v: mx.array, scale: float, bias: mx.array | str | None = None
) -> mx.array:
    """softmax(q k^T * scale + bias) v over float32 ``[B, H, T, D]`` (``bias`` broadcast
    to ``[B, H, T, S]``, or ``"causal"``); ``k`` and ``v`` may have fewer heads, each
    shared by consecutive query heads (grouped-query attention, as ``mx.fast``)."""
    q = q * scale
    mx.eval(q, k, v, *(() if bias is None or isinstance(bias, str) else (bias,)))
    qn, kn, vn = (numpy_buffer(a) for a in (q, k, v))
    batch, heads, length, _ = qn.shape
    if heads % kn.shape[1]:
        raise ValueError(f"attention: {heads} query heads do not share {kn.shape[1]} kv heads")
    group = heads // kn.shape[1]
    if isinstance(bias, str):
        bias = _causal_bias(length, kn.shape[2])
    elif bias is not None:
        bias = numpy_buffer(bias)
    if bias is not None:
        bias = np.broadcast_to(bias, (batch, heads, length, kn.shape[2]))
    out = np.empty((batch, heads, length, vn.shape[-1]), np.float32)

    def attend(pairs):
        scores = np.empty((length, kn.shape[2]), np.float32)
        row_sums = np.empty((length, 1), np.float32)
        for b, h in pairs:
            kv = h // group
            np.matmul(qn[b, h], kn[b, kv].T, out=scores)
            if bias is not None:
                scores += bias[b, h]
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            np.sum(scores, axis=-1, keepdims=True, out=row_sums)
            np.matmul(scores, vn[b, kv], out=out[b, h])
            out[b, h] /= row_sums

    pairs = [(b, h) for b in range(batch) for h in range(heads)]
    with blas.single_threaded_numpy_blas() as numpy_blas:
        workers = min(_cpu_count(), len(pairs)) if numpy_blas.active else 1
        if workers > 1:
            list(_thread_pool().map(attend, [pairs[i::workers] for i in range(workers)]))
        else:
            attend(pairs)
    return mx.array(out)


def single_query(
    q: mx.array, k: mx.array, v: mx.array, scale: float, bias: mx.array | None = None
) -> mx.array | None:
    """``attention`` for one query per (batch, head), T3's decode step, by the C kernel
    (``decode.c``) on the cache's own buffers (``k``/``v`` may be views of its first
    positions); ``bias`` broadcasts to ``[B, 1, 1, S]`` (the padding mask). None where the
    kernel does not apply (not built, a head size not a multiple of 8, a per-head bias)."""
    kernel = native.decode_attention()
    if kernel is None or q.shape[2] != 1:
        return None
    batch, heads, _, dim = q.shape
    if bias is not None and (bias.ndim != 4 or bias.shape[1] != 1 or bias.shape[2] != 1):
        return None
    mx.eval(q, k, v, *(() if bias is None else (bias,)))
    qn = np.ascontiguousarray(numpy_buffer(q))
    kn, vn = numpy_buffer(k), numpy_buffer(v)
    keys = kn.shape[2]
    if kn.strides != vn.strides or kn.strides[2:] != (4 * dim, 4) or kn.shape[0] != batch:
        return None
    if bias is not None:
        bias = np.ascontiguousarray(
            np.broadcast_to(numpy_buffer(bias), (batch, 1, 1, keys)), np.float32
        )
    out = np.empty((batch, heads, 1, dim), np.float32)
    failed = kernel(
        qn.ctypes.data,
        kn.ctypes.data,
        vn.ctypes.data,
        None if bias is None else bias.ctypes.data,
        out.ctypes.data,
        batch,
        heads,
        kn.shape[1],
        keys,
        dim,
        kn.strides[0] // 4,
        kn.strides[1] // 4,
        scale,
    )
    return None if failed else mx.array(out)


@functools.lru_cache(maxsize=8)
def _causal_bias(length: int, keys: int) -> np.ndarray:
    """``mx.fast``'s ``"causal"`` mask as an additive ``[length, keys]`` bias: query ``i``
    sees the keys up to ``keys - length + i`` (the last query sees them all)."""
    bias = np.triu(np.full((length, keys), -np.inf, np.float32), k=keys - length + 1)
    bias.setflags(write=False)
    return bias


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@functools.cache
def _thread_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(_cpu_count(), thread_name_prefix="chatterbox-mlx")

"""Layers and kernels shared by the networks, fast on MLX's CPU backend.

``attention`` (numpy on the CPU, heads spread over the cores) and ``gelu`` (erf as a fused
polynomial) avoid MLX's scalar ``exp``/``erf`` on the CPU; the Linear and
convolution layers below reach fast BLAS paths.

MLX's CPU kernels for dilated ``conv1d`` and for ``conv_transpose1d`` are direct loops,
about 50x slower than a matrix product of the same size, and its undilated conv1d (like
im2col) spends most of its time copying the input once per tap. The functions here
compute the same results, to float32 rounding:

- ``conv1d`` with stride 1 on large inputs (HiFT): one BLAS multiply-accumulate per tap
  on a shifted view of the input (24000 steps x 64 x 64, kernel 11: 14 ms against 59 for
  ``mx.conv1d`` or im2col); otherwise im2col (one strided copy of the taps) then
  ``[T, K*C] @ [K*C, O]``, cheaper than K products when the input is small.
- ``conv_transpose1d``: ``[T, C] @ [C, K*O]`` gives every tap's contribution, which is
  then overlap-added at stride ``stride``.

``Linear`` handles decode-sized inputs (a few rows), where reading the weight from memory
is the whole cost. MLX hands every product to BLAS ``sgemm``, and OpenBLAS (0.3.21, no
gemm-to-gemv forwarding on x86) streams a row-major weight about 1.6x faster as the left
operand (``W @ x^T``) than as the transposed right one (``x @ W^T``), and faster still
through ``sgemv``: measured on a 2-core EPYC over T3's layers, one row reads 11 GB/s as
``x @ W^T``, 18 as ``W @ x^T`` and 27.6 through ``sgemv`` (numpy's sum reads 26).
So one row on the CPU calls the loaded BLAS's ``sgemv`` directly on MLX's buffers
(this evaluates the input: decoding evaluates once per layer instead of once per token,
a few milliseconds against tens saved), two to ``DECODE_ROWS`` rows go weight-first.

``Linear``, ``Conv1d`` and ``ConvTranspose1d`` are drop-in subclasses of the ``mlx.nn``
modules (same constructor, parameter names and shapes: conv weights ``[out, kernel, in]``).
"""

from __future__ import annotations

import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from . import _blas

TAPS_MIN_SIZE = 2**22  # im2col copies below this many elements are cheaper than K matmuls
DECODE_ROWS = 16  # up to this many rows, (W @ x^T)^T beats x @ W^T on CPU BLAS


def on_cpu() -> bool:
    return mx.default_device() == mx.cpu


def numpy_view(x: mx.array) -> np.ndarray | None:
    """``x`` evaluated, as a numpy view of MLX's buffer, where numpy should do its
    elementwise math: float32 on the CPU backend, whose exp and sin are scalar code
    (numpy's are vectorised, 3-15x faster here). None elsewhere."""
    if not on_cpu() or x.dtype != mx.float32:
        return None
    mx.eval(x)
    return np.array(x, copy=False)


def matvec(weight: mx.array, x: mx.array, bias: mx.array | None) -> mx.array | None:
    """``weight [out, in] @ x`` (+ ``bias``) for one row ``x`` by BLAS ``sgemv``, reading
    MLX's buffers in place; None where that path does not apply."""
    gemv = _blas.sgemv()
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


class Linear(nn.Linear):
    """``mlx.nn.Linear``; on the CPU, decode-sized inputs take the fast paths above."""

    def __call__(self, x: mx.array) -> mx.array:
        rows = x.size // x.shape[-1]
        if rows > DECODE_ROWS or not on_cpu():
            return super().__call__(x)
        bias = self.get("bias")
        if rows == 1 and (y := matvec(self.weight, x, bias)) is not None:
            return y.reshape(*x.shape[:-1], -1)
        y = (self.weight @ x.reshape(rows, x.shape[-1]).T).T.reshape(*x.shape[:-1], -1)
        return y if bias is None else y + bias


def attention(
    q: mx.array, k: mx.array, v: mx.array, scale: float, bias: mx.array | None = None
) -> mx.array:
    """softmax(q k^T * scale + bias) v over ``[B, H, T, D]``.

    On the CPU backend (float32) this runs in numpy, one (batch, head) at a time on each
    core: MLX's exp is scalar code where numpy's is vectorised, one head's T x T scores
    stay in cache between the two products and the softmax, and numpy's bundled OpenBLAS
    runs these small products faster than the system one MLX uses (the English
    estimator step, 56 attentions over 700 frames with batch 2: 4.0 -> 2.6 s on 2 cores).
    Elsewhere: ``mx.fast.scaled_dot_product_attention``.
    """
    if not on_cpu():
        return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=bias)
    q = q * scale
    if q.dtype != mx.float32 or k.dtype != mx.float32 or v.dtype != mx.float32:
        scores = q @ k.swapaxes(-1, -2)
        return mx.softmax(scores if bias is None else scores + bias, axis=-1) @ v
    mx.eval(q, k, v, *(() if bias is None else (bias,)))
    qn, kn, vn = (np.array(a, copy=False) for a in (q, k, v))  # views of MLX's buffers
    batch, heads, length, _ = qn.shape
    if bias is not None:
        bias = np.broadcast_to(np.array(bias, copy=False), (batch, heads, length, kn.shape[2]))
    out = np.empty((batch, heads, length, vn.shape[-1]), np.float32)

    def attend(pairs):
        scores = np.empty((length, kn.shape[2]), np.float32)
        row_sums = np.empty((length, 1), np.float32)
        for b, h in pairs:
            np.matmul(qn[b, h], kn[b, h].T, out=scores)
            if bias is not None:
                scores += bias[b, h]
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            np.sum(scores, axis=-1, keepdims=True, out=row_sums)
            np.matmul(scores, vn[b, h], out=out[b, h])
            out[b, h] /= row_sums

    pairs = [(b, h) for b in range(batch) for h in range(heads)]
    with _blas.single_threaded_numpy_blas() as numpy_blas:
        workers = min(_cpu_count(), len(pairs)) if numpy_blas.active else 1
        if workers > 1:
            list(_thread_pool().map(attend, [pairs[i::workers] for i in range(workers)]))
        else:
            attend(pairs)
    return mx.array(out)


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@functools.cache
def _thread_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(_cpu_count(), thread_name_prefix="chatterbox-mlx")


# erf(x) = x P(x^2) / Q(x^2) on [-4, 4] (float32-accurate rational fit, as in Eigen's
# fast erf); outside, erf is +-1 in float32. Only multiply-adds: it fuses under mx.compile
# and is several times faster than mx.erf on CPU.
_ERF_P = (
    -2.72614225801306e-10,
    2.77068142495902e-08,
    -2.10102402082508e-06,
    -5.69250639462346e-05,
    -7.34990630326855e-04,
    -2.95459980854025e-03,
    -1.60960333262415e-02,
)
_ERF_Q = (
    -1.45660718464996e-05,
    -2.13374055278905e-04,
    -1.68282697438203e-03,
    -7.37332916720468e-03,
    -1.42647390514189e-02,
)


def erf(x: mx.array) -> mx.array:
    x = mx.clip(x, -4.0, 4.0)
    x2 = x * x
    p = _ERF_P[0]
    for c in _ERF_P[1:]:
        p = p * x2 + c
    q = _ERF_Q[0]
    for c in _ERF_Q[1:]:
        q = q * x2 + c
    return x * p / q


@mx.compile
def gelu(x: mx.array) -> mx.array:
    """Exact (erf) GELU, as torch's default (``mx.erf`` is scalar code on the CPU)."""
    return 0.5 * x * (1.0 + erf(x * 0.7071067811865476))


class GELU(nn.Module):
    def __call__(self, x: mx.array) -> mx.array:
        return gelu(x)


def conv1d(
    x: mx.array,
    weight: mx.array,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    groups: int = 1,
) -> mx.array:
    """Same as ``mx.conv1d`` (x ``[B, T, C]``, weight ``[O, K, C // groups]``)."""
    _, kernel, in_per_group = weight.shape
    if groups != 1:
        return mx.conv1d(x, weight, stride, padding, dilation, groups)
    if x.shape[-1] != in_per_group:
        raise ValueError(
            f"conv1d: input has {x.shape[-1]} channels, the weight expects {in_per_group}; "
            "inputs are channels-last [batch, time, channels]"
        )
    if padding:
        x = mx.pad(x, [(0, 0), (padding, padding), (0, 0)])
    span = dilation * (kernel - 1) + 1
    length = (x.shape[1] - span) // stride + 1
    if length <= 0:
        raise ValueError(
            f"conv1d: input of {x.shape[1] - 2 * padding} steps is shorter than the kernel "
            f"span {span} (padding {padding})"
        )
    if kernel == 1:
        return (x[:, ::stride] if stride > 1 else x) @ weight.reshape(weight.shape[0], -1).T
    if stride == 1 and kernel * x.size > TAPS_MIN_SIZE:
        return _conv_by_taps(x, weight, dilation, length)
    return _im2col(x, weight, stride, dilation)


def _conv_by_taps(x: mx.array, weight: mx.array, dilation: int, length: int) -> mx.array:
    """Stride-1 conv of padded ``x`` as one multiply-accumulate (``addmm``) per tap: tap k
    reads the rows ``x[k * dilation : k * dilation + length]``, a contiguous view, so
    nothing is copied (im2col would write kernel x the input)."""
    taps = weight.transpose(1, 2, 0)  # [K, C, O]
    y = x[:, :length] @ taps[0]
    for k in range(1, weight.shape[1]):
        start = k * dilation
        y = mx.addmm(y, x[:, start : start + length], taps[k])
    return y


def _im2col(x: mx.array, weight: mx.array, stride: int, dilation: int) -> mx.array:
    """Conv of padded ``x`` as one ``[T, K*C] @ [K*C, O]`` matmul."""
    out_channels, kernel, channels = weight.shape
    cols = windows(x, 1, kernel, stride, dilation)  # [B, length, K * C]
    return cols @ weight.reshape(out_channels, kernel * channels).T


def windows(x: mx.array, axis: int, kernel: int, stride: int, dilation: int = 1) -> mx.array:
    """The ``kernel`` taps along ``axis`` of a contiguous channels-last array, concatenated
    tap-major into the channel axis: ``[..., L, ..., C] -> [..., L', ..., kernel * C]``.

    One strided view and one copy (concatenating slices is several times slower in MLX
    when the channel chunks are small)."""
    shape, dims = list(x.shape), x.shape[-1]
    strides = [1] * x.ndim
    for i in range(x.ndim - 2, -1, -1):
        strides[i] = strides[i + 1] * shape[i + 1]
    steps = (shape[axis] - dilation * (kernel - 1) - 1) // stride + 1
    view_shape = shape[:axis] + [steps] + shape[axis + 1 : -1] + [kernel, dims]
    view_strides = (
        strides[:axis]
        + [stride * strides[axis]]
        + strides[axis + 1 : -1]
        + [dilation * strides[axis], 1]
    )
    view = mx.as_strided(x, view_shape, view_strides)
    # Copy now: the reshaped view has overlapping rows, which every matmul would copy again.
    return mx.contiguous(view.reshape(*view_shape[:-2], kernel * dims))


def conv_transpose1d(
    x: mx.array,
    weight: mx.array,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    output_padding: int = 0,
) -> mx.array:
    """Same as ``mx.conv_transpose1d`` (x ``[B, T, C]``, weight ``[O, K, C]``)."""
    if dilation != 1:
        return mx.conv_transpose1d(x, weight, stride, padding, dilation, output_padding)
    out_channels, kernel, in_channels = weight.shape
    batch, steps, channels = x.shape
    if channels != in_channels:
        raise ValueError(
            f"conv_transpose1d: input has {channels} channels, the weight expects "
            f"{in_channels}; inputs are channels-last [batch, time, channels]"
        )
    # Input step j, tap k lands on output position j * stride + k - padding. Pad the
    # kernel to `blocks * stride` taps so each block of `stride` taps covers one input
    # step's output window; block r is then shifted by r input steps and summed.
    blocks = math.ceil(kernel / stride)
    w = weight.transpose(2, 1, 0)  # [C, K, O]
    if blocks * stride != kernel:
        w = mx.pad(w, [(0, 0), (0, blocks * stride - kernel), (0, 0)])
    z = x.reshape(batch * steps, channels) @ w.reshape(channels, blocks * stride * out_channels)
    z = z.reshape(batch, steps, blocks, stride * out_channels)
    full = None
    for r in range(blocks):
        part = mx.pad(z[:, :, r], [(0, 0), (r, blocks - 1 - r), (0, 0)])
        full = part if full is None else full + part
    full = full.reshape(batch, (steps + blocks - 1) * stride, out_channels)
    length = (steps - 1) * stride - 2 * padding + kernel + output_padding
    if padding + length > full.shape[1]:
        full = mx.pad(full, [(0, 0), (0, padding + length - full.shape[1]), (0, 0)])
    return full[:, padding : padding + length]


class Conv1d(nn.Conv1d):
    """``mlx.nn.Conv1d`` computed by im2col + matmul (fast for dilated kernels on CPU)."""

    def __call__(self, x: mx.array) -> mx.array:
        y = conv1d(x, self.weight, self.stride, self.padding, self.dilation, self.groups)
        if "bias" in self:
            y = y + self.bias
        return y


class ConvTranspose1d(nn.ConvTranspose1d):
    """``mlx.nn.ConvTranspose1d`` computed by matmul + overlap-add."""

    def __call__(self, x: mx.array) -> mx.array:
        y = conv_transpose1d(
            x, self.weight, self.stride, self.padding, self.dilation, self.output_padding
        )
        if "bias" in self:
            y = y + self.bias
        return y

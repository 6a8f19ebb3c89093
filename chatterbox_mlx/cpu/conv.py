"""Convolutions as BLAS products, for MLX's CPU backend.

MLX's CPU kernels for dilated ``conv1d`` and for ``conv_transpose1d`` are direct loops,
about 50x slower than a matrix product of the same size, and its undilated conv1d (like
im2col) spends most of its time copying the input once per tap. The functions here
compute the same results, to float32 rounding:

- ``conv1d`` with stride 1 on large inputs (HiFT): one BLAS multiply-accumulate per tap
  on a shifted view of the input (24000 steps x 64 x 64, kernel 11: 14 ms against 59 for
  ``mx.conv1d`` or im2col); otherwise im2col (one strided copy of the taps) then
  ``[T, K*C] @ [K*C, O]``, cheaper than K products when the input is small.
- ``conv_transpose1d``: ``[T, C] @ [C, K*O]`` gives every tap's contribution, which is
  then overlap-added at stride ``stride``; with a BLAS loaded, each block of ``stride``
  taps is one ``sgemm`` accumulating into its shifted rows of the output, so nothing is
  overlap-added (HiFT's ``ups.2``: 20 -> 8 ms).
- ``conv2d`` (CAMPPlus's head): the taps along the inner axis are gathered once, each tap
  along the outer axis is then a contiguous slice, so the conv is k matmuls, no k^2 im2col,
  computed channels first (3-4x faster on the head's 32-channel shapes).
- ``snake_conv1d`` (HiFT's residual blocks, Snake then a stride-1 conv): the two fused
  over blocks of about 1 MB of time steps, the taps as ``sgemm`` calls accumulating
  into the output block, padding and bias and the residual folded in (HiFT for 4 s of
  audio 0.85 -> 0.72 s; each separate pass of Snake, padding, bias and residual costs
  little alone, but between cache-sized products they add up).
- ``fsmn_memory`` (S3Tokenizer): a depthwise convolution plus its input, in numpy a block
  of rows at a time, in cache (20-27 -> 6.5 ms per layer; 3x the MLX loop).

Only ``chatterbox_mlx.models.layers`` calls these, after checking the shapes; on a GPU it runs
``mx.conv1d`` / ``mx.conv_transpose1d`` / ``mx.conv2d`` and the MLX FSMN loop instead.
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np

from . import blas
from .activations import snake_into
from .arrays import numpy_buffer

TAPS_MIN_SIZE = 2**22  # im2col copies below this many elements are cheaper than K matmuls


def conv1d(
    x: mx.array, weight: mx.array, stride: int, padding: int, dilation: int, length: int
) -> mx.array:
    """``mx.conv1d`` without groups (x ``[B, T, C]``, weight ``[O, K, C]``) producing
    ``length`` output steps."""
    kernel = weight.shape[1]
    if padding:
        x = mx.pad(x, [(0, 0), (padding, padding), (0, 0)])
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
    cols = _windows(x, 1, kernel, stride, dilation)  # [B, length, K * C]
    return cols @ weight.reshape(out_channels, kernel * channels).T


def _windows(x: mx.array, axis: int, kernel: int, stride: int, dilation: int = 1) -> mx.array:
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
    x: mx.array, weight: mx.array, stride: int, padding: int, output_padding: int
) -> mx.array:
    """``mx.conv_transpose1d`` without dilation (x ``[B, T, C]``, weight ``[O, K, C]``)."""
    out_channels, kernel, channels = weight.shape
    batch, steps, _ = x.shape
    # Input step j, tap k lands on output position j * stride + k - padding. Pad the
    # kernel to `blocks * stride` taps so each block of `stride` taps covers one input
    # step's output window; block r is then shifted by r input steps and summed.
    blocks = math.ceil(kernel / stride)
    w = weight.transpose(2, 1, 0)  # [C, K, O]
    if blocks * stride != kernel:
        w = mx.pad(w, [(0, 0), (0, blocks * stride - kernel), (0, 0)])
    length = (steps - 1) * stride - 2 * padding + kernel + output_padding
    if (y := _conv_transpose_in_place(x, w, blocks, padding, length)) is not None:
        return y
    z = x.reshape(batch * steps, channels) @ w.reshape(channels, blocks * stride * out_channels)
    z = z.reshape(batch, steps, blocks, stride * out_channels)
    full = None
    for r in range(blocks):
        part = mx.pad(z[:, :, r], [(0, 0), (r, blocks - 1 - r), (0, 0)])
        full = part if full is None else full + part
    full = full.reshape(batch, (steps + blocks - 1) * stride, out_channels)
    if padding + length > full.shape[1]:
        full = mx.pad(full, [(0, 0), (0, padding + length - full.shape[1]), (0, 0)])
    return full[:, padding : padding + length]


def _conv_transpose_in_place(
    x: mx.array, taps: mx.array, blocks: int, padding: int, length: int
) -> mx.array | None:
    """The overlap-add of ``conv_transpose1d`` done by BLAS: with the output seen as rows
    of ``stride`` steps, block r of the padded taps adds ``x @ taps_r`` to rows r.., one
    ``sgemm`` accumulating in place per block; None where no BLAS is loaded or not
    float32."""
    gemm = blas.sgemm()
    if gemm is None or x.dtype != mx.float32 or taps.dtype != mx.float32:
        return None
    values = np.ascontiguousarray(numpy_buffer(x))
    w = np.ascontiguousarray(numpy_buffer(taps))  # [C, blocks * stride, O]
    batch, steps, channels = values.shape
    row = w.shape[1] // blocks * w.shape[2]  # stride * O values per output row
    full = np.zeros((batch, steps + blocks - 1, row), np.float32)
    row_major, no_trans = 101, 111
    for b in range(batch):
        for r in range(blocks):
            gemm(row_major, no_trans, no_trans, steps, row, channels, 1.0,
                 values[b].ctypes.data, channels, w.ctypes.data + 4 * r * row, blocks * row,
                 1.0, full[b, r:].ctypes.data, row)  # fmt: skip
    full = full.reshape(batch, -1, w.shape[2])
    if padding + length > full.shape[1]:
        full = np.pad(full, [(0, 0), (0, padding + length - full.shape[1]), (0, 0)])
    return mx.array(full[:, padding : padding + length])


def conv2d(x: mx.array, weight: mx.array, inner_stride: int, padding: tuple[int, int]):
    """``mx.conv2d`` with stride ``(1, inner_stride)``: x ``[B, H, W, C]``, weight
    ``[O, KH, KW, C]`` (CAMPPlus: H is time, W frequency)."""
    out_dims, k_outer, k_inner, in_dims = weight.shape
    if any(padding):
        x = mx.pad(x, [(0, 0), (padding[0], padding[0]), (padding[1], padding[1]), (0, 0)])
    cols = _windows(x, 2, k_inner, inner_stride)  # [B, H + 2 pad, W', k_inner * C]
    batch, height, width, taps = cols.shape
    rows = height - k_outer + 1
    flat = cols.reshape(batch, height * width, taps)
    weight = weight.reshape(out_dims, k_outer, k_inner * in_dims)
    # Channels first, [O, k_inner * C] @ [k_inner * C, rows * W']: with O and k_inner * C
    # small (32, 96), BLAS runs this orientation 3-4x faster than [rows * W', .] @ [., O].
    y = weight[:, 0] @ flat[:, : rows * width].swapaxes(1, 2)
    for i in range(1, k_outer):
        shifted = flat[:, i * width : (i + rows) * width].swapaxes(1, 2)  # time tap i
        y = mx.addmm(y, weight[:, i], shifted)
    return y.swapaxes(1, 2).reshape(batch, rows, width, out_dims)


def fsmn_memory(x: mx.array, weight: mx.array, left: int, right: int) -> mx.array:
    """``x`` plus its depthwise convolution over time of float32 ``x [B, T, C]``,
    ``weight [C, K]``, zero-padded by ``left``/``right`` steps: tap by tap in order, 64
    time steps at a time."""
    values = numpy_buffer(x)
    taps = np.ascontiguousarray(numpy_buffer(weight).T)  # [K, C]
    padded = np.pad(values, [(0, 0), (left, right), (0, 0)])
    rows = 64
    out = values.copy()
    product = np.empty((rows, out.shape[-1]), np.float32)
    for b in range(out.shape[0]):
        for first in range(0, out.shape[1], rows):
            block = out[b, first : first + rows]
            scratch = product[: len(block)]
            for k, tap in enumerate(taps):
                np.multiply(padded[b, first + k : first + k + len(block)], tap, out=scratch)
                block += scratch
    return mx.array(out)


SNAKE_CONV_BLOCK_BYTES = 1 << 20  # Snake output per block of time steps: half of one core's L2


def snake_conv1d(
    x: mx.array,
    alpha: mx.array,
    inverse_alpha: mx.array,
    weight: mx.array,
    bias: mx.array | None,
    padding: int,
    dilation: int,
    residual: mx.array | None,
) -> mx.array | None:
    """``residual + bias + conv1d(snake(x))`` (stride 1, zero ``padding`` on both sides)
    of float32 ``x [B, T, C]``, ``weight [O, K, C]``, in one pass over blocks of time
    steps: each block's Snake output (and its halo of ``dilation * (K - 1)`` steps) is
    written once into a buffer that stays in cache, and every tap is one BLAS ``sgemm``
    accumulating into the output block, which starts as ``residual + bias``. Nothing is
    padded, and no per-tap or per-op pass goes through memory. None where no BLAS with
    ``cblas_sgemm`` is loaded."""
    gemm = blas.sgemm()
    if gemm is None:
        return None
    values = numpy_buffer(x)
    taps = np.ascontiguousarray(numpy_buffer(weight))  # [O, K, C]: tap k is W[:, k, :]
    scale, inverse = numpy_buffer(alpha), numpy_buffer(inverse_alpha)
    batch, steps, channels = values.shape
    out_dims, kernel, _ = taps.shape
    halo = dilation * (kernel - 1)
    length = steps + 2 * padding - halo
    shift = np.zeros(out_dims, np.float32) if bias is None else numpy_buffer(bias)
    skip = None if residual is None else numpy_buffer(residual)
    out = np.empty((batch, length, out_dims), np.float32)
    rows = max(1, SNAKE_CONV_BLOCK_BYTES // (4 * channels) - halo)
    buffer = np.empty((rows + halo, channels), np.float32)
    row_major, no_trans, trans = 101, 111, 112
    for b in range(batch):
        for first in range(0, length, rows):
            count = min(rows, length - first)
            target = out[b, first : first + count]  # starts as residual + bias, in cache
            if skip is None:
                target[:] = shift
            else:
                np.add(skip[b, first : first + count], shift, out=target)
            block = buffer[: count + halo]
            lo, hi = first - padding, first - padding + count + halo  # its input steps
            start = min(max(lo, 0), hi)
            stop = max(min(hi, steps), start)
            block[: start - lo] = 0.0
            block[stop - lo :] = 0.0
            snake_into(values[b, start:stop], scale, inverse, block[start - lo : stop - lo])
            for k in range(kernel):
                gemm(row_major, no_trans, trans, count, out_dims, channels, 1.0,
                     block.ctypes.data + 4 * k * dilation * channels, channels,
                     taps.ctypes.data + 4 * k * channels, kernel * channels, 1.0,
                     target.ctypes.data, out_dims)  # fmt: skip
    return mx.array(out)

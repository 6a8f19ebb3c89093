"""The layers the networks share, each dispatching to a CPU-only path or to MLX.

Where the default device is the CPU and the CPU kernels are on (``cpu_kernels_active``),
each function here runs the faster CPU formulation from ``chatterbox_mlx.cpu``; elsewhere
it runs the MLX formulation, the one Apple GPUs run. Both compute the same result to
float32 rounding (``tests/test_layers.py`` checks every pair), so a model that calls these
reads as a plain MLX model. ``CHATTERBOX_MLX_CPU_KERNELS=off`` makes the CPU run the GPU
formulations too.

Which function takes which CPU path, its MLX formulation and the test that compares the two
are listed once, in DEVELOPING.md ("CPU boundary").

The convolutions' BLAS formulations were measured on the CPU only; no measurement shows
them helping on a GPU, so the GPU runs MLX's own convolutions.

``compilable()`` says whether a function built from these layers can go through
``mx.compile``: the numpy paths evaluate their inputs, which a traced graph cannot.
"""

from __future__ import annotations

from functools import partial

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .. import cpu
from ..cpu import activations as _activations
from ..cpu import attention as _attention
from ..cpu import conv as _conv
from ..cpu import linear as _linear
from ..cpu import lstm as _lstm


def default_device_is_cpu() -> bool:
    """Whether MLX computes on its CPU backend (the default device is the CPU)."""
    return mx.default_device() == mx.cpu


def cpu_kernels_active() -> bool:
    """Whether the CPU-only paths run now: the CPU kernels are on
    (``CHATTERBOX_MLX_CPU_KERNELS``, ``chatterbox_mlx.cpu.switch``) and the default device
    is the CPU."""
    return cpu.enabled() and default_device_is_cpu()


def overlaps_evaluation() -> bool:
    """Whether building the next step's graph before reading back this step's result lets
    the device compute meanwhile (``mx.async_eval``, as mlx-lm's decode loop does): not
    while the CPU kernels are active, whose ``Linear`` evaluates its input eagerly."""
    return not cpu_kernels_active()


def warn_if_quantized_matmul_is_slow(bits: int) -> None:
    """MLX's quantized matmul is unoptimized on its CPU backend: say so once per load."""
    if default_device_is_cpu():
        import warnings

        warnings.warn(
            f"T3 quantized to {bits} bits on MLX's CPU backend, whose quantized matmul is "
            "unoptimized: about 15x slower per token than float32 (measured on x86). "
            "Quantization pays off on Apple GPUs; on the CPU use float32.",
            stacklevel=3,
        )


def compilable() -> bool:
    """Whether a function of these layers can be traced by ``mx.compile``: not while the
    CPU kernels are active, whose numpy paths evaluate their inputs and compute outside
    MLX's graph."""
    return not cpu_kernels_active()


def _float32(*arrays: mx.array | None) -> bool:
    return all(a is None or a.dtype == mx.float32 for a in arrays)


def _numpy_path(*arrays: mx.array | None) -> bool:
    """Whether a numpy CPU path applies: active, and every input float32 (numpy has no
    bfloat16, and half precision gains nothing there)."""
    return cpu_kernels_active() and _float32(*arrays)


def attention(
    q: mx.array, k: mx.array, v: mx.array, scale: float, bias: mx.array | str | None = None
) -> mx.array:
    """softmax(q k^T * scale + bias) v over ``[B, H, T, D]``; ``bias`` is additive and
    broadcasts to ``[B, H, T, S]``, or ``"causal"`` (as ``mx.fast``'s: the last query sees
    every key). On the CPU in numpy; a single query (T3's decode step) by the C kernel
    where it was built (``cpu/decode.c``), else ``mx.fast``, faster there than numpy (0.11
    against 0.19 ms over 400 keys and 16 heads)."""
    if isinstance(bias, str) and bias != "causal":
        raise ValueError(f'attention: bias must be an array, "causal" or None, got {bias!r}')
    if isinstance(bias, str) and q.shape[2] > k.shape[2]:
        raise ValueError(
            f'attention: "causal" needs at least as many keys as queries, got {q.shape[2]} '
            f"queries and {k.shape[2]} keys (the first queries would see no key)"
        )
    array_bias = None if isinstance(bias, str) else bias
    if _numpy_path(q, k, v, array_bias):
        if q.shape[2] > 1:
            return _attention.attention(q, k, v, scale, bias)
        if (out := _attention.single_query(q, k, v, scale, array_bias)) is not None:
            return out
    return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=bias)


@mx.compile
def _mish(x: mx.array) -> mx.array:
    # x * tanh(softplus(x)) with one exp: tanh(log(1 + e)) = n / (n + 2), n = e (e + 2);
    # beyond x = 20 the ratio is 1 in float32.
    e = mx.exp(mx.minimum(x, 20.0))
    n = e * (e + 2.0)
    return x * n / (n + 2.0)


def elu(x: mx.array) -> mx.array:
    """torch's ELU (alpha 1), with expm1 as torch computes it. On the CPU in numpy (MLX's
    ``expm1`` is scalar code there: 1.5 ms for HiFT's 200 x 512 F0 features)."""
    if _numpy_path(x):
        return _activations.elu(x)
    return mx.where(x > 0, x, mx.expm1(x))


def sin(x: mx.array) -> mx.array:
    """``mx.sin``; on the CPU numpy's (MLX's is scalar code there: 10 ms for HiFT's sine
    source over 4 s of audio, numpy's 0.6 ms)."""
    if _numpy_path(x):
        return _activations.sin(x)
    return mx.sin(x)


def tanh(x: mx.array) -> mx.array:
    """``mx.tanh``; on the CPU numpy's (MLX's is scalar code there: 17 ms for 300 x 4096
    values, numpy's 0.2 ms)."""
    if _numpy_path(x):
        return _activations.tanh(x)
    return mx.tanh(x)


def silu(x: mx.array) -> mx.array:
    """SiLU (swish), x * sigmoid(x). On the CPU in numpy (MLX's ``sigmoid`` is scalar code
    there: 16 ms for 300 x 4096 values, numpy's 0.6 ms)."""
    if _numpy_path(x):
        return _activations.silu(x)
    return nn.silu(x)


def gelu_approx(x: mx.array) -> mx.array:
    """GELU's tanh approximation (GPT-2's ``gelu_new``). On the CPU in numpy (MLX's
    ``tanh`` is scalar code there: 26 ms for 300 x 4096 values, numpy's 0.7 ms)."""
    if _numpy_path(x):
        return _activations.gelu_approx(x)
    return nn.gelu_approx(x)


_NORMAL_LOW = float(np.nextafter(np.float32(-1.0), np.float32(0.0)))  # mx.random.normal's


def random_normal(shape: tuple[int, ...], key: mx.array | None = None) -> mx.array:
    """``mx.random.normal(shape, key=key)`` (float32). On the CPU the same uniform draw,
    then erfinv in numpy (MLX's is scalar there: 17 ms for HiFT's source noise over 4 s
    of audio, 6 ms this way); equal to float32 rounding."""
    if not cpu_kernels_active():
        return mx.random.normal(shape, key=key)
    uniform = mx.random.uniform(low=_NORMAL_LOW, high=1.0, shape=shape, key=key)
    return _activations.normal_from_uniform(uniform)


def polar_spectrum(x: mx.array, bins: int, max_magnitude: float) -> mx.array:
    """HiFT's output channels as a complex spectrum: magnitude ``exp(x[..., :bins])``
    clipped at ``max_magnitude``, phase ``sin(x[..., bins:])``, as the reference's
    ``_istft`` builds ``magnitude * (cos(phase) + i sin(phase))``. On the CPU in numpy
    (MLX's ``exp``/``sin``/``cos`` and its complex arithmetic are scalar code there: 14 ms
    for 4 s of audio, numpy's 0.8)."""
    if _numpy_path(x):
        return _activations.polar_spectrum(x, bins, max_magnitude)
    magnitude = mx.minimum(mx.exp(x[..., :bins]), max_magnitude)
    phase = mx.sin(x[..., bins:])
    return magnitude * mx.cos(phase) + 1j * (magnitude * mx.sin(phase))


# The MLX formulation's fixed point: its int64 sum holds 2^31 cycles (110 hours of a 5.4 kHz
# harmonic); past 2^24 the float32 total has no fraction left, in the reference too.
PHASE_FRACTION_BITS = 32


def cycle_phase(increments: mx.array) -> mx.array:
    """Fraction of a cycle reached, ``cumsum(increments, axis=1) % 1`` of non-negative
    ``increments``, as torch's CPU computes it for float32: summed in float64, rounded to
    float32, then the fraction (a float32 sum drifts by about 1e-3 cycles after a few
    seconds). On the CPU in numpy, in float64.

    GPUs have no float64, so the MLX formulation sums in fixed point: each increment
    rounded to a multiple of 2^-32 (exact from 2^-9 up, which covers every harmonic of an
    F0 above 47 Hz at 24 kHz), the running sum in int64, which is exact in any order (a
    GPU's parallel scan included), then rounded to float32 as the float64 sum is. Where
    both sums are exact the result is the same bit for bit; otherwise it is within 2^-33
    per rounded increment plus one float32 step of the total. A NaN or infinite increment
    makes every later phase NaN, as in the float64 sum."""
    if _numpy_path(increments):
        return _activations.cycle_phase(increments)
    increments = increments.astype(mx.float32)  # a half-precision HiFT's too: 2^32 fits
    finite = mx.isfinite(increments)
    # Past 2^30 cycles a step, clipped so that the int64 cast cannot overflow: such a
    # phase is noise in the reference too.
    bound = float(2 ** (62 - PHASE_FRACTION_BITS))
    clean = mx.where(finite, mx.clip(increments, -bound, bound), 0.0)
    scale = float(2**PHASE_FRACTION_BITS)
    fixed = mx.round(clean * scale).astype(mx.int64)
    total = mx.cumsum(fixed, axis=1).astype(mx.float32) * (1.0 / scale)
    invalid = mx.cummax((~finite).astype(mx.int32), axis=1) > 0
    return mx.where(invalid, mx.nan, total - mx.floor(total))


def mish(x: mx.array) -> mx.array:
    """x * tanh(softplus(x))."""
    if _numpy_path(x):
        return _activations.mish(x)
    return _mish(x)


@partial(mx.compile, shapeless=True)
def _snake(x: mx.array, alpha: mx.array, inverse_alpha: mx.array) -> mx.array:
    return x + inverse_alpha * mx.square(mx.sin(x * alpha))


def _inverse(alpha: mx.array) -> mx.array:
    """Snake's 1 / alpha per channel; as the reference, 1e-9 is added to alpha."""
    return 1.0 / (alpha + 1e-9)


def snake(x: mx.array, alpha: mx.array) -> mx.array:
    """Snake, x + sin^2(alpha x) / alpha, one ``alpha`` per channel (last axis)."""
    inverse_alpha = _inverse(alpha)
    if _numpy_path(x, alpha):
        return _activations.snake(x, alpha, inverse_alpha)
    return _snake(x, alpha, inverse_alpha)


def snake_conv1d(
    x: mx.array, alpha: mx.array, conv: nn.Conv1d, residual: mx.array | None = None
) -> mx.array:
    """``residual + conv(snake(x, alpha))`` for a stride-1 ``Conv1d`` without groups (HiFT's
    residual blocks). On the CPU one fused pass over blocks of time steps
    (``conv.snake_conv1d``); elsewhere ``snake`` and ``Conv1d`` as they are."""
    weight, bias = conv.weight, conv.get("bias")
    if conv.stride != 1 or conv.groups != 1:
        raise ValueError("snake_conv1d: only stride 1 without groups")
    length = _conv_length(x.shape[1], weight.shape[1], 1, conv.padding, conv.dilation)
    out_shape = (x.shape[0], length, weight.shape[0])
    if residual is not None and tuple(residual.shape) != out_shape:
        raise ValueError(
            f"snake_conv1d: the residual has shape {tuple(residual.shape)}, the conv's "
            f"output {out_shape}"
        )
    if _numpy_path(x, alpha, weight) and x.shape[-1] == weight.shape[-1]:
        y = _conv.snake_conv1d(
            x, alpha, _inverse(alpha), weight, bias, conv.padding, conv.dilation, residual
        )
        if y is not None:
            return y
    y = conv(snake(x, alpha))
    return y if residual is None else residual + y


def gelu(x: mx.array) -> mx.array:
    """Exact (erf) GELU, as torch's default. On the CPU an erf polynomial (``mx.erf`` is
    scalar code there)."""
    if cpu_kernels_active():
        return _activations.gelu(x)
    return nn.gelu(x)


class GELU(nn.Module):
    def __call__(self, x: mx.array) -> mx.array:
        return gelu(x)


def _fsmn_memory(x: mx.array, weight: mx.array, left: int, right: int) -> mx.array:
    length = x.shape[1]
    padded = mx.pad(x, [(0, 0), (left, right), (0, 0)])
    out = x
    for k in range(weight.shape[1]):
        out = out + padded[:, k : k + length] * weight[:, k]
    return out


def fsmn_memory(x: mx.array, weight: mx.array, left: int, right: int) -> mx.array:
    """An FSMN memory block: ``x [B, T, C]`` plus its depthwise convolution over time
    (``weight [C, K]``, ``left``/``right`` zero steps of padding), as a sum of shifted
    products, tap by tap in order."""
    if _numpy_path(x, weight):
        return _conv.fsmn_memory(x, weight, left, right)
    return _fsmn_memory(x, weight, left, right)


def lstm_recurrence(x_gates: mx.array, weight_hh: mx.array) -> mx.array:
    """Hidden states ``[B, T, H]`` of one LSTM layer (torch's gate order i, f, g, o, zero
    initial state) from its input gates ``x_gates [B, T, 4H]`` (the input projection and
    both biases added) and ``weight_hh [4H, H]``. On the CPU in numpy, a step at a time
    (``lstm.lstm_recurrence``); elsewhere the same steps as an MLX graph."""
    batch, steps, width = x_gates.shape
    if width % 4 or tuple(weight_hh.shape) != (width, width // 4):
        raise ValueError(
            f"lstm_recurrence: gates [B, T, {width}] need weight_hh [{width}, {width // 4}] "
            f"(4 gates of the hidden size), got {tuple(weight_hh.shape)}"
        )
    if _numpy_path(x_gates, weight_hh):
        return _lstm.lstm_recurrence(x_gates, weight_hh)
    w_hh_t = weight_hh.T
    h = mx.zeros((batch, width // 4), dtype=x_gates.dtype)
    c = mx.zeros_like(h)
    outputs = []
    for t in range(steps):
        i, f, g, o = mx.split(x_gates[:, t] + h @ w_hh_t, 4, axis=-1)
        c = mx.sigmoid(f) * c + mx.sigmoid(i) * mx.tanh(g)
        h = mx.sigmoid(o) * mx.tanh(c)
        outputs.append(h)
    return mx.stack(outputs, axis=1)


class Linear(nn.Linear):
    """``mlx.nn.Linear``; on the CPU, decode-sized inputs (up to ``DECODE_ROWS`` rows) take
    ``chatterbox_mlx.cpu.linear``."""

    def __call__(self, x: mx.array) -> mx.array:
        if x.size // x.shape[-1] <= _linear.DECODE_ROWS and cpu_kernels_active():
            return _linear.linear(x, self.weight, self.get("bias"))
        return super().__call__(x)


def _conv_length(steps: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Output steps of a 1-D convolution; a ValueError when the input is too short."""
    span = dilation * (kernel - 1) + 1
    length = (steps + 2 * padding - span) // stride + 1
    if length <= 0:
        raise ValueError(
            f"conv1d: input of {steps} steps is shorter than the kernel span {span} "
            f"(padding {padding})"
        )
    return length


def conv1d(
    x: mx.array,
    weight: mx.array,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    groups: int = 1,
) -> mx.array:
    """Same as ``mx.conv1d`` (x ``[B, T, C]``, weight ``[O, K, C // groups]``)."""
    if groups != 1:
        return mx.conv1d(x, weight, stride, padding, dilation, groups)
    kernel, in_channels = weight.shape[1:]
    if x.shape[-1] != in_channels:
        raise ValueError(
            f"conv1d: input has {x.shape[-1]} channels, the weight expects {in_channels}; "
            "inputs are channels-last [batch, time, channels]"
        )
    length = _conv_length(x.shape[1], kernel, stride, padding, dilation)
    if cpu_kernels_active():
        return _conv.conv1d(x, weight, stride, padding, dilation, length)
    return mx.conv1d(x, weight, stride, padding, dilation)


def conv_transpose1d(
    x: mx.array,
    weight: mx.array,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    output_padding: int = 0,
) -> mx.array:
    """Same as ``mx.conv_transpose1d`` (x ``[B, T, C]``, weight ``[O, K, C]``)."""
    if x.shape[-1] != weight.shape[-1]:
        raise ValueError(
            f"conv_transpose1d: input has {x.shape[-1]} channels, the weight expects "
            f"{weight.shape[-1]}; inputs are channels-last [batch, time, channels]"
        )
    if dilation == 1 and cpu_kernels_active():
        return _conv.conv_transpose1d(x, weight, stride, padding, output_padding)
    return mx.conv_transpose1d(x, weight, stride, padding, dilation, output_padding)


def conv2d(
    x: mx.array,
    weight: mx.array,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
) -> mx.array:
    """Same as ``mx.conv2d`` (x ``[B, H, W, C]``, weight ``[O, KH, KW, C]``); on the CPU
    path the stride along H must be 1 (CAMPPlus strides frequency only)."""
    if stride[0] == 1 and cpu_kernels_active():
        return _conv.conv2d(x, weight, stride[1], padding)
    return mx.conv2d(x, weight, stride, padding)


class Conv1d(nn.Conv1d):
    """``mlx.nn.Conv1d`` through ``conv1d`` (BLAS formulations on the CPU)."""

    def __call__(self, x: mx.array) -> mx.array:
        y = conv1d(x, self.weight, self.stride, self.padding, self.dilation, self.groups)
        if "bias" in self:
            y = y + self.bias
        return y


class ConvTranspose1d(nn.ConvTranspose1d):
    """``mlx.nn.ConvTranspose1d`` through ``conv_transpose1d`` (matmul + overlap-add on the
    CPU)."""

    def __call__(self, x: mx.array) -> mx.array:
        y = conv_transpose1d(
            x, self.weight, self.stride, self.padding, self.dilation, self.output_padding
        )
        if "bias" in self:
            y = y + self.bias
        return y

"""Elementwise math for MLX's CPU backend, whose ``exp``, ``expm1``, ``sin``, ``tanh``,
``sigmoid`` and ``erf`` are scalar code: ELU, Mish, Snake, sine, tanh, SiLU and GPT-2's
tanh GELU through numpy's vectorised functions (3-40x faster here; Snake was 40% of the
vocoder's time, the tanh GELU 35% of Turbo T3's prefill), exact GELU through an erf polynomial
that ``mx.compile`` fuses, the sine source's phase (a float64 running sum in numpy:
14 -> 3 ms for 4 s of audio) and noise (MLX's erfinv polynomial: 17 -> 6 ms), and HiFT's
output spectrum (14 -> 0.8 ms). The GPU formulations are in ``chatterbox_mlx.models.layers``.
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np

from .arrays import numpy_buffer

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def mish(x: mx.array) -> mx.array:
    """x * tanh(softplus(x)) of float32 ``x`` with one exp: tanh(log(1 + e)) = n / (n + 2),
    n = e (e + 2). Beyond x = 20 the ratio is 1 in float32."""
    xn = numpy_buffer(x)
    e = np.exp(np.minimum(xn, 20.0))
    n_plus_2 = e + 2.0
    e *= n_plus_2  # n
    np.add(e, 2.0, out=n_plus_2)
    e *= xn
    e /= n_plus_2
    return mx.array(e)


def elu(x: mx.array) -> mx.array:
    """ELU (alpha 1) of float32 ``x``: x where positive, else expm1(x)."""
    xn = numpy_buffer(x)
    y = np.expm1(np.minimum(xn, 0.0))
    np.copyto(y, xn, where=xn > 0)
    return mx.array(y)


def sin(x: mx.array) -> mx.array:
    """sin of float32 ``x``."""
    return mx.array(np.sin(numpy_buffer(x)))


def tanh(x: mx.array) -> mx.array:
    """tanh of float32 ``x``."""
    return mx.array(np.tanh(numpy_buffer(x)))


def silu(x: mx.array) -> mx.array:
    """x * sigmoid(x) of float32 ``x``, as x / (1 + exp(-x))."""
    xn = numpy_buffer(x)
    y = np.negative(xn)
    with np.errstate(over="ignore"):  # below x = -88 exp(-x) is inf, and x / inf is -0
        np.exp(y, out=y)
    y += 1.0
    np.divide(xn, y, out=y)
    return mx.array(y)


def gelu_approx(x: mx.array) -> mx.array:
    """The tanh approximation of GELU (GPT-2's ``gelu_new``) of float32 ``x``:
    0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))."""
    xn = numpy_buffer(x)
    with np.errstate(over="ignore"):  # past |x| = 1e19: tanh(+-inf), as MLX's x^3 gives
        y = np.square(xn)
        y *= np.float32(0.044715 * _SQRT_2_OVER_PI)
        y += np.float32(_SQRT_2_OVER_PI)
        y *= xn
    np.tanh(y, out=y)
    y += 1.0
    y *= xn
    y *= 0.5
    return mx.array(y)


# MLX's erfinv (mlx/backend/cpu/simd/math.h, after Giles): a * p(log(1 - a^2)), with one
# polynomial in the tails (|log(1 - a^2)| > 6.125) and another elsewhere.
_ERFINV_TAILS = (3.03697567e-10, 2.93243101e-8, 1.22150334e-6, 2.84108955e-5, 3.93552968e-4,
                 3.02698812e-3, 4.83185798e-3, -2.64646143e-1, 8.40016484e-1)  # fmt: skip
_ERFINV_CENTRE = (5.43877832e-9, 1.43285448e-7, 1.22774793e-6, 1.12963626e-7, -5.61530760e-5,
                  -1.47697632e-4, 2.31468678e-3, 1.15392581e-2, -2.32015476e-1,
                  8.86226892e-1)  # fmt: skip
_ERFINV_THRESHOLD = 6.125
NORMAL_BLOCK = 1 << 16  # samples per block: the polynomial's passes stay in cache


def _horner(coefficients: tuple[float, ...], t: np.ndarray) -> np.ndarray:
    p = np.full_like(t, coefficients[0])
    for c in coefficients[1:]:
        p *= t
        p += np.float32(c)
    return p


def normal_from_uniform(uniform: mx.array) -> mx.array:
    """``sqrt(2) erfinv(u)`` of float32 ``u`` in (-1, 1), MLX's formula for
    ``mx.random.normal`` (which draws ``u`` with ``mx.random.uniform``), vectorised."""
    u = numpy_buffer(uniform).reshape(-1)
    out = np.empty(u.shape, np.float32)
    sqrt2 = np.float32(np.sqrt(2.0))
    for first in range(0, u.size, NORMAL_BLOCK):
        a = u[first : first + NORMAL_BLOCK]
        wide = a.astype(np.float64)
        t = np.log((1.0 - wide * wide).astype(np.float32))  # 1 - a^2 rounded once, as fma
        p = _horner(_ERFINV_CENTRE, t)
        tails = t < -_ERFINV_THRESHOLD
        if tails.any():
            p[tails] = _horner(_ERFINV_TAILS, t[tails])
        np.multiply(a, p, out=p)
        np.multiply(p, sqrt2, out=out[first : first + NORMAL_BLOCK])
    return mx.array(out.reshape(uniform.shape))


def polar_spectrum(x: mx.array, bins: int, max_magnitude: float) -> mx.array:
    """complex64 ``m * (cos(p) + i sin(p))`` with ``m = min(exp(x[..., :bins]), max)``,
    ``p = sin(x[..., bins:])``, of float32 ``x``."""
    xn = numpy_buffer(x)
    with np.errstate(over="ignore"):  # exp -> inf is clipped, as the reference's
        magnitude = np.minimum(np.exp(xn[..., :bins]), np.float32(max_magnitude))
    phase = np.sin(xn[..., bins:])
    spec = np.empty(magnitude.shape, np.complex64)
    np.multiply(magnitude, np.cos(phase), out=spec.real)
    np.multiply(magnitude, np.sin(phase), out=spec.imag)
    return mx.array(spec)


def cycle_phase(increments: mx.array) -> mx.array:
    """The fractional part of the running sum along axis 1 of float32 ``increments``,
    summed in float64 and rounded to float32 before the fraction is taken. ``t - floor(t)``
    is exact in float32 and equals ``t % 1`` for the non-negative sums of frequencies
    (numpy's float32 remainder is 35x slower)."""
    total = np.cumsum(numpy_buffer(increments), axis=1, dtype=np.float64).astype(np.float32)
    with np.errstate(invalid="ignore"):  # inf - inf: NaN, as the reference's inf % 1
        total -= np.floor(total)
    return mx.array(total)


def snake(x: mx.array, alpha: mx.array, inverse_alpha: mx.array) -> mx.array:
    """x + sin^2(alpha x) * inverse_alpha of float32 ``x [..., C]``, per-channel ``alpha``."""
    xn = numpy_buffer(x)
    y = np.empty(xn.shape, np.float32)
    snake_into(xn, numpy_buffer(alpha), numpy_buffer(inverse_alpha), y)
    return mx.array(y)


def snake_into(x: np.ndarray, alpha: np.ndarray, inverse_alpha: np.ndarray, out: np.ndarray):
    """``out = x + sin^2(alpha x) * inverse_alpha`` in numpy, ``out`` the shape of ``x``."""
    np.multiply(x, alpha, out=out)
    np.sin(out, out=out)
    np.square(out, out=out)
    out *= inverse_alpha
    out += x


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


def _erf(x: mx.array) -> mx.array:
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
def _gelu(x: mx.array) -> mx.array:
    return 0.5 * x * (1.0 + _erf(x * 0.7071067811865476))


def gelu(x: mx.array) -> mx.array:
    """Exact (erf) GELU, as torch's default, with the polynomial erf."""
    return _gelu(x)

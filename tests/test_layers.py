"""The CPU boundary: every CPU-only path in chatterbox_mlx.cpu against the MLX formulation
that chatterbox_mlx.models.layers runs on a GPU, and the switch that turns all of them off.

Tests named ``*_matches_*`` force the CPU paths on (``cpu.switch(True)``), so they check
the formulations whatever CHATTERBOX_MLX_CPU_KERNELS says; the others run the layers as the
environment sets them (CI runs this file with the switch on and off). Both formulations
compute the same sums in a different order (and numpy's sin/exp are within a few ulp of
libm's), so they agree to float32 rounding: errors are relative to the output's max abs
value, tolerance 1e-5.
"""

import collections
import concurrent.futures
import functools
import importlib
import os
import subprocess
import sys

import chatterbox_mlx  # noqa: F401  (loads BLAS before mlx.core)
from chatterbox_mlx import cpu
from chatterbox_mlx.cpu import activations as cpu_activations
from chatterbox_mlx.cpu import attention as cpu_attention
from chatterbox_mlx.cpu import blas
from chatterbox_mlx.cpu import conv as cpu_conv
from chatterbox_mlx.cpu import linear as cpu_linear
from chatterbox_mlx.models import layers

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from tests.helpers.golden import assert_close

RTOL = 1e-5


@pytest.fixture
def cpu_paths():
    """The CPU-only paths on, on the CPU backend (where these tests run)."""
    assert layers.default_device_is_cpu()
    with cpu.switch(True):
        yield


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts, by ``module.function``, the calls of every public function of the CPU kernel
    modules (``cpu.KERNEL_MODULES``); starts with an entry of 0 for each."""
    calls = collections.Counter()
    for name in cpu.KERNEL_MODULES:
        module = importlib.import_module(f"chatterbox_mlx.cpu.{name}")
        for attr, fn in list(vars(module).items()):
            if attr.startswith("_") or getattr(fn, "__module__", None) != module.__name__:
                continue

            @functools.wraps(fn)
            def spy(*args, _fn=fn, _key=f"{name}.{attr}", **kwargs):
                calls[_key] += 1
                return _fn(*args, **kwargs)

            calls[f"{name}.{attr}"] = 0
            monkeypatch.setattr(module, attr, spy)
    return calls


def _inputs(batch, steps, in_ch, out_ch, kernel, seed=0):
    rng = np.random.default_rng(seed)
    x = mx.array(rng.standard_normal((batch, steps, in_ch)).astype(np.float32))
    w = mx.array(rng.standard_normal((out_ch, kernel, in_ch)).astype(np.float32))
    return x, w


# ------------------------------------------------------------------ convolutions


@pytest.mark.parametrize(
    "steps,in_ch,out_ch,kernel,stride,padding,dilation",
    [
        (37, 5, 7, 3, 1, 1, 1),
        (37, 5, 7, 11, 1, 25, 5),  # HiFT ResBlock, dilation 5
        (40, 6, 4, 7, 1, 9, 3),
        (40, 4, 6, 7, 1, 0, 2),
        (41, 6, 4, 3, 1, 3, 3),  # length a multiple of the dilation
        (52, 6, 4, 11, 1, 0, 5),  # 2 outputs: fewer than the 5 phases
        (61, 18, 9, 30, 15, 7, 1),  # HiFT source_downs, stride 15
        (40, 4, 6, 3, 2, 2, 3),  # strided and dilated: im2col
        (41, 5, 3, 4, 3, 0, 2),
        (10, 3, 2, 1, 1, 0, 1),  # kernel 1: one matmul
        (11, 3, 2, 1, 2, 1, 1),  # kernel 1, strided
        (5, 3, 2, 4, 2, 5, 3),  # padding larger than the kernel
    ],
)
@pytest.mark.parametrize("path", ["im2col", "taps"])
def test_cpu_conv1d_matches_mx_conv1d(steps, in_ch, out_ch, kernel, stride, padding, dilation,
                                      path, cpu_paths, monkeypatch):  # fmt: skip
    # stride-1 convs switch to one multiply-accumulate per tap above TAPS_MIN_SIZE elements
    monkeypatch.setattr(cpu_conv, "TAPS_MIN_SIZE", 0 if path == "taps" else 2**62)
    x, w = _inputs(2, steps, in_ch, out_ch, kernel)
    expected = mx.conv1d(x, w, stride, padding, dilation)
    assert_close(layers.conv1d(x, w, stride, padding, dilation), expected, RTOL, "conv1d")


@pytest.mark.slow
def test_cpu_conv1d_matches_mx_conv1d_at_hift_size(cpu_paths, kernel_calls):
    """HiFT's last stage (64 channels, kernel 11, 5 s of audio) takes the per-tap path by
    default."""
    x, w = _inputs(1, 6000 * 5, 64, 64, 11)
    assert 11 * x.size > cpu_conv.TAPS_MIN_SIZE
    expected = mx.conv1d(x, w, 1, 15, 3)
    assert_close(layers.conv1d(x, w, 1, 15, 3), expected, RTOL, "conv1d, per tap")
    assert kernel_calls["conv.conv1d"] == 1


@pytest.mark.parametrize(
    "steps,kernel,stride,padding,output_padding",
    [
        (9, 16, 8, 4, 0),  # HiFT ups: rates 8, 5, 3, kernels 16, 11, 7
        (9, 11, 5, 3, 0),
        (9, 7, 3, 2, 0),
        (9, 3, 1, 1, 0),
        (9, 4, 2, 0, 1),
        (3, 5, 2, 4, 0),
        (9, 2, 3, 0, 0),  # stride larger than the kernel
        (1, 4, 2, 1, 0),
    ],
)
@pytest.mark.parametrize("blas_loaded", [True, False])
def test_cpu_conv_transpose1d_matches_mx(steps, kernel, stride, padding, output_padding,
                                         blas_loaded, cpu_paths, monkeypatch):  # fmt: skip
    """With a BLAS, sgemm accumulating into shifted rows; without, MLX's overlap-add."""
    if not blas_loaded:
        monkeypatch.setattr(blas, "sgemm", lambda: None)
    elif blas.sgemm() is None:
        pytest.skip("no BLAS with cblas_sgemm loaded")
    x, w = _inputs(2, steps, 5, 4, kernel, seed=1)
    expected = mx.conv_transpose1d(x, w, stride, padding, 1, output_padding)
    actual = layers.conv_transpose1d(x, w, stride, padding, 1, output_padding)
    assert_close(actual, expected, RTOL, "conv_transpose1d")


@pytest.mark.parametrize(
    "kernel,stride,padding,in_ch",
    [(3, 1, 1, 1), (3, 2, 1, 4), (1, 2, 0, 4), (3, 1, 0, 3)],  # CAMPPlus's head convs
)
def test_cpu_conv2d_matches_mx_conv2d(kernel, stride, padding, in_ch, cpu_paths):
    rng = np.random.default_rng(6)
    x = mx.array(rng.standard_normal((2, 13, 16, in_ch)).astype(np.float32))
    w = mx.array(rng.standard_normal((5, kernel, kernel, in_ch)).astype(np.float32))
    expected = mx.conv2d(x, w, (1, stride), (padding, padding))
    actual = layers.conv2d(x, w, (1, stride), (padding, padding))
    assert_close(actual, expected, RTOL, "conv2d")


def test_modules_are_drop_in():
    args = dict(in_channels=6, out_channels=4, kernel_size=5, stride=1, padding=4, dilation=2)
    ours, theirs = layers.Conv1d(**args), nn.Conv1d(**args)
    theirs.update(ours.parameters())
    shapes = {k: v.shape for k, v in tree_flatten(ours.parameters())}
    assert shapes == {k: v.shape for k, v in tree_flatten(theirs.parameters())}
    assert isinstance(ours, nn.Conv1d)
    x, _ = _inputs(1, 23, 6, 1, 1, seed=2)
    ours.bias = mx.full((4,), 0.5)
    theirs.bias = ours.bias
    assert_close(ours(x), theirs(x), RTOL, "Conv1d")

    args = dict(in_channels=6, out_channels=4, kernel_size=11, stride=5, padding=3)
    ours, theirs = layers.ConvTranspose1d(**args), nn.ConvTranspose1d(**args)
    theirs.update(ours.parameters())
    assert isinstance(ours, nn.ConvTranspose1d)
    ours.bias = mx.full((4,), -0.25)
    theirs.bias = ours.bias
    assert_close(ours(x), theirs(x), RTOL, "ConvTranspose1d")


def test_no_bias_and_groups():
    conv = layers.Conv1d(8, 4, 3, padding=1, groups=2, bias=False)
    assert "bias" not in conv
    x, _ = _inputs(1, 12, 8, 1, 1, seed=3)
    expected = mx.conv1d(x, conv.weight, 1, 1, 1, 2)
    assert_close(conv(x), expected, RTOL, "grouped Conv1d")


def test_channel_mismatch_is_named():
    x, w = _inputs(1, 10, 5, 3, 3)
    with pytest.raises(ValueError, match="channels-last"):
        layers.conv1d(x.transpose(0, 2, 1), w, dilation=2)
    with pytest.raises(ValueError, match="channels-last"):
        layers.conv_transpose1d(x.transpose(0, 2, 1), w, stride=2)
    with pytest.raises(ValueError, match="shorter than the kernel"):
        layers.conv1d(x[:, :2], w[:, :3], dilation=4)


# ------------------------------------------------------------------ Linear


def count_calls(monkeypatch, module, getter: str) -> collections.Counter:
    """Counts, under ``getter``, the calls of the function ``module.getter()`` hands out
    (stays 0 where it hands out None: no BLAS loaded, no extension built)."""
    calls = collections.Counter()
    real = getattr(module, getter)()
    if real is not None:

        def counting(*args):
            calls[getter] += 1
            return real(*args)

        monkeypatch.setattr(module, getter, lambda: counting)
    return calls


@pytest.fixture
def sgemv_calls(monkeypatch):
    return count_calls(monkeypatch, blas, "sgemv")


@pytest.fixture
def rows_kernel_calls(monkeypatch):
    return count_calls(monkeypatch, cpu_linear, "rows_kernel")


def require_decode_kernel():
    """Skip where the ``_decode`` extension was not built; CI sets
    CHATTERBOX_MLX_REQUIRE_KERNEL=1, which makes that a failure."""
    if cpu_linear.rows_kernel() is None:
        message = "the _decode extension was not built (needs a C compiler with OpenMP)"
        if os.environ.get("CHATTERBOX_MLX_REQUIRE_KERNEL") == "1":
            pytest.fail(message + "; CHATTERBOX_MLX_REQUIRE_KERNEL=1 requires it")
        pytest.skip(message)


@pytest.mark.parametrize(
    "shape", [(1, 1, 48), (1, 48), (2, 1, 48), (1, 4, 48), (1, 5, 48), (1, 16, 48), (3, 40, 48)]
)
@pytest.mark.parametrize("bias", [True, False])
def test_cpu_linear_matches_mlx_linear(
    shape, bias, cpu_paths, kernel_calls, sgemv_calls, rows_kernel_calls
):
    """One row: BLAS sgemv (when a BLAS is loaded); 2 to 16 rows: the ``_decode`` kernel where it
    was built, else sgemv per row up to 4 and W @ x^T up to 16; more: MLX."""
    ours, theirs = layers.Linear(48, 80, bias=bias), nn.Linear(48, 80, bias=bias)
    if bias:
        ours.bias = mx.arange(80, dtype=mx.float32) / 80
    theirs.update(ours.parameters())
    x = mx.array(np.random.default_rng(4).standard_normal(shape).astype(np.float32))
    y = ours(x)
    assert y.shape == (*shape[:-1], 80)
    assert_close(y, theirs(x), RTOL, f"Linear {shape}")
    rows = x.size // 48
    assert kernel_calls["linear.linear"] == (rows <= cpu_linear.DECODE_ROWS)
    by_kernel = cpu_linear.rows_kernel() is not None and rows in cpu_linear.KERNEL_ROWS
    by_gemv = blas.loaded_path is not None and rows <= cpu_linear.MATVEC_ROWS and not by_kernel
    assert rows_kernel_calls["rows_kernel"] == int(by_kernel)
    assert sgemv_calls["sgemv"] == (rows if by_gemv else 0)  # 80 x 48 weights: one block


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 7, 8, 9, 16])
@pytest.mark.parametrize("with_bias", [False, True])
def test_rows_kernel_matches_mlx_product(rows, with_bias):
    """Every row count the kernel has code for, and more than one group of 8; 3001 inputs
    leave a tail after the last 8-wide vector, and 50 outputs of 3001 inputs make three
    tiles of 21 (256 KiB each) split over the threads, the last one short."""
    require_decode_kernel()
    rng = np.random.default_rng(rows)
    weight = mx.array(rng.standard_normal((50, 3001)).astype(np.float32))
    bias = mx.array(rng.standard_normal(50).astype(np.float32)) if with_bias else None
    x = mx.array(rng.standard_normal((rows, 3001)).astype(np.float32))
    y = cpu_linear.matvec(weight, x, bias) if rows > 1 else None
    if rows == 1:  # one row stays on sgemv; call the kernel itself
        w, v = np.array(weight), np.array(x)
        out = np.repeat(np.array(bias)[None], 1, axis=0) if with_bias else np.zeros((1, 50), "f")
        cpu_linear.rows_kernel()(w.ctypes.data, v.ctypes.data, out.ctypes.data, 1, 50, 3001)
        y = mx.array(out)
    expected = x @ weight.T + (bias if with_bias else 0)
    assert_close(y, expected, RTOL, f"_decode kernel, {rows} rows")


def test_rows_kernel_serves_several_threads_at_once():
    """Two threads' products at once (one model serving two requests) each get their own."""
    require_decode_kernel()
    rng = np.random.default_rng(9)
    weight = mx.array(rng.standard_normal((300, 1024)).astype(np.float32))
    inputs = [mx.array(rng.standard_normal((4, 1024)).astype(np.float32)) for _ in range(8)]
    expected = [x @ weight.T for x in inputs]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        outputs = list(pool.map(lambda x: cpu_linear.matvec(weight, x, None), inputs))
    for y, want in zip(outputs, expected, strict=True):
        assert_close(y, want, RTOL, "_decode kernel from several threads")


@pytest.mark.parametrize("rows", [1, 2, 4])
@pytest.mark.parametrize("with_bias", [False, True])
def test_matvec_uses_blas_when_loaded(rows, with_bias, monkeypatch, sgemv_calls):
    """Without the ``_decode`` kernel, several rows read the weight in blocks: blocks of 7 of
    its 30 rows leave a remainder."""
    monkeypatch.setattr(cpu_linear, "rows_kernel", lambda: None)
    monkeypatch.setattr(cpu_linear, "BLOCK_BYTES", 7 * 20 * 4)
    rng = np.random.default_rng(5)
    weight = mx.array(rng.standard_normal((30, 20)).astype(np.float32))
    bias = mx.array(rng.standard_normal(30).astype(np.float32)) if with_bias else None
    x = mx.array(rng.standard_normal((rows, 20)).astype(np.float32))
    y = cpu_linear.matvec(weight, x, bias)
    if blas.loaded_path is None:
        assert y is None
    else:
        expected = x @ weight.T + (bias if with_bias else 0)
        assert_close(y, expected, RTOL, f"sgemv, {rows} rows")
        assert sgemv_calls["sgemv"] == (1 if rows == 1 else rows * 5)  # 30 = 4 x 7 + 2
    x = mx.ones((1, 20))
    assert cpu_linear.matvec(weight, mx.ones((5, 20)), None) is None  # sgemm's rows
    assert cpu_linear.matvec(weight.astype(mx.float16), x, None) is None  # float32 only
    assert cpu_linear.matvec(weight, x.astype(mx.float16), None) is None
    assert cpu_linear.matvec(weight.T, x[:, :30], None) is None  # a transposed view


# ------------------------------------------------------------------ numpy paths


@pytest.mark.parametrize("blas_loaded", [True, False])
def test_numpy_lstm_recurrence_matches_the_mlx_steps(blas_loaded, cpu_paths, monkeypatch,
                                                     kernel_calls):  # fmt: skip
    """Large gates too, where exp(-x) overflows and the sigmoid must come out 0 or 1."""
    if not blas_loaded:
        monkeypatch.setattr(blas, "sgemm", lambda: None)
    rng = np.random.default_rng(9)
    x_gates = rng.standard_normal((3, 25, 4 * 8)).astype(np.float32)
    x_gates[0, 3] *= 100.0
    x_gates, weight_hh = (
        mx.array(x_gates),
        mx.array(rng.standard_normal((32, 8)).astype(np.float32)),
    )
    with cpu.switch(False):
        expected = layers.lstm_recurrence(x_gates, weight_hh)
    assert_close(layers.lstm_recurrence(x_gates, weight_hh), expected, RTOL, "lstm")
    assert kernel_calls["lstm.lstm_recurrence"] == 1
    with pytest.raises(ValueError, match=r"need weight_hh \[32, 8\]"):  # BLAS reads no stray memory
        layers.lstm_recurrence(x_gates, weight_hh[:, :6])


@pytest.mark.parametrize("threaded", [True, False])
@pytest.mark.parametrize("with_bias", [False, True])
def test_numpy_attention_matches_mx_fast_attention(with_bias, threaded, cpu_paths, monkeypatch,
                                                   kernel_calls):  # fmt: skip
    if not threaded:  # numpy's BLAS not controllable (not OpenBLAS): one thread does all
        monkeypatch.setattr(blas, "_numpy_threads", False)
    rng = np.random.default_rng(1)
    # q, k, v as transposed views of one [B, T, 3, H, D] projection, as the models make them
    qkv = mx.array(rng.standard_normal((2, 23, 3, 4, 8)).astype(np.float32))
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    bias = mx.array(rng.standard_normal((1, 4, 23, 23)).astype(np.float32)) if with_bias else None
    expected = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.35, mask=bias)
    assert_close(layers.attention(q, k, v, 0.35, bias), expected, RTOL, "attention")
    assert kernel_calls["attention.attention"] == 1


@pytest.mark.parametrize("cached", [0, 5])
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_numpy_causal_attention_matches_mx_fast_causal(cached, kv_heads, cpu_paths,
                                                       kernel_calls):  # fmt: skip
    """T3's prefill: ``"causal"`` with the queries last among the keys (``cached`` keys
    before them, as after an earlier call), against ``mx.fast``'s own causal mask; with
    fewer key/value heads than query heads too (grouped-query attention)."""
    rng = np.random.default_rng(6)
    q = mx.array(rng.standard_normal((2, 4, 9, 8)).astype(np.float32))
    shape = (2, kv_heads, 9 + cached, 8)
    k, v = (mx.array(rng.standard_normal(shape).astype(np.float32)) for _ in "kv")
    expected = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.35, mask="causal")
    assert_close(layers.attention(q, k, v, 0.35, "causal"), expected, RTOL, "causal attention")
    assert kernel_calls["attention.attention"] == 1


@pytest.mark.parametrize("keys", [1, 7, 37])
@pytest.mark.parametrize("kv_heads", [4, 2])
@pytest.mark.parametrize("padded", [False, True])
def test_a_single_query_attends_through_the_c_kernel(keys, kv_heads, padded, cpu_paths,
                                                    kernel_calls):  # fmt: skip
    """T3's decode step: one query per row over views of a longer cache buffer (as
    ``KVCache`` hands them out), with fewer kv heads (grouped-query attention), and the
    batch cache's padding mask ``[B, 1, 1, S]`` hiding a row's first keys."""
    require_decode_kernel()
    rng = np.random.default_rng(keys + kv_heads)
    q = mx.array(rng.standard_normal((3, 4, 1, 16)).astype(np.float32))
    buffers = [
        mx.array(rng.standard_normal((3, kv_heads, 50, 16)).astype(np.float32)) for _ in "kv"
    ]
    k, v = (b[:, :, :keys] for b in buffers)
    bias = None
    if padded:
        hidden = np.arange(keys)[None] < np.array([0, keys // 2, keys - 1])[:, None]
        bias = mx.array(np.where(hidden, -np.inf, 0).astype(np.float32)[:, None, None])
    expected = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.35, mask=bias)
    assert_close(layers.attention(q, k, v, 0.35, bias), expected, RTOL, "one query")
    assert kernel_calls["attention.single_query"] == 1
    assert kernel_calls["attention.attention"] == 0


def test_a_single_query_the_kernel_cannot_take_goes_to_mx_fast(cpu_paths):
    """A head size not a multiple of 8, or a bias per head: ``mx.fast``, same result; a NaN
    in the query comes out as NaN (so T3's non-finite check still sees it)."""
    rng = np.random.default_rng(6)
    q, k, v = (mx.array(rng.standard_normal((1, 4, n, 6)).astype(np.float32)) for n in (1, 7, 7))
    expected = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.35)
    assert_close(layers.attention(q, k, v, 0.35), expected, RTOL, "head size 6")
    q, k, v = (mx.array(rng.standard_normal((1, 4, n, 8)).astype(np.float32)) for n in (1, 7, 7))
    per_head = mx.array(rng.standard_normal((1, 4, 1, 7)).astype(np.float32))
    assert cpu_attention.single_query(q, k, v, 0.35, per_head) is None
    expected = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.35, mask=per_head)
    assert_close(layers.attention(q, k, v, 0.35, per_head), expected, RTOL, "per-head bias")
    poisoned = mx.where(mx.arange(8) == 3, mx.array(float("nan")), q)
    assert bool(mx.isnan(layers.attention(poisoned, k, v, 0.35)).all())
    with pytest.raises(ValueError, match='"causal"'):
        layers.attention(q, k, v, 0.35, "upper")
    with pytest.raises(ValueError, match="at least as many keys as queries, got 7 queries and 1"):
        layers.attention(k, q, q, 0.35, "causal")


def test_half_precision_attention_on_the_cpu_stays_in_mlx(cpu_paths, kernel_calls):
    # numpy has no bfloat16, so non-float32 inputs keep the MLX formulation; half
    # precision rounding (~1e-3) sets the tolerance
    rng = np.random.default_rng(4)
    q, k, v = (mx.array(rng.standard_normal((1, 2, 9, 8)).astype(np.float16)) for _ in range(3))
    expected = mx.fast.scaled_dot_product_attention(
        q.astype(mx.float32), k.astype(mx.float32), v.astype(mx.float32), scale=0.3
    )
    actual = layers.attention(q, k, v, 0.3)
    assert actual.dtype == mx.float16
    assert_close(actual.astype(mx.float32), expected, 5e-3, "float16 attention")
    assert kernel_calls["attention.attention"] == 0


def _activation_input():
    rng = np.random.default_rng(2)
    x = mx.array((rng.standard_normal((2, 50, 16)) * 8).astype(np.float32))
    return mx.concatenate([x, mx.full((2, 1, 16), 30.0)], axis=1)  # past mish's clamp at 20


def _assert_cpu_path_matches_mlx(fn, *args):
    """``fn(*args)`` on its CPU path (the caller's ``cpu_paths``) against its MLX
    formulation, at RTOL."""
    with cpu.switch(False):
        expected = fn(*args)
    assert_close(fn(*args), expected, RTOL, fn.__name__)


def test_numpy_elu_matches_mlx_expm1(cpu_paths, kernel_calls):
    x = mx.concatenate([_activation_input().reshape(-1), mx.array([-100.0, 0.0, 1e-8, 100.0])])
    _assert_cpu_path_matches_mlx(layers.elu, x)
    assert kernel_calls["activations.elu"] == 1


def test_numpy_sin_matches_mlx(cpu_paths, kernel_calls):
    _assert_cpu_path_matches_mlx(layers.sin, _activation_input())
    assert kernel_calls["activations.sin"] == 1


@pytest.mark.parametrize("name", ["tanh", "silu", "gelu_approx"])
def test_numpy_tanh_silu_and_tanh_gelu_match_mlx(name, cpu_paths, kernel_calls):
    """Far past every saturation too: exp(-x) overflows below x = -88 (SiLU's -0), and the
    tanh GELU's cube overflows past 7e12."""
    extremes = mx.array([-1e20, -100.0, -89.0, -20.0, 0.0, 1e-8, 20.0, 100.0, 1e20])
    x = mx.concatenate([_activation_input().reshape(-1), extremes])
    _assert_cpu_path_matches_mlx(getattr(layers, name), x)
    assert kernel_calls[f"activations.{name}"] == 1


def _source_increments(seconds: float, seed: int) -> np.ndarray:
    """HiFT's phase increments: an F0 track per 20 ms frame (voiced 60-400 Hz, some
    unvoiced frames at 0), repeated per sample as the source upsamples it, times the 9
    harmonics, over 24 kHz."""
    rng = np.random.default_rng(seed)
    f0 = rng.uniform(60.0, 400.0, (2, int(seconds * 50))).astype(np.float32)
    f0[rng.random(f0.shape) < 0.2] = 0.0
    harmonics = np.arange(1, 10, dtype=np.float32)
    return np.repeat(f0, 480, axis=1)[..., None] * harmonics / np.float32(24000)


def _cycle_phase_both(increments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the CPU path's float64 sum, the MLX formulation's fixed-point sum)."""
    with cpu.switch(True):
        numpy_sum = np.array(layers.cycle_phase(mx.array(increments)))
    with cpu.switch(False):
        fixed_point = layers.cycle_phase(mx.array(increments))
    assert fixed_point.dtype == mx.float32
    return numpy_sum, np.array(fixed_point)


def test_fixed_point_cycle_phase_equals_the_float64_sum(kernel_calls):
    """10 s of a source's phase, past 2^16 cycles, where the float32 rounding of the total
    matters: every increment is a multiple of 2^-32, so the int64 sum is exact, as the
    float64 sum is, and both round the same total to float32: equal bit for bit."""
    increments = _source_increments(10.0, seed=8)
    increments[0, :5] = np.array([0.0, 0.5, 0.5, 1.0, 0.25])[:, None]  # whole cycles: 0
    numpy_sum, fixed_point = _cycle_phase_both(increments)
    assert np.array_equal(numpy_sum, fixed_point)
    assert numpy_sum[0, 3, 0] == 0.0 and numpy_sum[0, -1, -1] != 0.0
    half = increments.astype(np.float16)  # a float16 HiFT's (where 2^32 overflows)
    with cpu.switch(False):
        fixed_point = layers.cycle_phase(mx.array(half))
    assert fixed_point.dtype == mx.float32
    assert np.array_equal(_cycle_phase_both(half.astype(np.float32))[0], np.array(fixed_point))
    assert kernel_calls["activations.cycle_phase"] == 2


def test_fixed_point_cycle_phase_within_a_float32_step_of_the_float64_sum():
    """Increments finer than 2^-32 (down to 1e-9) are rounded to it, by at most 2^-33
    each: within that bound plus one float32 step of the float64 sum's total, measured
    around the cycle (a total rounded to the other side of a whole cycle has fraction
    0.99999 against 0). A NaN or infinite increment makes the phase NaN from there on in
    both."""
    rng = np.random.default_rng(5)
    increments = rng.uniform(0.0, 0.1, (2, 120000, 3)).astype(np.float32)
    increments[:, ::7] *= np.float32(1e-7)
    numpy_sum, fixed_point = _cycle_phase_both(increments)
    totals = np.cumsum(increments, axis=1, dtype=np.float64).astype(np.float32)
    rounding = np.arange(1, increments.shape[1] + 1)[:, None] * 2.0**-33
    step = np.spacing(totals) + rounding
    apart = np.abs(numpy_sum.astype(np.float64) - fixed_point)
    around = np.minimum(apart, 1.0 - apart)
    assert np.all(around <= step), f"{np.max(around / step):.2f} float32 steps apart"
    assert np.mean(apart == 0) > 0.5  # most are the same float32 total
    increments[0, 1000, 1], increments[1, 50, 2] = np.nan, np.inf
    numpy_sum, fixed_point = _cycle_phase_both(increments)
    assert np.array_equal(np.isnan(numpy_sum), np.isnan(fixed_point))
    assert np.isnan(fixed_point[0, 1000:, 1]).all() and not np.isnan(fixed_point[0, :1000]).any()
    assert np.isnan(fixed_point[1, 50:, 2]).all() and np.isfinite(fixed_point[:, :, 0]).all()


def test_numpy_normal_draw_matches_mx_random_normal(cpu_paths, kernel_calls):
    """The same key gives mx.random.normal's draw to float32 rounding, with or without
    a key (the global state moves on the same way); the tails' polynomial is covered by
    uniforms next to -1 and 1 (|z| past 5)."""
    key = mx.random.key(11)
    shape = (2, 70000, 3)  # more than one block of samples
    actual = layers.random_normal(shape, key)
    with cpu.switch(False):
        expected = layers.random_normal(shape, key)
    assert actual.dtype == mx.float32
    assert_close(actual, expected, RTOL, "random_normal")
    mx.random.seed(4)
    first, second = layers.random_normal((5, 6)), layers.random_normal((5, 6))
    mx.random.seed(4)
    assert_close(first, mx.random.normal((5, 6)), RTOL, "first draw, global key")
    assert_close(second, mx.random.normal((5, 6)), RTOL, "second draw, global key")
    edge = np.float32([1 - 2**-24, 1 - 2**-20, 0.999, 0.5, 1e-30, 0.0])
    uniform = mx.array(np.concatenate([edge, -edge, [np.nextafter(np.float32(-1), 0)]]))
    expected = mx.erfinv(uniform) * np.float32(np.sqrt(2.0))
    assert_close(cpu_activations.normal_from_uniform(uniform), expected, RTOL, "tails")
    assert kernel_calls["activations.normal_from_uniform"] == 4


def test_numpy_polar_spectrum_matches_mlx(cpu_paths, kernel_calls):
    """HiFT's 18 output channels as 9 complex bins; one row's magnitudes overflow exp and
    are clipped at 100, as the reference clips them."""
    rng = np.random.default_rng(9)
    x = rng.uniform(-4.0, 3.0, (2, 40, 18)).astype(np.float32)
    x[0, 0, :9] = [5.0, 20.0, 100.0, 1e4, -100.0, 0.0, 4.6, 4.7, 90.0]
    x = mx.array(x)
    with cpu.switch(False):
        expected = layers.polar_spectrum(x, 9, 1e2)
    actual = layers.polar_spectrum(x, 9, 1e2)
    assert actual.dtype == mx.complex64 and actual.shape == (2, 40, 9)
    assert_close(actual, expected, RTOL, "polar_spectrum")  # complex: |difference|
    assert float(mx.abs(actual).max()) == pytest.approx(100.0, rel=1e-6)  # clipped, not inf
    assert kernel_calls["activations.polar_spectrum"] == 1


def test_numpy_mish_and_snake_match_their_compiled_kernels(cpu_paths, kernel_calls):
    x = _activation_input()
    _assert_cpu_path_matches_mlx(layers.mish, x)
    alpha = mx.array(np.random.default_rng(3).uniform(0.05, 3.0, 16).astype(np.float32))
    _assert_cpu_path_matches_mlx(layers.snake, x, alpha)
    assert kernel_calls["activations.mish"] == kernel_calls["activations.snake"] == 1


@pytest.mark.parametrize(
    ("batch", "steps", "kernel", "dilation", "block_bytes"),
    [
        (1, 40, 3, 1, 1 << 20),  # one block
        (2, 37, 11, 5, 48 * 16 * 4),  # blocks of 48 - 50 < 1 row: one row at a time
        (1, 130, 7, 3, 40 * 16 * 4),  # 22-row blocks and a shorter last one
        (1, 6, 11, 5, 1 << 20),  # padding (25) far longer than the input
    ],
)
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("with_residual", [True, False])
@pytest.mark.parametrize("weight_view", [True, False])
def test_fused_snake_conv_matches_snake_then_conv(
    batch, steps, kernel, dilation, block_bytes, with_bias, with_residual, weight_view,
    cpu_paths, kernel_calls, monkeypatch
):  # fmt: skip
    """HiFT's residual step, residual + conv(snake(x)), in blocks of time steps with the
    padding and the halo written by hand, against Snake then Conv1d as the GPU runs them."""
    monkeypatch.setattr(cpu_conv, "SNAKE_CONV_BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(7)
    conv = layers.Conv1d(16, 12, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2,
                         bias=with_bias)  # fmt: skip
    if with_bias:
        conv.bias = mx.array(rng.standard_normal(12).astype(np.float32))
    if weight_view:  # a torch-layout [O, C, K] weight transposed, as a load could leave it
        conv.weight = mx.array(rng.standard_normal((12, 16, kernel)).astype(np.float32))
        conv.weight = conv.weight.transpose(0, 2, 1)
    alpha = mx.array(rng.uniform(0.05, 3.0, 16).astype(np.float32))
    x = mx.array(rng.standard_normal((batch, steps, 16)).astype(np.float32))
    residual = mx.array(rng.standard_normal((batch, steps, 12)).astype(np.float32))
    residual = residual if with_residual else None
    with cpu.switch(False):
        expected = conv(layers.snake(x, alpha)) + (residual if with_residual else 0)
    y = layers.snake_conv1d(x, alpha, conv, residual)
    assert_close(y, expected, RTOL, "snake_conv1d")
    assert kernel_calls["conv.snake_conv1d"] == 1
    unfused = int(blas.sgemm() is None)  # no BLAS: Snake then the CPU conv run instead
    assert kernel_calls["conv.conv1d"] == kernel_calls["activations.snake"] == unfused


def test_fused_snake_conv_falls_back_without_a_blas(cpu_paths, monkeypatch, kernel_calls):
    monkeypatch.setattr(blas, "sgemm", lambda: None)
    conv = layers.Conv1d(8, 8, 3, padding=1)
    x, alpha = mx.ones((1, 10, 8)), mx.full((8,), 0.5)
    with cpu.switch(False):
        expected = conv(layers.snake(x, alpha))
    assert_close(layers.snake_conv1d(x, alpha, conv), expected, RTOL, "fallback")
    assert kernel_calls["conv.conv1d"] == 1  # the unfused CPU path ran
    with pytest.raises(ValueError, match="stride 1"):
        layers.snake_conv1d(x, alpha, layers.Conv1d(8, 8, 3, stride=2))
    with pytest.raises(ValueError, match="shorter than the kernel span"):
        layers.snake_conv1d(x[:, :4], alpha, layers.Conv1d(8, 8, 11, dilation=5, padding=5))
    with pytest.raises(ValueError, match=r"residual has shape \(1, 9, 8\)"):
        layers.snake_conv1d(x, alpha, conv, residual=x[:, :9])


def test_erf_polynomial_gelu_matches_mlx_gelu(cpu_paths, kernel_calls):
    x = mx.concatenate([_activation_input().reshape(-1), mx.linspace(-6, 6, 1201)])
    with cpu.switch(False):
        expected = layers.gelu(x)  # nn.gelu: mx.erf
    assert_close(layers.gelu(x), expected, RTOL, "gelu")
    assert_close(layers.GELU()(x), expected, RTOL, "GELU")
    assert kernel_calls["activations.gelu"] == 2


def test_numpy_fsmn_memory_matches_the_mlx_loop(cpu_paths, kernel_calls):
    from chatterbox_mlx.models import s3tokenizer

    rng = np.random.default_rng(3)
    block = s3tokenizer.FSMNMultiHeadAttention(16, 2, 31)
    block.fsmn_block.weight = mx.array(rng.standard_normal((16, 31, 1)).astype(np.float32))
    v = mx.array(rng.standard_normal((2, 150, 16)).astype(np.float32))  # 150: not 64 * n
    mask = mx.array(np.arange(150)[None, :, None] < np.array([150, 97])[:, None, None])
    mask = mask.astype(mx.float32)
    numpy_out = block.fsmn_memory(v, mask)
    assert kernel_calls["conv.fsmn_memory"] == 1
    with cpu.switch(False):
        assert_close(numpy_out, block.fsmn_memory(v, mask), RTOL, "fsmn memory")
    assert kernel_calls["conv.fsmn_memory"] == 1


# ------------------------------------------------------------------ the switch


def _every_dispatcher() -> list[mx.array]:
    """One call of each dispatcher per CPU path it has (TAPS_MIN_SIZE set to 0 by the
    caller, so stride-1 convs with kernel > 1 go per tap)."""
    rng = np.random.default_rng(7)

    def randn(*shape):
        return mx.array(rng.standard_normal(shape).astype(np.float32))

    x, w = randn(1, 12, 4), randn(3, 3, 4)
    q, k, v = randn(1, 2, 5, 4), randn(1, 2, 5, 4), randn(1, 2, 5, 4)
    linear = layers.Linear(4, 3)
    linear.update({"weight": randn(3, 4), "bias": randn(3)})
    conv = layers.Conv1d(4, 4, 3, padding=1)
    conv.update({"weight": randn(4, 3, 4), "bias": randn(4)})
    return [
        layers.attention(q, k, v, 0.5, randn(1, 2, 5, 5)),
        layers.attention(q, k, v, 0.5, "causal"),
        layers.attention(randn(1, 2, 1, 8), randn(1, 2, 5, 8), randn(1, 2, 5, 8), 0.5),  # decode
        layers.mish(x),
        layers.elu(x),
        layers.sin(x),
        layers.tanh(x),
        layers.silu(x),
        layers.gelu_approx(x),
        layers.cycle_phase(x),
        layers.polar_spectrum(randn(1, 5, 6), 3, 1e2),
        layers.random_normal((3, 4), mx.random.key(1)),
        layers.snake(x, mx.ones((4,))),
        layers.gelu(x),
        layers.GELU()(x),
        layers.fsmn_memory(x, randn(4, 5), 2, 2),
        linear(x[:, :1]),  # one row: sgemv
        linear(x[:, :3]),  # a few rows: the C kernel (or sgemv per row)
        linear(x[:, :6]),  # more rows: the C kernel (or weight-first)
        linear(randn(1, 20, 4)),  # MLX
        layers.conv1d(x, w, padding=1),  # per tap
        layers.conv1d(x, w, stride=2, dilation=2),  # im2col
        layers.conv1d(x, w[:, :1]),  # kernel 1: a matmul
        layers.conv_transpose1d(x, w, stride=2),
        layers.conv2d(randn(1, 6, 8, 2), randn(3, 3, 3, 2), (1, 2), (1, 1)),
        layers.snake_conv1d(x, mx.ones((4,)), conv, x),
        layers.lstm_recurrence(randn(2, 5, 8), randn(8, 2)),
    ]


def test_the_switch_turns_every_cpu_path_off(kernel_calls, monkeypatch):
    monkeypatch.setattr(cpu_conv, "TAPS_MIN_SIZE", 0)
    with cpu.switch(True):
        assert layers.cpu_kernels_active() and not layers.compilable()
        on = _every_dispatcher()
    not_run = sorted(name for name, n in kernel_calls.items() if n == 0)
    assert not not_run, f"_every_dispatcher misses the CPU paths {not_run}"
    kernel_calls.clear()
    with cpu.switch(False):
        assert not layers.cpu_kernels_active() and layers.compilable()
        off = _every_dispatcher()
    assert not +kernel_calls, f"CPU paths ran with the switch off: {dict(+kernel_calls)}"
    for i, (a, b) in enumerate(zip(on, off, strict=True)):
        assert_close(a, b, RTOL, f"dispatcher call {i}")


def _tiny_networks():
    """Each network that calls a CPU path, at a tiny random size, with an input."""
    from chatterbox_mlx.models import campplus, flow_decoder, flow_encoder, hift, s3tokenizer

    mx.random.seed(0)
    decoder = flow_decoder.ConditionalDecoder(
        flow_decoder.DecoderConfig(
            in_channels=32,
            out_channels=8,
            channels=(16,),
            attention_head_dim=8,
            n_blocks=1,
            num_mid_blocks=1,
            num_heads=2,
        )
    )
    encoder = flow_encoder.UpsampleConformerEncoder(
        flow_encoder.EncoderConfig(
            input_size=16,
            output_size=16,
            attention_heads=2,
            linear_units=32,
            num_blocks=1,
            num_up_blocks=1,
        )
    )
    vocoder = hift.HiFTGenerator(
        hift.HiFTConfig(
            in_channels=8,
            base_channels=16,
            f0_cond_channels=8,
            resblock_kernel_sizes=(3,),
            resblock_dilation_sizes=((1, 3),),
        )
    )
    tokenizer = s3tokenizer.S3TokenizerV2(
        s3tokenizer.S3TokenizerConfig(
            n_mels=8, n_audio_state=128, n_audio_head=2, n_audio_layer=1, fsmn_kernel_size=5
        )
    )
    speaker = campplus.CAMPPlus(
        campplus.CAMPPlusConfig(
            feat_dim=16,
            embedding_size=8,
            growth_rate=4,
            bn_size=2,
            init_channels=8,
            head_channels=4,
            block_layers=(1, 1, 1),
        )
    )
    x = mx.random.normal((1, 10, 8))
    return [
        lambda: decoder(x, x, mx.array([0.5]), mx.random.normal((1, 8)), x),
        lambda: encoder(mx.random.normal((1, 6, 16), key=mx.random.key(1))),
        lambda: vocoder(mx.random.normal((1, 4, 8), key=mx.random.key(2)))[0],
        lambda: tokenizer(mx.random.normal((1, 40, 8), key=mx.random.key(3)), [40])[1],
        lambda: speaker(mx.random.normal((1, 20, 16), key=mx.random.key(4))),
    ]


def test_the_networks_reach_cpu_paths_only_through_the_switch(kernel_calls):
    networks = _tiny_networks()
    with cpu.switch(False):
        for run in networks:
            mx.eval(run())
    assert not +kernel_calls, f"CPU paths ran with the switch off: {dict(+kernel_calls)}"
    with cpu.switch(True):
        for i, run in enumerate(networks):
            before = sum(kernel_calls.values())
            mx.eval(run())
            assert sum(kernel_calls.values()) > before, f"network {i} ran no CPU path"


def _import_state(value: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != cpu.ENV_VAR}
    if value is not None:
        env[cpu.ENV_VAR] = value
    code = (
        "import chatterbox_mlx.cpu.blas as b, chatterbox_mlx; from chatterbox_mlx import cpu; "
        "from chatterbox_mlx.models import layers; "
        "print(cpu.enabled(), layers.cpu_kernels_active(), b.status.split()[0])"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)  # fmt: skip


def test_the_environment_variable_is_read_at_import():
    on, off, bad = _import_state(None), _import_state("off"), _import_state("sometimes")
    blas_state = blas.status.split()[0]  # the switch leaves the BLAS loading alone
    assert on.stdout.split() == ["True", "True", blas_state], on.stderr
    assert off.stdout.split() == ["False", "False", blas_state], off.stderr
    assert bad.stdout.split() == ["True", "True", blas_state]
    assert f"{cpu.ENV_VAR}='sometimes' is neither on nor off" in bad.stderr


def test_switch_restores_the_previous_setting():
    before = cpu.enabled()
    with cpu.switch(not before):
        assert cpu.enabled() is (not before)
        with cpu.switch(before):
            assert cpu.enabled() is before
        assert cpu.enabled() is (not before)
    assert cpu.enabled() is before
    with pytest.raises(RuntimeError), cpu.switch(not before):
        raise RuntimeError
    assert cpu.enabled() is before

"""The BLAS-friendly convolutions in chatterbox_mlx.layers against MLX's own kernels.

Both compute the same sums in a different order, so they agree to float32 rounding:
errors are relative to the output's max abs value, tolerance 1e-5.
"""

import chatterbox_mlx  # noqa: F401  (loads BLAS before mlx.core)
from chatterbox_mlx import layers

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from tests.helpers.golden import assert_close

RTOL = 1e-5


def _inputs(batch, steps, in_ch, out_ch, kernel, seed=0):
    rng = np.random.default_rng(seed)
    x = mx.array(rng.standard_normal((batch, steps, in_ch)).astype(np.float32))
    w = mx.array(rng.standard_normal((out_ch, kernel, in_ch)).astype(np.float32))
    return x, w


@pytest.mark.parametrize(
    "steps,in_ch,out_ch,kernel,stride,padding,dilation",
    [
        (37, 5, 7, 3, 1, 1, 1),
        (37, 5, 7, 11, 1, 25, 5),  # HiFT ResBlock, dilation 5
        (40, 6, 4, 7, 1, 9, 3),
        (40, 4, 6, 7, 1, 0, 2),
        (41, 6, 4, 3, 1, 3, 3),  # length a multiple of the dilation
        (52, 6, 4, 11, 1, 0, 5),  # 2 outputs: fewer than the 5 phases
        (61, 18, 9, 30, 15, 7, 1),  # HiFT source_downs, stride 15 (mx.conv1d)
        (40, 4, 6, 3, 2, 2, 3),  # strided and dilated: im2col
        (41, 5, 3, 4, 3, 0, 2),
        (10, 3, 2, 1, 1, 0, 1),
        (5, 3, 2, 4, 2, 5, 3),  # padding larger than the kernel
    ],
)
@pytest.mark.parametrize("path", ["im2col", "taps"])
def test_conv1d_matches_mlx(steps, in_ch, out_ch, kernel, stride, padding, dilation, path,
                            monkeypatch):  # fmt: skip
    # stride-1 convs switch to one multiply-accumulate per tap above TAPS_MIN_SIZE elements
    monkeypatch.setattr(layers, "TAPS_MIN_SIZE", 0 if path == "taps" else 2**62)
    x, w = _inputs(2, steps, in_ch, out_ch, kernel)
    expected = mx.conv1d(x, w, stride, padding, dilation)
    actual = layers.conv1d(x, w, stride, padding, dilation)
    assert_close(actual, expected, RTOL, "conv1d")


def test_conv1d_default_switch_at_hift_size():
    """HiFT's last stage (64 channels, kernel 11, 5 s of audio) takes the per-tap path."""
    x, w = _inputs(1, 6000 * 5, 64, 64, 11)
    assert 11 * x.size > layers.TAPS_MIN_SIZE
    expected = mx.conv1d(x, w, 1, 15, 3)
    assert_close(layers.conv1d(x, w, 1, 15, 3), expected, RTOL, "conv1d, per tap")


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
def test_conv_transpose1d_matches_mlx(steps, kernel, stride, padding, output_padding):
    x, w = _inputs(2, steps, 5, 4, kernel, seed=1)
    expected = mx.conv_transpose1d(x, w, stride, padding, 1, output_padding)
    actual = layers.conv_transpose1d(x, w, stride, padding, 1, output_padding)
    assert_close(actual, expected, RTOL, "conv_transpose1d")


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


@pytest.mark.parametrize("shape", [(1, 1, 48), (1, 48), (2, 1, 48), (1, 16, 48), (3, 40, 48)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_paths_match_mlx(shape, bias):
    """One row: BLAS sgemv (when a BLAS is loaded); up to 16 rows: W @ x^T; more: MLX."""
    ours, theirs = layers.Linear(48, 80, bias=bias), nn.Linear(48, 80, bias=bias)
    if bias:
        ours.bias = mx.arange(80, dtype=mx.float32) / 80
    theirs.update(ours.parameters())
    x = mx.array(np.random.default_rng(4).standard_normal(shape).astype(np.float32))
    y = ours(x)
    assert y.shape == (*shape[:-1], 80)
    assert_close(y, theirs(x), RTOL, f"Linear {shape}")


def test_matvec_uses_blas_when_loaded():
    weight = mx.array(np.random.default_rng(5).standard_normal((30, 20)).astype(np.float32))
    x = mx.ones((1, 20))
    y = layers.matvec(weight, x, None)
    if chatterbox_mlx._blas.loaded_path is None:
        assert y is None
    else:
        assert_close(y[None], x @ weight.T, RTOL, "sgemv")
    assert layers.matvec(weight.astype(mx.float16), x, None) is None  # float32 only
    assert layers.matvec(weight, x.astype(mx.float16), None) is None
    assert layers.matvec(weight.T, x[:, :30], None) is None  # a transposed view: not in place


# The CPU backend runs attention, Mish and Snake in numpy; other backends use the MLX
# formulations below. Both must agree (float32 rounding, and numpy's sin/exp within a
# few ulp of libm's): tolerance 1e-5 of the output's max abs value.


@pytest.mark.parametrize("threaded", [True, False])
@pytest.mark.parametrize("with_bias", [False, True])
def test_numpy_attention_matches_mlx_attention(with_bias, threaded, monkeypatch):
    from chatterbox_mlx import _blas

    if not threaded:  # numpy's BLAS not controllable (not OpenBLAS): one thread does all
        monkeypatch.setattr(_blas, "_numpy_threads", False)
    rng = np.random.default_rng(1)
    # q, k, v as transposed views of one [B, T, 3, H, D] projection, as the models make them
    qkv = mx.array(rng.standard_normal((2, 23, 3, 4, 8)).astype(np.float32))
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    bias = mx.array(rng.standard_normal((1, 4, 23, 23)).astype(np.float32)) if with_bias else None
    expected = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.35, mask=bias)
    assert_close(layers.attention(q, k, v, 0.35, bias), expected, RTOL, "attention")


def test_numpy_mish_and_snake_match_their_compiled_kernels():
    from chatterbox_mlx.models.flow_decoder import _mish, mish
    from chatterbox_mlx.models.hift import _snake, snake

    rng = np.random.default_rng(2)
    x = mx.array((rng.standard_normal((2, 50, 16)) * 8).astype(np.float32))
    x = mx.concatenate([x, mx.full((2, 1, 16), 30.0)], axis=1)  # past mish's clamp at 20
    assert_close(mish(x), _mish(x), RTOL, "mish")
    alpha = mx.array(rng.uniform(0.05, 3.0, 16).astype(np.float32))
    assert_close(snake(x, alpha), _snake(x, alpha, 1.0 / (alpha + 1e-9)), RTOL, "snake")
    assert isinstance(layers.numpy_view(x), np.ndarray)  # these tests ran the numpy paths


def test_numpy_fsmn_memory_matches_the_mlx_loop(monkeypatch):
    from chatterbox_mlx.models import s3tokenizer

    rng = np.random.default_rng(3)
    block = s3tokenizer.FSMNMultiHeadAttention(16, 2, 31)
    block.fsmn_block.weight = mx.array(rng.standard_normal((16, 31, 1)).astype(np.float32))
    v = mx.array(rng.standard_normal((2, 150, 16)).astype(np.float32))  # 150: not 64 * n
    mask = mx.array(np.arange(150)[None, :, None] < np.array([150, 97])[:, None, None])
    mask = mask.astype(mx.float32)
    numpy_out = block.fsmn_memory(v, mask)
    monkeypatch.setattr(s3tokenizer, "numpy_view", lambda x: None)
    assert_close(numpy_out, block.fsmn_memory(v, mask), RTOL, "fsmn memory")


def test_half_precision_attention_on_the_cpu_stays_in_mlx():
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

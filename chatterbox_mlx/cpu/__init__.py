"""Every CPU-only speed path of chatterbox_mlx, behind one switch.

MLX's CPU backend runs its elementwise ``exp``/``sin``/``erf`` as scalar code, its dilated
and transposed convolutions as direct loops, and hands every matrix product to BLAS
``sgemm``. The modules here compute the same results by formulations that are faster on
the CPU; the networks never call them directly. ``chatterbox_mlx.models.layers`` dispatches to
them when the default device is the CPU and the switch is on, and to the MLX formulation
(the one Apple GPUs run) otherwise:

- ``blas``: loads OpenBLAS before ``mlx.core`` (``CHATTERBOX_MLX_BLAS``), ``sgemv`` and
  ``sgemm`` of that library, and numpy's bundled OpenBLAS held to one thread;
- ``attention``: softmax attention in numpy, (batch, head) pairs spread over the cores;
- ``activations``: ELU, Mish, Snake and sine in numpy, HiFT's float64 phase sum and output
  spectrum, normal draws through MLX's erfinv polynomial, exact GELU by an erf polynomial;
- ``conv``: convolutions as BLAS products (per tap, im2col, matmul + overlap-add), Snake
  fused with the conv after it (HiFT), the S3Tokenizer's FSMN memory in numpy;
- ``lstm``: the LSTM recurrence (VoiceEncoder) in numpy, one ``sgemm`` per step;
- ``linear``: decode-sized ``Linear`` (``sgemv`` on MLX's buffers, the optional ``_rows``
  C kernel for several rows, weight-first products).

``CHATTERBOX_MLX_CPU_KERNELS=off`` (read once, when this package is imported) turns every
path in ``attention``, ``activations``, ``conv``, ``linear`` and ``lstm`` off, so the CPU
backend runs exactly what a GPU runs; ``switch(False)`` does the same for a block of code
(tests). The switch does not touch the BLAS loading: that only replaces the library MLX's
own CPU matmul calls, not any formulation (``CHATTERBOX_MLX_BLAS=off`` turns it off).

This file must not import ``mlx.core``: ``import chatterbox_mlx`` loads ``blas`` first.
"""

from __future__ import annotations

import contextlib
import os
import warnings

ENV_VAR = "CHATTERBOX_MLX_CPU_KERNELS"

# The modules whose public functions are CPU-only paths (tests spy on all of them).
KERNEL_MODULES = ("attention", "activations", "conv", "linear", "lstm")

_ON = ("", "1", "on", "true", "yes")
_OFF = ("0", "off", "false", "no", "none")


def _read_switch(value: str | None) -> bool:
    choice = (value or "").strip().lower()
    if choice in _OFF:
        return False
    if choice not in _ON:
        warnings.warn(
            f"chatterbox_mlx: {ENV_VAR}={value!r} is neither on nor off; the CPU kernels "
            f"stay on ({ENV_VAR}=off turns them off)",
            stacklevel=3,
        )
    return True


_enabled = _read_switch(os.environ.get(ENV_VAR))


def enabled() -> bool:
    """Whether the CPU-only paths are switched on (``CHATTERBOX_MLX_CPU_KERNELS``, or the
    innermost ``switch``). They run only where the default device is the CPU as well:
    ``chatterbox_mlx.models.layers.cpu_kernels_active()`` asks both."""
    return _enabled


@contextlib.contextmanager
def switch(on: bool):
    """Turn every CPU-only path on or off inside the block, whatever the environment says;
    the previous setting is restored on exit. Not thread-aware: meant for tests."""
    global _enabled
    saved, _enabled = _enabled, bool(on)
    try:
        yield
    finally:
        _enabled = saved

"""Chatterbox text-to-speech on Apple MLX.

Array layout everywhere in this package: MLX is channels-last, so sequences are
``[batch, time, channels]`` and 1-D convolution weights are ``[out, kernel, in]``.
PyTorch checkpoints (``[batch, channels, time]``, ``[out, in, kernel]``) are
mapped once, at load time, by each network's ``sanitize``.
"""

from .cpu import blas as _cpu_blas

_cpu_blas.load()  # must run before the first `import mlx.core`


__version__ = "0.1.0"

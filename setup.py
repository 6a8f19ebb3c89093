"""Builds the one optional C extension, ``chatterbox_mlx.cpu._decode`` (Linux only).

It is the CPU's kernel for a few rows times a weight (``chatterbox_mlx/cpu/decode.c``,
batched T3 decoding). Where no C compiler or OpenMP is found the build goes on without
it and ``chatterbox_mlx.cpu.linear`` falls back to BLAS; on macOS the GPU runs MLX.
Everything else about the package is in ``pyproject.toml``.
"""

import sys

from setuptools import Extension, setup

extensions = []
if sys.platform.startswith("linux"):
    extensions.append(
        Extension(
            "chatterbox_mlx.cpu._decode",
            sources=["chatterbox_mlx/cpu/decode.c"],
            extra_compile_args=["-O3", "-fopenmp"],
            extra_link_args=["-fopenmp"],
            optional=True,
        )
    )

setup(ext_modules=extensions)

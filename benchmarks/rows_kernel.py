"""A few rows times T3's weights on the CPU: each formulation ``cpu/linear.py`` can take.

Four GPT-2 medium layers of Turbo's T3 (qkv, out, fc, proj: 16 weights, 200 MB, more than
the cache holds), random float32. For each row count, in alternating rounds: the ``_rows``
C kernel (``cpu/rows.c``), BLAS ``sgemv`` once per row over 2 MiB blocks, one BLAS
``sgemm`` as ``W @ x^T``, and MLX's own ``x @ W^T``. Prints ms per pass over the 200 MB
(best of the rounds, with the range) and each one's ratio to one row's best; the row
counts where the kernel wins are ``linear.KERNEL_ROWS``.

    python benchmarks/rows_kernel.py [--rows 1,2,4,8,16] [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import chatterbox_mlx  # noqa: E402, F401, I001  (BLAS before mlx.core)
import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from chatterbox_mlx.cpu import blas, linear  # noqa: E402

SHAPES = [(3072, 1024), (1024, 1024), (4096, 1024), (1024, 4096)] * 4  # out, in


def formulations(weights: list[mx.array]) -> dict:
    """name -> fn(inputs) for every formulation this machine has."""
    kernel, out = linear.rows_kernel(), {}
    if kernel is not None:

        def by_kernel(inputs):
            for w, x in zip(weights, inputs, strict=True):
                y = np.zeros((x.shape[0], w.shape[0]), np.float32)
                wn, xn = np.array(w, copy=False), np.array(x, copy=False)
                kernel(wn.ctypes.data, xn.ctypes.data, y.ctypes.data, *xn.shape[:1], *wn.shape)

        out["_rows kernel"] = by_kernel
    if blas.sgemv() is not None:

        def by_sgemv(inputs):
            real = linear.rows_kernel
            linear.rows_kernel = lambda: None
            try:
                for w, x in zip(weights, inputs, strict=True):
                    if x.shape[0] <= linear.MATVEC_ROWS:
                        linear.matvec(w, x, None)
            finally:
                linear.rows_kernel = real

        out["sgemv per row"] = by_sgemv
    out["W @ x^T"] = lambda inputs: mx.eval([w @ x.T for w, x in zip(weights, inputs, strict=True)])
    out["x @ W^T (MLX)"] = lambda inputs: mx.eval(
        [x @ w.T for w, x in zip(weights, inputs, strict=True)]
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1,2,4,8,16")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    row_counts = [int(r) for r in args.rows.split(",")]
    weights = [0.02 * mx.random.normal(s, key=mx.random.key(i)) for i, s in enumerate(SHAPES)]
    mx.eval(weights)
    sides = formulations(weights)
    times = {(name, rows): [] for name in sides for rows in row_counts}
    inputs = {
        rows: [mx.random.normal((rows, i), key=mx.random.key(100 + rows)) for _, i in SHAPES]
        for rows in row_counts
    }
    mx.eval(list(inputs.values()))
    for fn in sides.values():  # warm-up
        fn(inputs[row_counts[0]])
    for _ in range(args.rounds):
        for rows in row_counts:
            for name, fn in sides.items():
                if name == "sgemv per row" and rows > linear.MATVEC_ROWS:
                    continue
                started = time.perf_counter()
                fn(inputs[rows])
                times[name, rows].append(1e3 * (time.perf_counter() - started))
    mb = sum(o * i for o, i in SHAPES) * 4 / 2**20
    print(f"{mb:.0f} MB of weights, {args.rounds} alternating rounds, BLAS: {blas.status}")
    print("ms per pass: best (range), and x the best one-row time")
    one_row = min(min(t) for (name, rows), t in times.items() if rows == 1 and t)
    header = f"{'rows':>4}" + "".join(f"{name:>28}" for name in sides)
    print(header)
    for rows in row_counts:
        cells = []
        for name in sides:
            t = times[name, rows]
            cells.append(
                f"{min(t):7.1f} ({min(t):.0f}-{max(t):.0f}) x{min(t) / one_row:4.2f}" if t else "-"
            )
        print(f"{rows:>4}" + "".join(f"{cell:>28}" for cell in cells))


if __name__ == "__main__":
    main()

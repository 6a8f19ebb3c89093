"""fp32 matmul GFLOP/s with and without the optimized BLAS that `import chatterbox_mlx` loads.

    python benchmarks/blas.py [--sizes 1024 2048] [--seconds 1.0]

Each setting runs in its own subprocess (the BLAS is chosen at import time);
"off" sets CHATTERBOX_MLX_BLAS=off, which leaves MLX on its bundled reference BLAS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

WORKER = r"""
import json, sys, time
import chatterbox_mlx
from chatterbox_mlx.cpu import blas
import mlx.core as mx

sizes, seconds = json.loads(sys.argv[1]), float(sys.argv[2])
results = {"blas": blas.status, "gflops": {}}
for n in sizes:
    a = mx.random.normal((n, n), key=mx.random.key(0))
    b = mx.random.normal((n, n), key=mx.random.key(1))
    mx.eval(a @ b)  # warm up
    runs, start = 0, time.perf_counter()
    while True:
        mx.eval(a @ b)
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    results["gflops"][n] = 2 * n**3 * runs / elapsed / 1e9
print(json.dumps(results))
"""


def measure(blas_setting: str | None, sizes: list[int], seconds: float) -> dict:
    env = dict(os.environ)
    env.pop("CHATTERBOX_MLX_BLAS", None)
    if blas_setting is not None:
        env["CHATTERBOX_MLX_BLAS"] = blas_setting
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, json.dumps(sizes), str(seconds)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per size (at least)")
    args = parser.parse_args()

    on = measure(os.environ.get("CHATTERBOX_MLX_BLAS"), args.sizes, args.seconds)
    off = measure("off", args.sizes, args.seconds)
    print(f"BLAS on : {on['blas']}")
    print(f"BLAS off: {off['blas']}")
    print(f"{'size':>6} {'on GFLOP/s':>12} {'off GFLOP/s':>12} {'speed-up':>9}")
    for n in args.sizes:
        g_on, g_off = on["gflops"][str(n)], off["gflops"][str(n)]
        print(f"{n:>6} {g_on:>12.1f} {g_off:>12.1f} {g_on / g_off:>8.1f}x")


if __name__ == "__main__":
    main()

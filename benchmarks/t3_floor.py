"""T3's speed floor on this machine: per generated token the backbone reads every weight
of every layer (plus the speech head and the KV cache) once, so time per token can be no
less than those bytes over the memory read bandwidth. Prints the measured bandwidth, the
floor and our measured time per token (median over decode steps, prefill excluded).

Usage: python benchmarks/t3_floor.py [--variant turbo|nano|cfg] [--tokens 60] [--quantize 8]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import chatterbox_mlx  # noqa: E402, F401, I001  (BLAS before mlx.core)
import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402

from benchmarks.common import best_time  # noqa: E402
from chatterbox_mlx.models.t3 import (  # noqa: E402
    T3,
    Sampler,
    T3Cond,
    T3Config,
    load_t3,
    quantize_t3,
)
from chatterbox_mlx.models.weights import load_safetensors  # noqa: E402
from tests.helpers.checkpoints import cached_checkpoint  # noqa: E402

CONFIGS = {"cfg": T3Config.english, "turbo": T3Config.turbo, "nano": T3Config.nano}
# Embedding tables: a token reads one row of each, not the table.
ROW_READ = ("text_emb", "speech_emb", "pos_emb", "tfmr.wpe", "tfmr.wte", "embed_tokens")
NOT_PER_TOKEN = ("cond_enc.", "text_head.")  # conditioning runs once; text logits never


def read_bandwidth(gib: float = 1.0) -> dict[str, float]:
    """Bytes/s of three ways to stream ``gib`` GiB of float32 from memory once."""
    rows = int(gib * 2**30 / 4 / 4096)
    weight_np = np.random.default_rng(0).standard_normal((rows, 4096), dtype=np.float32)
    weight = mx.array(weight_np)
    vector = mx.ones((1, rows))
    mx.eval(weight, vector)
    nbytes = weight_np.nbytes
    return {
        "numpy sum": nbytes / best_time(lambda: weight_np.sum()),
        "mlx sum": nbytes / best_time(lambda: mx.eval(mx.sum(weight))),
        "mlx matvec (BLAS)": nbytes / best_time(lambda: mx.eval(vector @ weight)),
    }


def bytes_per_token(model: T3, context: int, batch: int) -> tuple[int, int]:
    """(weight bytes, KV cache bytes) read to decode one token at ``context`` length."""
    weights = 0
    for name, value in tree_flatten(model.parameters()):
        if name.startswith(NOT_PER_TOKEN):
            continue
        if any(part in name for part in ROW_READ):
            weights += value.nbytes // value.shape[0]
        else:
            weights += value.nbytes
    cfg = model.config
    kv = 2 * cfg.num_layers * batch * context * cfg.num_kv_heads * cfg.head_dim * 4
    return weights, kv


def decode_times(model: T3, variant: str, n_tokens: int) -> tuple[list[float], int]:
    """Seconds per decode step (prefill excluded) and the mean context length."""
    rng = np.random.default_rng(0)
    n_prompt = 150 if variant == "cfg" else 375
    vocab = 704 if variant == "cfg" else 50276
    cond = T3Cond(
        mx.array(rng.standard_normal((1, 256)).astype(np.float32)),
        mx.array(rng.integers(0, 6561, (1, n_prompt))),
        0.5,
    )
    text = rng.integers(1, vocab, 40).tolist()
    text = mx.array([[255, *text, 0]] if variant == "cfg" else [text])
    key = mx.random.key(0)
    sampler = Sampler.cfg(top_p=1.0) if variant == "cfg" else Sampler.turbo()
    steps = model.generate_steps(cond, text, sampler, max_new_tokens=n_tokens, key=key)
    stamps = [time.perf_counter()]
    for _ in steps:
        stamps.append(time.perf_counter())
    per_step = np.diff(stamps)[1:].tolist()  # step 0 holds the prefill
    prefix = (32 if variant == "cfg" else 0) + n_prompt + 42 + 1
    return per_step, prefix + n_tokens // 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=list(CONFIGS), default="turbo")
    parser.add_argument("--tokens", type=int, default=60, help="speech tokens to generate")
    parser.add_argument("--quantize", type=int, choices=(4, 8), help="T3 backbone bits")
    args = parser.parse_args()

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; mlx {mx.__version__} "
          f"{mx.default_device()}; BLAS: {chatterbox_mlx.cpu.blas.status}")  # fmt: skip
    bandwidth = read_bandwidth()
    for name, rate in bandwidth.items():
        print(f"  read bandwidth, {name:<18} {rate / 1e9:6.2f} GB/s")
    best = max(bandwidth.values())

    model = load_t3(T3(CONFIGS[args.variant]()), load_safetensors(cached_checkpoint(
        f"t3_{args.variant}")))  # fmt: skip
    if args.quantize:
        quantize_t3(model, bits=args.quantize, group_size=64)
    mx.eval(model.parameters())
    per_step, context = decode_times(model, args.variant, args.tokens)
    weights, kv = bytes_per_token(model, context, batch=2 if args.variant == "cfg" else 1)
    floor_ms = 1e3 * (weights + kv) / best
    measured_ms = 1e3 * statistics.median(per_step)
    dtype = f"{args.quantize}-bit" if args.quantize else "float32"
    print(f"T3 {args.variant} ({dtype}): reads {weights / 1e9:.3f} GB of weights + "
          f"{kv / 1e9:.3f} GB of KV cache per token (context {context})")  # fmt: skip
    print(f"  floor at {best / 1e9:.2f} GB/s      {floor_ms:7.1f} ms/token")
    ratio = measured_ms / floor_ms
    print(f"  measured (median)      {measured_ms:7.1f} ms/token  = {ratio:.2f}x floor")


if __name__ == "__main__":
    main()

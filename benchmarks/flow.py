"""S3Gen flow speed: MLX port vs the PyTorch reference, same machine, same checkpoint.

Both load the ``flow.`` tensors of the same full-size real-layout random checkpoint
(tests/helpers/checkpoints.py, seed 0) and run the same token counts (prompt + generated).
Reported per variant: the encoder and one Euler step (the estimator on the CFG batch of 2
for English, batch 1 for meanflow), each timed once after one warm-up run, and the whole
solve (encoder + all steps), timed once (its kernels already warm from the step).
The reference runs in a subprocess of .refenv.

    python benchmarks/flow.py [--prompt-tokens 150] [--tokens 60] [--variant english meanflow]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import chatterbox_mlx  # noqa: E402,F401  (BLAS before mlx.core)

# isort: split
from chatterbox_mlx.models import layers  # noqa: E402
from chatterbox_mlx.models.flow import load_flow  # noqa: E402

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from tests.helpers.checkpoints import cached_checkpoint  # noqa: E402

FILES = {"english": "s3gen", "meanflow": "s3gen_meanflow"}

REFERENCE = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np, torch
from safetensors.numpy import load_file
sys.path.insert(0, sys.argv[1] + "/tests/reference")
from gen_flow import FULL_DECODER, FULL_ENCODER, build_flow
from tests.helpers.checkpoints import cached_checkpoint
torch.set_num_threads(2)
name, n_prompt, n_tokens = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
meanflow = name == "s3gen_meanflow"
flow = build_flow(FULL_ENCODER, FULL_DECODER, meanflow)
weights = load_file(str(cached_checkpoint(name)))
flow.load_state_dict({k[5:]: torch.from_numpy(v) for k, v in weights.items()
                      if k.startswith("flow.")}, strict=True)
rng = np.random.default_rng(0)
tok = torch.from_numpy(rng.integers(0, 6561, (1, n_tokens)))
ptok = torch.from_numpy(rng.integers(0, 6561, (1, n_prompt)))
feat = torch.randn(1, 2 * n_prompt, 80)
emb = torch.randn(1, 192)
def solve():
    noised = torch.randn(1, 80, 2 * n_tokens) if meanflow else None
    return flow.inference(tok, torch.tensor([n_tokens]), ptok, torch.tensor([n_prompt]), feat,
                          None, emb, True, n_timesteps=2 if meanflow else 10,
                          noised_mels=noised, meanflow=meanflow)
def encoder():
    allt = torch.cat([ptok, tok], 1)
    return flow.encoder(flow.input_embedding(allt), torch.tensor([allt.shape[1]]))
T = 2 * (n_prompt + n_tokens)
B = 1 if meanflow else 2
x = torch.randn(B, 80, T); mask = torch.ones(B, 1, T); t = torch.full((B,), 0.3)
r = torch.full((B,), 0.6) if meanflow else None
def step():
    return flow.decoder.estimator.forward(x=x, mask=mask, mu=x, t=t, spks=torch.randn(B, 80),
                                          cond=x, r=r)
out = {}
with torch.inference_mode():
    for key, fn in (("encoder", encoder), ("step", step), ("solve", solve)):
        if key != "solve":
            fn()
        t0 = time.perf_counter(); fn(); out[key] = time.perf_counter() - t0
print("RESULT " + json.dumps(out))
"""


def reference_times(name: str, n_prompt: int, n_tokens: int) -> dict[str, float]:
    proc = subprocess.run(
        [
            str(ROOT / ".refenv/bin/python"),
            "-c",
            REFERENCE,
            str(ROOT),
            name,
            str(n_prompt),
            str(n_tokens),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"reference run failed:\n{proc.stderr[-3000:]}")


def timed(fn, warm_up: bool = True) -> float:
    if warm_up:
        mx.eval(fn())
    t0 = time.perf_counter()
    mx.eval(fn())
    return time.perf_counter() - t0


def mlx_times(name: str, n_prompt: int, n_tokens: int) -> dict[str, float]:
    flow = load_flow(cached_checkpoint(name))
    mx.eval(flow.parameters())
    meanflow = flow.config.meanflow
    rng = np.random.default_rng(0)
    tok = rng.integers(0, 6561, n_tokens)
    ptok = rng.integers(0, 6561, n_prompt)
    feat = mx.random.normal((2 * n_prompt, 80))
    emb = mx.random.normal((192,))
    length, batch = 2 * (n_prompt + n_tokens), 1 if meanflow else 2
    cfm = flow.decoder
    x = mx.random.normal((1, length, 80))
    t, r = mx.array([0.3]), mx.array([0.6])
    if meanflow:
        spks = mx.random.normal((1, 80))

        def step():
            return cfm._step("plain")(x, t, r, x, spks, x)
    else:
        x2, spks2 = mx.concatenate([x, x]), mx.random.normal((2, 80))

        def step():
            return cfm._step("cfg")(x, t, r, x2, spks2, x2)

    all_tokens = mx.array(np.concatenate([ptok, tok]))[None]
    assert batch in (1, 2)
    return {
        "encoder": timed(lambda: flow.encode(all_tokens)),
        "step": timed(step),
        "solve": timed(lambda: flow(tok, ptok, feat, emb), warm_up=False),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompt-tokens", type=int, default=150)
    parser.add_argument("--tokens", type=int, default=60)
    parser.add_argument("--variant", nargs="+", default=["english", "meanflow"], choices=FILES)
    args = parser.parse_args()
    frames = 2 * (args.prompt_tokens + args.tokens)
    print(f"S3Gen flow, {args.prompt_tokens} prompt + {args.tokens} tokens = {frames} mel frames")
    kernels = "CPU kernels" if layers.cpu_kernels_active() else "MLX formulations"
    print(f"mlx runs its {kernels} (CHATTERBOX_MLX_CPU_KERNELS=off: the GPU's formulations)")
    for variant in args.variant:
        name = FILES[variant]
        ours = mlx_times(name, args.prompt_tokens, args.tokens)
        ref = reference_times(name, args.prompt_tokens, args.tokens)
        print(f"{variant}:")
        for key in ("encoder", "step", "solve"):
            print(
                f"  {key:8s} mlx {ours[key]:7.3f} s   reference {ref[key]:7.3f} s   "
                f"speed-up x{ref[key] / ours[key]:.2f}"
            )


if __name__ == "__main__":
    main()

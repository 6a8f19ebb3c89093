"""T3 speed: tokens/s of the MLX port at float32, 8-bit and 4-bit against the PyTorch
reference (a subprocess in .refenv), on the same full-size random checkpoint, one run each.
Also prints how far the quantized speech logits drift from float32.

Usage: python benchmarks/t3.py [--variant cfg|turbo|nano] [--tokens 30]
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

import chatterbox_mlx  # noqa: E402, F401, I001  (BLAS before mlx.core)
import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from chatterbox_mlx.models.t3 import T3, T3Cond, T3Config, load_t3, quantize_t3  # noqa: E402
from chatterbox_mlx.models.weights import load_safetensors  # noqa: E402
from tests.helpers.checkpoints import cached_checkpoint  # noqa: E402

CONFIGS = {"cfg": T3Config.english, "turbo": T3Config.turbo, "nano": T3Config.nano}

REFERENCE = r"""
import json, sys, time
import numpy as np, torch
from safetensors.torch import load_file
from chatterbox.models.t3 import t3 as t3_module
from chatterbox.models.t3.llama_configs import GPT2_MEDIUM_CONFIG, LLAMA_CONFIGS
from chatterbox.models.t3.modules.cond_enc import T3Cond
from chatterbox.models.t3.modules.t3_config import T3Config

variant, path, n_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
LLAMA_CONFIGS.setdefault(
    "GPT2_small", dict(GPT2_MEDIUM_CONFIG, n_embd=768, hidden_size=768, n_head=12, n_layer=12)
)
if variant == "cfg":
    hp = T3Config.english_only()
else:
    hp = T3Config(text_tokens_dict_size=50276)
    hp.llama_config_name = "GPT2_medium" if variant == "turbo" else "GPT2_small"
    hp.speech_tokens_dict_size = 6563
    hp.input_pos_emb = None
    hp.speech_cond_prompt_len = 375
    hp.use_perceiver_resampler = False
    hp.emotion_adv = False
model = t3_module.T3(hp)
model.load_state_dict(load_file(path), strict=True)
if model.is_gpt:
    del model.tfmr.wte
model.eval()
inputs = json.loads(sys.stdin.read())
cond = T3Cond(
    speaker_emb=torch.tensor(inputs["speaker"], dtype=torch.float32),
    cond_prompt_speech_tokens=torch.tensor(inputs["prompt"]),
    emotion_adv=torch.full((1, 1, 1), 0.5),
)
text = torch.tensor(inputs["text"])
torch.manual_seed(0)
start = time.perf_counter()
if variant == "cfg":
    tokens = model.inference(
        t3_cond=cond, text_tokens=torch.cat([text, text]), max_new_tokens=n_tokens, top_p=1.0
    )
else:
    tokens = model.inference_turbo(cond, text, max_gen_len=n_tokens - 1)
seconds = time.perf_counter() - start
print(json.dumps({"tokens": int(tokens.shape[1]), "seconds": seconds}))
"""


def make_inputs(variant: str) -> dict:
    rng = np.random.default_rng(0)
    n_prompt = 150 if variant == "cfg" else 375
    if variant == "cfg":
        text = [255, *rng.integers(1, 704, 40).tolist(), 0]
    else:
        text = rng.integers(0, 50276, 40).tolist()
    return {
        "speaker": rng.standard_normal((1, 256)).astype(np.float32).tolist(),
        "prompt": [rng.integers(0, 6561, n_prompt).tolist()],
        "text": [text],
    }


def run_reference(variant: str, path: Path, n_tokens: int, inputs: dict) -> dict:
    if not (ROOT / ".refenv/bin/python").exists():
        sys.exit("reference venv not found at .refenv: bash benchmarks/reference/setup_refenv.sh")
    env = dict(os.environ, OMP_NUM_THREADS="2")
    result = subprocess.run(
        [str(ROOT / ".refenv/bin/python"), "-c", REFERENCE, variant, str(path), str(n_tokens)],
        input=json.dumps(inputs),
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if result.returncode:
        raise RuntimeError(f"reference failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_mlx(model: T3, variant: str, n_tokens: int, inputs: dict) -> dict:
    cond = T3Cond(
        mx.array(np.array(inputs["speaker"], dtype=np.float32)), mx.array(inputs["prompt"]), 0.5
    )
    text = mx.array(inputs["text"])
    key = mx.random.key(0)
    model.clear_prefixes()  # like for like: the reference prefills the voice prompt every time
    start = time.perf_counter()
    if variant == "cfg":
        tokens = model.inference(cond, text, max_new_tokens=n_tokens, top_p=1.0, key=key)
    else:
        tokens = model.inference_turbo(cond, text, max_gen_len=n_tokens - 1, key=key)
    return {"tokens": int(tokens.shape[1]), "seconds": time.perf_counter() - start}


def speech_logits(model: T3, inputs: dict) -> np.ndarray:
    cond = T3Cond(
        mx.array(np.array(inputs["speaker"], dtype=np.float32)), mx.array(inputs["prompt"]), 0.5
    )
    speech = mx.array([[model.config.start_speech_token, 1, 2, 3, 4, 5, 6, 7]])
    return np.array(model(cond, mx.array(inputs["text"]), speech)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variant", choices=list(CONFIGS), default="cfg")
    parser.add_argument("--tokens", type=int, default=30, help="speech tokens to generate")
    args = parser.parse_args()

    path = cached_checkpoint(f"t3_{args.variant}")
    inputs = make_inputs(args.variant)
    print(f"T3 {args.variant}: {args.tokens} tokens, checkpoint {path}")

    reference = run_reference(args.variant, path, args.tokens, inputs)
    ref_rate = reference["tokens"] / reference["seconds"]
    print(f"reference (torch, CPU)  {ref_rate:7.2f} tokens/s")

    float_logits = None
    for bits in (None, 8, 4):
        model = load_t3(T3(CONFIGS[args.variant]()), load_safetensors(path))
        if bits:
            quantize_t3(model, bits=bits, group_size=64)
        mx.eval(model.parameters())
        result = run_mlx(model, args.variant, args.tokens, inputs)
        rate = result["tokens"] / result["seconds"]
        logits = speech_logits(model, inputs)
        label = "float32" if bits is None else f"{bits}-bit"
        line = f"mlx {label:8s}           {rate:7.2f} tokens/s  ratio {rate / ref_rate:5.2f}x"
        if float_logits is None:
            float_logits = logits
        else:
            drift = np.abs(logits - float_logits).max() / np.abs(float_logits).max()
            line += f"  logits drift vs float32 {drift:.3g} (max abs err / max abs)"
        print(line, flush=True)
        del model


if __name__ == "__main__":
    main()

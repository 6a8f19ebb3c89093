"""chatterbox-mlx vs upstream PyTorch, same machine, checkpoint, voice, text and token count.

    python benchmarks/compare_reference.py --variant turbo --tokens 101 --runs 3
    python benchmarks/compare_reference.py --variant turbo --device cuda --reference-python python3

The checkpoint is an original-layout directory (default: the full-size random checkpoint
the tests build; speed does not depend on weight values). Random weights never emit the
stop token, so both sides generate exactly ``--tokens`` speech tokens. So that the flow and
HiFT get the same work on both sides, the ids a random T3 samples outside the speech
vocabulary (English's and Multilingual's 8194 ids: about a fifth of them, a different
number on each side), which a pipeline drops, are folded into it (``% 6561``), and Turbo's
three silence tokens are appended on both sides, as both pipelines do. Each side runs in
its own process (the reference in ``.refenv``), so peak resident memory is per process.
Prints per-stage medians, the ratio reference / ours (> 1: we are faster) and the
real-time factor.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFENV_PYTHON = ROOT / ".refenv" / "bin" / "python"
STAGES = ("prepare_conditionals", "t3", "flow", "hift", "total")
TEXT = "The quick brown fox jumps over the lazy dog, and then it runs far away."

REFERENCE = textwrap.dedent(
    """
    import json, resource, sys, time
    import torch
    torch.manual_seed(0)
    args = json.loads(sys.argv[1])
    variant, ckpt, voice, n_tok = args["variant"], args["ckpt"], args["voice"], args["tokens"]
    device = args["device"]
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: this torch sees no CUDA device; use a CUDA build of torch")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    import torch.nn.functional as F
    import perth
    from chatterbox.models.s3gen.const import S3GEN_SIL
    if args["dummy_watermarker"]:  # watermarking is outside the timed stages
        perth.PerthImplicitWatermarker = perth.DummyWatermarker
    import pyloudnorm  # numpy 2 makes Turbo's loudness a float64 the S3Tokenizer rejects
    _loudness = pyloudnorm.Meter.integrated_loudness
    pyloudnorm.Meter.integrated_loudness = lambda self, x: float(_loudness(self, x))
    if variant == "english":
        from chatterbox.tts import ChatterboxTTS, punc_norm
        model = ChatterboxTTS.from_local(ckpt, device)
    else:
        from chatterbox.models.t3 import llama_configs
        llama_configs.LLAMA_CONFIGS["GPT2_small"] = dict(
            llama_configs.GPT2_MEDIUM_CONFIG, n_layer=12, n_embd=768, hidden_size=768, n_head=12,
            n_positions=8196)
        from chatterbox import tts_turbo
        from chatterbox.tts_turbo import ChatterboxTurboTTS, punc_norm
        if variant == "nano":  # upstream HEAD: GPT2_small from t3_nano_v1.safetensors
            import chatterbox.models.t3.t3 as t3mod
            real_init, real_load = t3mod.T3.__init__, tts_turbo.load_file
            def init(self, hp=None):
                hp.llama_config_name = "GPT2_small"
                real_init(self, hp)
            t3mod.T3.__init__ = init
            tts_turbo.load_file = lambda p: real_load(str(p).replace("turbo_v1", "nano_v1"))
        model = ChatterboxTurboTTS.from_local(ckpt, device)
    times = {k: [] for k in ("prepare_conditionals", "t3", "flow", "hift", "total")}
    for run in range(-args["warmup"], args["runs"]):
        t0 = time.perf_counter()
        model.prepare_conditionals(voice)
        sync()
        t1 = time.perf_counter()
        text = punc_norm(args["text"])
        with torch.inference_mode():
            if variant == "english":
                tt = model.tokenizer.text_to_tokens(text).to(device)
                tt = torch.cat([tt, tt], dim=0)
                tt = F.pad(F.pad(tt, (1, 0), value=255), (0, 1), value=0)
                tokens = model.t3.inference(t3_cond=model.conds.t3, text_tokens=tt,
                                            max_new_tokens=n_tok, cfg_weight=0.5)[0]
                steps = 10
            else:
                tt = model.tokenizer(text, return_tensors="pt").input_ids.to(device)
                tokens = model.t3.inference_turbo(model.conds.t3, tt, max_gen_len=n_tok - 1)
                steps = 2
            tokens = tokens.reshape(-1) % 6561  # the same count on both sides: see above
            if variant != "english":
                tokens = torch.cat([tokens, torch.full((3,), S3GEN_SIL, dtype=tokens.dtype)])
            tokens = tokens.reshape(1, -1)
            sync()
            t2 = time.perf_counter()
            mel = model.s3gen.flow_inference(tokens, ref_dict=model.conds.gen,
                                             n_cfm_timesteps=steps, finalize=True)
            sync()
            t3 = time.perf_counter()
            wav, _ = model.s3gen.hift_inference(mel)
            sync()
            t4 = time.perf_counter()
        if run < 0:
            continue
        for k, v in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
            times[k].append(v)
        times.setdefault("tokens", []).append(int(tokens.numel()))
        times.setdefault("audio_s", []).append(wav.shape[-1] / 24000)
    times["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device == "cuda":
        times["peak_device_mb"] = torch.cuda.max_memory_allocated() / 2**20
        times["backend"] = f"torch {torch.__version__} on {torch.cuda.get_device_name()}"
    else:
        times["backend"] = f"torch {torch.__version__} cpu, {torch.get_num_threads()} threads"
    print("RESULT" + json.dumps(times))
    """
)

OURS = textwrap.dedent(
    """
    import json, resource, sys, time
    import chatterbox_mlx
    import mlx.core as mx
    from chatterbox_mlx import text as T
    from chatterbox_mlx.tts import ChatterboxTTS, ChatterboxTurboTTS
    args = json.loads(sys.argv[1])
    mx.set_default_device(mx.gpu if args["device"] == "cuda" else mx.cpu)
    variant, n_tok = args["variant"], args["tokens"]
    cls = ChatterboxTTS if variant == "english" else ChatterboxTurboTTS
    nano = {"nano": True} if variant == "nano" else {}
    model = cls.from_local(args["converted"], quantize=args["quantize"] or None, **nano)
    mx.random.seed(0)
    times = {k: [] for k in ("prepare_conditionals", "t3", "flow", "hift", "total")}
    for run in range(-args["warmup"], args["runs"]):
        t0 = time.perf_counter()
        model.prepare_conditionals(args["voice"])
        mx.eval([v for v in (*vars(model.conds.t3).values(), *vars(model.conds.gen).values())
                 if isinstance(v, mx.array)])
        t1 = time.perf_counter()
        spec = model.variant  # what the one pipeline reads: sampler, tail tokens, flow steps
        params = dict(spec.generation, max_new_tokens=n_tok)
        text_tokens = model._encode(args["text"], None)
        model.t3.clear_prefixes()  # like for like: the reference prefills the voice every time
        steps = model.t3.generate_steps(model.conds.t3, text_tokens, model._sampler(params),
                                        max_new_tokens=n_tok)
        tokens = [s.token % 6561 for s in steps] + list(spec.tail_tokens)  # see the docstring
        tokens = mx.array(tokens, dtype=mx.int32)
        t2 = time.perf_counter()
        mel = model.s3gen.flow_inference(tokens, model.conds.gen, spec.flow_steps)
        mx.eval(mel)
        t3 = time.perf_counter()
        wav, _ = model.s3gen.hift_inference(mel)
        mx.eval(wav)
        t4 = time.perf_counter()
        if run < 0:
            continue
        for k, v in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
            times[k].append(v)
        times.setdefault("tokens", []).append(int(tokens.size))
        times.setdefault("audio_s", []).append(wav.shape[-1] / 24000)
    times["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args["device"] == "cuda":
        times["peak_device_mb"] = mx.get_peak_memory() / 2**20
        name = mx.device_info().get("device_name", "") if hasattr(mx, "device_info") else ""
        times["backend"] = f"mlx {mx.__version__} {mx.default_device()} {name}".rstrip()
    else:
        blas = chatterbox_mlx.cpu.blas.status
        times["backend"] = f"mlx {mx.__version__} {mx.default_device()}, BLAS: {blas}"
    print("RESULT" + json.dumps(times))
    """
)


def run(python: str, script: str, args: dict) -> dict:
    proc = subprocess.run(
        [python, "-c", script, json.dumps(args)], capture_output=True, text=True, cwd=ROOT
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT"):
            return json.loads(line[len("RESULT") :])
    raise RuntimeError(f"{python} failed:\n{proc.stderr[-3000:]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", choices=("english", "turbo", "nano"), default="turbo")
    p.add_argument("--tokens", type=int, default=101)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first, on both sides")
    p.add_argument("--quantize", type=int, nargs="*", default=[0], help="0 (float32), 8, 4")
    p.add_argument("--checkpoint", type=Path, help="original-layout directory")
    p.add_argument("--voice", type=Path)
    p.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cuda: torch CUDA against MLX's CUDA backend (mlx[cuda13])",
    )
    p.add_argument(
        "--reference-python",
        default=str(REFENV_PYTHON),
        help="a Python with chatterbox-tts 0.1.7 (default: .refenv)",
    )
    p.add_argument(
        "--dummy-watermarker",
        action="store_true",
        help="reference: perth's DummyWatermarker (for an install without "
        "perth's weights; watermarking is not among the timed stages)",
    )
    args = p.parse_args()
    if args.device == "cuda":
        import mlx.core as mx

        if not mx.is_available(mx.gpu):
            p.error("--device cuda: this MLX has no GPU backend; install mlx[cuda13] (or cuda12)")

    if not shutil.which(args.reference_python):
        p.error(f"--reference-python {args.reference_python} not found; build the reference "
                "venv with: bash benchmarks/reference/setup_refenv.sh")  # fmt: skip
    sys.path.insert(0, str(ROOT))
    from benchmarks.common import make_voice
    from tests.helpers.sources import converted_dir

    converted = converted_dir(args.variant)
    source = args.checkpoint or converted.parent / f"source-{args.variant}-seed0"
    if args.checkpoint:
        from chatterbox_mlx.checkpoints.convert import convert

        converted = Path(tempfile.mkdtemp()) / "converted"
        convert(args.checkpoint, converted)
    voice = args.voice or make_voice()
    common = dict(variant=args.variant, voice=str(voice), tokens=args.tokens, runs=args.runs,
                  warmup=args.warmup, text=TEXT, device=args.device)  # fmt: skip
    ref = run(
        args.reference_python,
        REFERENCE,
        dict(common, ckpt=str(source), dummy_watermarker=args.dummy_watermarker),
    )
    ours = {q: run(sys.executable, OURS, dict(common, converted=str(converted), quantize=q))
            for q in args.quantize}  # fmt: skip

    print(f"machine: {platform.machine()} {platform.processor() or ''}, "
          f"{__import__('os').cpu_count()} cores; variant {args.variant}, "
          f"{args.tokens} speech tokens, median of {args.runs} runs")  # fmt: skip
    print(f"reference: {ref['backend']}")
    for q, r in ours.items():
        print(f"ours ({'float32' if not q else f'{q}-bit T3'}): {r['backend']}")
    header = f"{'stage':<22}{'reference s':>12}" + "".join(
        f"{('ours f32' if not q else f'ours {q}-bit'):>12}{'ratio':>8}" for q in ours
    )
    print(header)
    for stage in STAGES:
        ref_s = statistics.median(ref[stage])
        row = f"{stage:<22}{ref_s:>12.2f}"
        for r in ours.values():
            s = statistics.median(r[stage])
            row += f"{s:>12.2f}{ref_s / s:>8.2f}"
        print(row)
    t3_row = f"{'T3 per token (ms)':<22}{1e3 * statistics.median(ref['t3']) / args.tokens:>12.1f}"
    for r in ours.values():
        ms = 1e3 * statistics.median(r["t3"]) / args.tokens
        t3_row += f"{ms:>12.1f}{statistics.median(ref['t3']) / statistics.median(r['t3']):>8.2f}"
    print(t3_row)
    for key, label in (("tokens", "speech tokens to flow"), ("audio_s", "audio (s)")):
        row = f"{label:<22}{statistics.median(ref[key]):>12.4g}"
        for r in ours.values():
            row += f"{statistics.median(r[key]):>12.4g}{'':>8}"
        print(row)
    audio_s = statistics.median(ref["audio_s"])
    rtf = f"{'RTF (total / audio)':<22}{statistics.median(ref['total']) / audio_s:>12.2f}"
    for r in ours.values():
        rtf += f"{statistics.median(r['total']) / statistics.median(r['audio_s']):>12.2f}{'':>8}"
    print(rtf)
    mem = f"{'peak RSS (MB)':<22}{ref['peak_rss_mb']:>12.0f}"
    for r in ours.values():
        mem += f"{r['peak_rss_mb']:>12.0f}{ref['peak_rss_mb'] / r['peak_rss_mb']:>8.2f}"
    print(mem)
    if args.device == "cuda":
        mem = f"{'peak GPU memory (MB)':<22}{ref['peak_device_mb']:>12.0f}"
        for r in ours.values():
            mem += f"{r['peak_device_mb']:>12.0f}"
            mem += f"{ref['peak_device_mb'] / r['peak_device_mb']:>8.2f}"
        print(mem)


if __name__ == "__main__":
    main()

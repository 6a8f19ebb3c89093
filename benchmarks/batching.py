"""Batched generation against one row at a time, on the same checkpoint in one run.

For each ``--batch`` size B: T3 alone (``T3.generate_batch`` over B texts) as aggregate
tokens/s and its ratio to B = 1; end to end, ``generate_batch`` of the B texts with
``batch_size=B`` against the same texts one after another (``batch_size=1``); and the
peak RSS of the batched run. Then the long-text case: one ``generate()`` of 8 sentences
(8 chunks) with ``--long-batch`` against ``batch_size=1``.

    python benchmarks/batching.py --variant turbo --batch 1,2,4,8 --tokens 30 --rounds 2

Rows shaped like speech: random weights never stop, so ``--tokens`` sets how much a row
speaks, and ``--words`` how long its sentence is; a word speaks about 10 tokens (150 words
a minute, 25 tokens a second), so ``--words 12 --tokens 120`` (the long text: ``--words 36
--tokens 330``). The tests' synthetic tokenizers give ~1.2 characters a token (GPT-2's
BPE ~4), so the prefill here is still longer than with real files.

Each measurement runs in a child process of its own (peak RSS is per process), and the
rounds alternate over all of them, so slow spells of a shared machine hit every side;
the fastest of the rounds is kept and the range printed. Random weights rarely stop, so
a row makes about ``--tokens`` speech tokens (T3's rate counts the tokens it made). The
warm-up leaves the voice's conditioning prefix cached, as it is for every prompt after a
voice's first (``models/t3/prefix.py``): prefill is the text's. ``--model PATH``: a
converted or original directory (default: the tests' random-weight checkpoint of ``--variant``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"cfg": "english", "english": "english", "turbo": "turbo", "nano": "nano",
            "multilingual": "multilingual"}  # fmt: skip
WORDS = (
    "the quick brown fox jumps over a lazy dog near the river bank while seven small "
    "birds sing in the tall green trees and an old man reads his morning paper"
).split()


def sentence(i: int, words: int = 36) -> str:
    """A sentence of its own words (about 200 characters: two never share a chunk)."""
    picked = [WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(words)]
    return f"Sentence {i + 1}: " + " ".join(picked).capitalize() + "."


def load(model_path: str | None, variant: str):
    sys.path.insert(0, str(ROOT))
    import chatterbox_mlx  # noqa: F401  (BLAS before mlx.core)
    from chatterbox_mlx.tts import ChatterboxMultilingualTTS, ChatterboxTTS, ChatterboxTurboTTS

    if model_path is None:
        from tests.helpers.sources import converted_dir

        model_path = converted_dir(variant)
    if variant == "english":
        return ChatterboxTTS.from_local(model_path)
    if variant == "multilingual":
        return ChatterboxMultilingualTTS.from_local(model_path)
    return ChatterboxTurboTTS.from_local(model_path, nano=variant == "nano")


def t3_rows(model, texts: list[str], tokens: int, language):
    from chatterbox_mlx import params as params_mod
    from chatterbox_mlx.models.t3.batch import BatchRow

    import mlx.core as mx

    params = params_mod.resolve(model.variant, {"max_new_tokens": tokens})
    sampler = model._sampler(params)
    return [BatchRow(model.conds.t3, model._encode(text, language), sampler, tokens,
                     key=mx.random.key(i)) for i, text in enumerate(texts)]  # fmt: skip


def child(args) -> dict:
    """One measurement (``args.child``) at batch size ``args.size``; a JSON line."""
    model = load(args.model, args.variant)
    language = "en" if args.variant == "multilingual" else None
    lang = {"language_id": language} if language else {}
    kwargs = dict(max_new_tokens=args.tokens, seed=0, watermark=False, **lang)
    warm_up(model, kwargs)
    size, out = args.size, {}
    texts = [sentence(i, args.words) for i in range(size)]
    if args.child == "batch":
        rows = t3_rows(model, texts, args.tokens, language)
        out["text_tokens"] = sum(row.text_tokens.shape[-1] for row in rows) / size
        started = time.perf_counter()
        count, joined = 0, None
        for event in model.t3.generate_batch(rows, batch_size=size):
            count += event.step is not None
            if joined is None:  # every row prefilled and sampled its first token
                joined = time.perf_counter()
        ended = time.perf_counter()
        out["t3_tokens_per_s"] = count / (ended - started)
        out["t3_prefill_s"] = joined - started
        out["t3_decode_tokens_per_s"] = (count - size) / max(ended - joined, 1e-9)
        if args.t3_only:
            return {**out, "peak_rss_mb": peak_rss_mb()}
        started = time.perf_counter()
        model.generate_batch(texts, batch_size=size, **kwargs)
        out["e2e_s"] = time.perf_counter() - started
    elif args.child == "sequential":
        started = time.perf_counter()
        model.generate_batch(texts, batch_size=1, **kwargs)
        out["e2e_s"] = time.perf_counter() - started
    else:  # long: one generate() of 8 sentences
        text = " ".join(sentence(i, args.words) for i in range(8))
        started = time.perf_counter()
        model.generate(text, batch_size=size, **kwargs)
        out["e2e_s"] = time.perf_counter() - started
        out["chunks"] = len(model.last_stats["T3 finished per chunk"])
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def warm_up(model, kwargs: dict) -> None:
    """One short generation (first-call costs, and the voice's conditioning prefix, which
    every later prompt in that voice reuses). Random English weights can draw the stop
    token first, so a few seeds are tried."""
    for seed in range(10):
        try:
            model.generate("Warm up.", **{**kwargs, "max_new_tokens": 2, "seed": seed})
            return
        except RuntimeError as err:
            if "no speech tokens" not in str(err):
                raise
    raise RuntimeError("ten seeds drew the stop token first; pass --model with other weights")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def s3gen_rounds(args) -> None:
    """S3Gen over ``--s3gen-chunks`` chunks of ``--tokens`` tokens each: the flow and HiFT
    per chunk against one call over all of them as a batch (equal lengths, so no padding
    or length mask: the most a batched S3Gen could win), in alternating rounds."""
    model = load(args.model, args.variant)  # imports chatterbox_mlx (its BLAS) before mlx.core
    import mlx.core as mx

    s3gen, gen = model.s3gen, model.conds.gen
    chunks, steps = args.s3gen_chunks, model.variant.flow_steps
    tokens = mx.random.randint(0, 6561, (chunks, args.tokens), key=mx.random.key(0))
    prompt_tokens, prompt_feat = gen.prompt_token.reshape(-1), gen.prompt_feat.reshape(-1, 80)

    def flow(batch):
        mel = s3gen.flow(batch, prompt_tokens=prompt_tokens, prompt_feat=prompt_feat,
                         embedding=gen.embedding.reshape(-1), n_timesteps=steps,
                         key=mx.random.key(1))  # fmt: skip
        mx.eval(mel)
        return mel

    mels = flow(tokens)
    mx.eval(mels)
    sides = {
        "flow per chunk": lambda: [flow(tokens[i : i + 1]) for i in range(chunks)],
        "flow batched": lambda: flow(tokens),
        "hift per chunk": lambda: [
            mx.eval(s3gen.mel2wav(mels[i : i + 1])[0]) for i in range(chunks)
        ],  # fmt: skip
        "hift batched": lambda: mx.eval(s3gen.mel2wav(mels)[0]),
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, fn in sides.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    print(f"S3Gen, {args.variant}, {chunks} chunks of {args.tokens} tokens ({steps} flow "
          f"steps), {args.rounds} alternating rounds: best s (range)")  # fmt: skip
    for stage in ("flow", "hift"):
        one, many = times[f"{stage} per chunk"], times[f"{stage} batched"]
        print(f"{stage}: per chunk {min(one):.2f} ({spread(one)}), batched {min(many):.2f} "
              f"({spread(many)}): batched {min(one) / min(many):.2f}x")  # fmt: skip


def run_child(args, what: str, size: int) -> dict:
    cmd = [sys.executable, __file__, "--child", what, "--size", str(size), "--variant",
           args.variant, "--tokens", str(args.tokens), "--words", str(args.words)]  # fmt: skip
    if args.t3_only:
        cmd.append("--t3-only")
    if args.model:
        cmd += ["--model", args.model]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise RuntimeError(f"{what} {size} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", choices=list(VARIANTS), default="turbo")
    p.add_argument("--batch", default="1,2,4,8", help="batch sizes, comma-separated")
    p.add_argument("--tokens", type=int, default=30, help="speech tokens per row")
    p.add_argument("--words", type=int, default=36, help="words per row's sentence")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--long-batch", type=int, default=4, help="batch size of the long text")
    p.add_argument("--no-long", action="store_true", help="skip the long-text case")
    p.add_argument("--t3-only", action="store_true", help="T3 alone: no end-to-end runs")
    p.add_argument("--long-only", action="store_true", help="only the long-text case")
    p.add_argument("--model", help="converted or original model directory")
    p.add_argument("--json", help="write the rows here (a list of objects)")
    p.add_argument(
        "--s3gen-chunks",
        type=int,
        default=0,
        help="only measure S3Gen batched over this many chunks against per chunk",
    )
    p.add_argument("--child", choices=["batch", "sequential", "long"], help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.words < 1 or args.tokens < 1:
        p.error("--words and --tokens must be at least 1")
    args.variant = VARIANTS[args.variant]
    if args.child:
        print(json.dumps(child(args)))
        return
    if args.s3gen_chunks:
        s3gen_rounds(args)
        return
    sizes = sorted({int(b) for b in args.batch.split(",")} | {1})
    runs: dict[tuple[str, int], list[dict]] = {}
    plan = [] if args.long_only else [("batch", b) for b in sizes]
    if not args.t3_only and not args.long_only:
        plan += [("sequential", b) for b in sizes if b > 1]
    if not args.no_long and not args.t3_only:
        plan += [("long", 1), ("long", args.long_batch)]
    for r in range(args.rounds):
        for what, size in plan:
            result = run_child(args, what, size)
            runs.setdefault((what, size), []).append(result)
            print(f"round {r + 1}: {what} {size}: {result}", file=sys.stderr, flush=True)
    report(args, sizes, runs)


def report(args, sizes, runs) -> None:
    def best(what, size, key, low=True):
        values = [r[key] for r in runs[(what, size)]]
        return (min(values) if low else max(values)), values

    if args.long_only:
        report_long(args, runs)
        return
    base_rate, _ = best("batch", 1, "t3_tokens_per_s", low=False)
    base_rss, _ = best("batch", 1, "peak_rss_mb")
    text_tokens = runs[("batch", 1)][0]["text_tokens"]
    print(f"{args.variant}, {args.words}-word sentences ({text_tokens:.0f} text tokens), "
          f"{args.tokens} speech tokens per row, {args.rounds} alternating rounds (best, "
          "with the range)")  # fmt: skip
    base_decode, _ = best("batch", 1, "t3_decode_tokens_per_s", low=False)
    print("batch  T3 tok/s (range)      x b1  decode tok/s  x b1  prefill s  "
          "e2e s (range)        x seq  peak RSS MB  x b1")  # fmt: skip
    rows = []
    for size in sizes:
        rate, rates = best("batch", size, "t3_tokens_per_s", low=False)
        decode, _ = best("batch", size, "t3_decode_tokens_per_s", low=False)
        prefill, _ = best("batch", size, "t3_prefill_s")
        rss, _ = best("batch", size, "peak_rss_mb")
        row = {"batch": size, "t3_tokens_per_s": round(rate, 3),
               "t3_speedup": round(rate / base_rate, 3),
               "t3_decode_tokens_per_s": round(decode, 3),
               "t3_decode_speedup": round(decode / base_decode, 3)}  # fmt: skip
        e2e_text = f"{'-':>27s}"
        if not args.t3_only:
            e2e, e2es = best("batch", size, "e2e_s")
            seq, _ = best("sequential", size, "e2e_s") if size > 1 else (e2e, None)
            row.update(e2e_s=round(e2e, 3), e2e_speedup=round(seq / e2e, 3))
            e2e_text = f"{e2e:7.2f} ({spread(e2es):>11s})  {seq / e2e:5.2f}"
        row["peak_rss_mb"] = round(rss, 1)
        rows.append(row)
        print(f"{size:5d}  {rate:6.2f} ({spread(rates):>11s})  {rate / base_rate:4.2f}  "
              f"{decode:12.2f}  {decode / base_decode:4.2f}  {prefill:9.2f}  {e2e_text}  "
              f"{rss:11.0f}  {rss / base_rss:4.2f}")  # fmt: skip
    if ("long", 1) in runs:
        report_long(args, runs)
    if args.json:
        sys.path.insert(0, str(ROOT))
        from chatterbox_mlx.files import atomic_write

        with atomic_write(args.json) as f:
            f.write((json.dumps(rows, indent=1) + "\n").encode())


def report_long(args, runs) -> None:
    ones = [r["e2e_s"] for r in runs[("long", 1)]]
    manys = [r["e2e_s"] for r in runs[("long", args.long_batch)]]
    chunks = runs[("long", 1)][0]["chunks"]
    print(f"long text (8 {args.words}-word sentences, {chunks} chunks of {args.tokens} speech "
          f"tokens, one generate()): batch_size=1 {min(ones):.2f} s ({spread(ones)}), "
          f"batch_size={args.long_batch} {min(manys):.2f} s ({spread(manys)}): "
          f"{min(ones) / min(manys):.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()

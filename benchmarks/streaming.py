"""Streaming vs one-shot generation of the same utterance, same seed, same checkpoint.

    python benchmarks/streaming.py --variant turbo --tokens 250

Prints the one-shot total and the streaming run's time to its first audio chunk and its
total. Random weights never emit the stop token, so both runs generate exactly
``--tokens`` speech tokens (250 tokens = 10 s of audio). The two waveforms differ here
because each chunk draws its own flow noise; ``tests/test_pipeline.py`` compares stream
and one-shot rendering given the same draws.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import chatterbox_mlx  # noqa: E402, F401, I001  (BLAS before mlx.core)
import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from chatterbox_mlx.tts import ChatterboxTTS, ChatterboxTurboTTS  # noqa: E402
from benchmarks.common import make_voice  # noqa: E402
from tests.helpers.sources import converted_dir  # noqa: E402

TEXT = "The quick brown fox jumps over the lazy dog, and then it runs far away."


def one_shot(model, voice: Path, tokens: int) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    wav = model.generate(TEXT, voice, seed=0, watermark=False, max_new_tokens=tokens)
    mx.eval(wav)
    return time.perf_counter() - start, np.array(wav[0])


def streamed(model, voice: Path, tokens: int, chunk_tokens: int):
    start = time.perf_counter()
    first, chunks = None, []
    stream = model.generate_stream(
        TEXT, voice, seed=0, watermark=False, max_new_tokens=tokens, chunk_tokens=chunk_tokens
    )
    for chunk in stream:
        mx.eval(chunk)
        if first is None:
            first = time.perf_counter() - start
        chunks.append(np.array(chunk[0]))
    return first, time.perf_counter() - start, np.concatenate(chunks)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", choices=("english", "turbo", "nano"), default="turbo")
    p.add_argument("--tokens", type=int, default=250)
    p.add_argument("--chunk-tokens", type=int, default=25)
    p.add_argument("--runs", type=int, default=2)
    args = p.parse_args()

    cls = ChatterboxTTS if args.variant == "english" else ChatterboxTurboTTS
    nano = {"nano": True} if args.variant == "nano" else {}
    model = cls.from_local(converted_dir(args.variant), **nano)
    voice = make_voice()
    model.prepare_conditionals(voice)  # warm up; both runs below re-clone the voice

    totals, firsts, stream_totals = [], [], []
    for _ in range(args.runs):
        total, wav = one_shot(model, voice, args.tokens)
        first, stream_total, stream_wav = streamed(model, voice, args.tokens, args.chunk_tokens)
        totals.append(total)
        firsts.append(first)
        stream_totals.append(stream_total)
    total, first, stream_total = map(statistics.median, (totals, firsts, stream_totals))
    print(f"{args.variant}, {args.tokens} tokens, chunks of {args.chunk_tokens}, "
          f"median of {args.runs}; BLAS: {chatterbox_mlx.cpu.blas.status}")  # fmt: skip
    seconds, stream_seconds = len(wav) / 24000, len(stream_wav) / 24000
    print(f"audio                      {seconds:7.2f} s (streamed {stream_seconds:.2f} s)")
    print(f"one-shot total             {total:7.2f} s")
    print(f"streaming: first chunk     {first:7.2f} s  = {first / total:.2f} of one-shot")
    print(
        f"streaming: total           {stream_total:7.2f} s  = {stream_total / total:.2f}x one-shot"
    )


if __name__ == "__main__":
    main()

"""Streaming vs one-shot generation of the same utterance: cost, latency, fidelity, gaps.

    python benchmarks/streaming.py --variant turbo --tokens 250 \
        --configs 25 10,25,50,100 10,25,50,100@100

Each config is a chunk schedule (sizes in speech tokens, the last repeating) and, after
``@N``, how many of the voice prompt's last tokens condition each chunk's flow (all of them
without it: the stream before chunk schedules). For each one,
in one sitting with the one-shot runs interleaved (median of ``--runs``):

- time to the first audio chunk and the whole stream, as fractions of the one-shot total
  (both clone the voice from a clip first, as a user's first call does);
- playback: the largest gap between two chunks and the audio already queued when it began,
  the time a real-time player started at the first chunk would spend dry, and the
  start-up delay that would have avoided any gap;
- the mel departure from one-shot rendering, the measure of tests/test_pipeline.py: the
  same tokens and CFM noise through the stream's flow calls and through one flow call,
  max abs difference over the one-shot mel's peak.

Random weights never emit the stop token, so every run generates exactly ``--tokens``
speech tokens (250 tokens = 10 s of audio).
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

from chatterbox_mlx.params import parse_schedule  # noqa: E402
from chatterbox_mlx.pipeline.streaming import StreamingVocoder, chunk_sizes  # noqa: E402
from chatterbox_mlx.tts import ChatterboxTTS, ChatterboxTurboTTS  # noqa: E402
from benchmarks.common import make_voice  # noqa: E402
from tests.helpers.sources import converted_dir  # noqa: E402

TEXT = "The quick brown fox jumps over the lazy dog, and then it runs far away."
SR = 24000


def parse_config(text: str) -> tuple[tuple[int, ...], int | None]:
    schedule, _, prompt = text.partition("@")
    return parse_schedule(schedule), int(prompt) if prompt else None


def one_shot(model, voice: Path, tokens: int) -> float:
    start = time.perf_counter()
    mx.eval(model.generate(TEXT, voice, seed=0, watermark=False, max_new_tokens=tokens))
    return time.perf_counter() - start


def streamed(model, voice: Path, tokens: int, schedule, prompt) -> tuple[list, list]:
    """Arrival times (s after the call) and lengths (samples) of the stream's chunks."""
    start = time.perf_counter()
    arrivals, lengths = [], []
    stream = model.generate_stream(TEXT, voice, seed=0, watermark=False, max_new_tokens=tokens,
                                   chunk_tokens=schedule, flow_prompt_tokens=prompt)  # fmt: skip
    for chunk in stream:
        mx.eval(chunk)
        arrivals.append(time.perf_counter() - start)
        lengths.append(chunk.shape[1])
    return arrivals, lengths


def playback(arrivals: list[float], lengths: list[int]) -> dict:
    """A real-time player that starts with the first chunk and plays chunks back to back."""
    durations = [n / SR for n in lengths]
    play_end = arrivals[0]  # when what is queued so far has played
    worst_gap, queued_at_worst, dry = 0.0, 0.0, 0.0
    for k, (arrival, duration) in enumerate(zip(arrivals, durations, strict=True)):
        if k:
            gap = arrival - arrivals[k - 1]
            if gap > worst_gap:
                queued_at_worst = max(0.0, play_end - arrivals[k - 1])
                worst_gap = gap
        dry += max(0.0, arrival - play_end)
        play_end = max(play_end, arrival) + duration
    played_before = np.concatenate([[0.0], np.cumsum(durations)[:-1]])
    delay = max(0.0, float(np.max(np.array(arrivals) - arrivals[0] - played_before)))
    return {"gap": worst_gap, "queued": queued_at_worst, "dry": dry, "delay": delay}


def mel_departure(model, tokens: int, schedule, prompt) -> float:
    gen, s3gen = model.conds.gen, model.s3gen
    ids = np.random.default_rng(8).integers(0, 6561, tokens).tolist()
    ids += list(model.variant.tail_tokens)
    n_prompt = 2 * gen.prompt_token.shape[1]
    noise = mx.random.normal((1, n_prompt + 2 * len(ids), 80), key=mx.random.key(1))
    steps = model.variant.flow_steps
    vocoder = StreamingVocoder(s3gen, gen, steps, cfm_noise=noise, prompt_tokens=prompt)
    done = 0
    for size in chunk_sizes(schedule):
        if done + size > tokens:
            break
        vocoder.push(ids[done : done + size])
        done += size
    vocoder.finish(ids[done:])
    whole = np.asarray(s3gen.flow_inference(mx.array(ids), gen, steps, noise=noise)[0])
    return float(np.abs(vocoder.mel - whole).max() / np.abs(whole).max())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", choices=("english", "turbo", "nano"), default="turbo")
    p.add_argument("--tokens", type=int, default=250)
    p.add_argument("--configs", nargs="+", default=["25", "10,25,50,100"])
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--no-departure", action="store_true", help="skip the mel departure")
    args = p.parse_args()
    configs = [(text, *parse_config(text)) for text in args.configs]

    cls = ChatterboxTTS if args.variant == "english" else ChatterboxTurboTTS
    nano = {"nano": True} if args.variant == "nano" else {}
    model = cls.from_local(converted_dir(args.variant), **nano)
    voice = make_voice()
    model.prepare_conditionals(voice)  # warm up; every run below clones the voice again
    mx.eval(model.generate(TEXT, seed=0, watermark=False, max_new_tokens=8))

    totals, runs = [], {text: [] for text, *_ in configs}
    for _ in range(args.runs):
        totals.append(one_shot(model, voice, args.tokens))
        for text, schedule, prompt in configs:
            runs[text].append(streamed(model, voice, args.tokens, schedule, prompt))
    total = statistics.median(totals)

    print(f"{args.variant}, {args.tokens} speech tokens ({args.tokens / 25:.0f} s of audio), "
          f"median of {args.runs}; BLAS: {chatterbox_mlx.cpu.blas.status}")  # fmt: skip
    print(f"one-shot total {total:.2f} s (runs: {', '.join(f'{t:.2f}' for t in totals)})")
    print("config             chunks  first  first/1shot  total  total/1shot  "
          "largest gap (queued)  dry s  delay s  mel departure")  # fmt: skip
    for text, schedule, prompt in configs:
        firsts = [arrivals[0] for arrivals, _ in runs[text]]
        ends = [arrivals[-1] for arrivals, _ in runs[text]]
        first, end = statistics.median(firsts), statistics.median(ends)
        median_run = min(runs[text], key=lambda run: abs(run[0][-1] - end))
        play = playback(*median_run)
        depart = "" if args.no_departure else mel_departure(model, args.tokens, schedule, prompt)
        depart = depart if isinstance(depart, str) else f"{depart:.3f}"
        print(f"{text:18s} {len(median_run[0]):6d} {first:6.2f} {first / total:12.3f} "
              f"{end:6.2f} {end / total:12.2f}  {play['gap']:8.2f} ({play['queued']:5.2f})  "
              f"{play['dry']:13.2f} {play['delay']:8.2f}  {depart:>13s}")  # fmt: skip


if __name__ == "__main__":
    main()

"""prepare_conditionals per part, ours against the reference: seconds per part.

Both sides clone the same voice (a 12 s espeak-ng recording unless --voice) with the
English pipeline built from the same full-size random checkpoint (as
compare_reference.py). Each part is one function of the pipeline, timed by wrapping it
(ours evaluates its output inside the wrapper, so nothing lazy leaks into the next part:
the sinc resampler returns a lazy array, whose 30 ms would otherwise land in CAMPPlus):
loading and resampling the file, the resampling to 24/16 kHz inside ``embed_ref``, the
24 kHz mel, CAMPPlus, the S3Tokenizer (twice: 10 s for S3Gen, 6 s for T3) and the
VoiceEncoder. "rest" is everything between them. The sides alternate over ``--rounds``
(the reference in ``.refenv``, a subprocess per round), keeping each side's fastest run.

    python benchmarks/conditionals_profile.py [--repeats 3] [--rounds 2] [--voice x.wav]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import alternate, make_voice, print_blas_status  # noqa: E402

REFENV = ROOT / ".refenv" / "bin" / "python"
PARTS = ("load + resample", "embed_ref resample", "mel", "campplus", "s3tokenizer",
         "voice encoder")  # fmt: skip


def timed(fn, part: str, timings: dict, evaluate=None):
    """``fn`` that adds its seconds (after ``evaluate(result)``) to ``timings[part]``."""

    def wrapper(*args, **kwargs):
        begin = time.perf_counter()
        out = fn(*args, **kwargs)
        if evaluate is not None:
            evaluate(out)
        timings[part] = timings.get(part, 0.0) + time.perf_counter() - begin
        return out

    return wrapper


def best_run(prepare, timings: dict, repeats: int) -> dict:
    """{"total": s, "parts": {part: s}} of the fastest of ``repeats`` calls of
    ``prepare`` (after one warm-up call)."""
    prepare()
    best = None
    for _ in range(repeats):
        timings.clear()
        begin = time.perf_counter()
        prepare()
        total = time.perf_counter() - begin
        if best is None or total < best["total"]:
            best = {"total": total, "parts": dict(timings)}
    return best


def reference_profile(checkpoint: str, voice: str, repeats: int) -> dict:
    import librosa
    import torch
    from chatterbox.models.s3gen import s3gen as s3gen_module
    from chatterbox.tts import ChatterboxTTS

    torch.manual_seed(0)
    model = ChatterboxTTS.from_local(checkpoint, "cpu")
    timings: dict = {}
    real_load, real_resample = librosa.load, librosa.resample
    librosa.load = timed(real_load, "load + resample", timings)
    librosa.resample = timed(real_resample, "load + resample", timings)
    real_resampler = s3gen_module.get_resampler

    def get_resampler(*args, **kwargs):
        return timed(real_resampler(*args, **kwargs), "embed_ref resample", timings)

    s3gen_module.get_resampler = get_resampler
    s3gen, tokenizer = model.s3gen, model.s3gen.tokenizer
    s3gen.mel_extractor = timed(s3gen.mel_extractor, "mel", timings)
    encoder = s3gen.speaker_encoder
    encoder.inference = timed(encoder.inference, "campplus", timings)
    tokenizer.forward = timed(tokenizer.forward, "s3tokenizer", timings)
    model.ve.embeds_from_wavs = timed(model.ve.embeds_from_wavs, "voice encoder", timings)
    with torch.inference_mode():
        return best_run(lambda: model.prepare_conditionals(voice), timings, repeats)


def our_profile(voice: str, repeats: int, state: dict) -> dict:
    # isort: off
    import chatterbox_mlx  # noqa: F401  (loads BLAS before mlx.core)
    import mlx.core as mx
    # isort: on

    from chatterbox_mlx import audio
    from chatterbox_mlx.tts import ChatterboxTTS
    from chatterbox_mlx.voice import prepare as conditionals

    from tests.helpers.sources import converted_dir

    if "model" not in state:
        model = ChatterboxTTS.from_local(converted_dir("english"))
        timings = state["timings"] = {}

        def evaluate(out):
            mx.eval([x for x in (out if isinstance(out, tuple) else (out,))
                     if isinstance(x, mx.array)])  # fmt: skip

        conditionals.load_reference = timed(conditionals.load_reference, "load + resample",
                                            timings, evaluate)  # fmt: skip
        audio.resample = timed(audio.resample, "load + resample", timings, evaluate)
        audio.resample_sinc = timed(audio.resample_sinc, "embed_ref resample", timings,
                                    evaluate)  # fmt: skip
        audio.s3gen_mel = timed(audio.s3gen_mel, "mel", timings, evaluate)
        s3gen = model.s3gen
        campplus, tokenizer = s3gen.speaker_encoder, s3gen.tokenizer
        campplus.inference = timed(campplus.inference, "campplus", timings, evaluate)
        tokenizer.tokenize = timed(tokenizer.tokenize, "s3tokenizer", timings, evaluate)
        model.ve.embeds_from_wavs = timed(model.ve.embeds_from_wavs, "voice encoder", timings,
                                          evaluate)  # fmt: skip
        state["model"] = model
    model = state["model"]

    def prepare():
        model.prepare_conditionals(voice)
        conds = (*vars(model.conds.t3).values(), *vars(model.conds.gen).values())
        mx.eval([v for v in conds if isinstance(v, mx.array)])

    return best_run(prepare, state["timings"], repeats)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--voice", type=Path)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per round")
    p.add_argument("--rounds", type=int, default=2, help="alternating reference/ours rounds")
    p.add_argument("--reference-only", nargs=2, metavar=("CHECKPOINT", "VOICE"),
                   help=argparse.SUPPRESS)  # fmt: skip
    args = p.parse_args()
    if args.reference_only:
        checkpoint, voice = args.reference_only
        print(json.dumps(reference_profile(checkpoint, voice, args.repeats)))
        return

    from tests.helpers.sources import converted_dir

    checkpoint = converted_dir("english").parent / "source-english-seed0"
    voice = str(args.voice or make_voice())
    command = [str(REFENV), __file__, "--repeats", str(args.repeats), "--reference-only",
               str(checkpoint), voice]  # fmt: skip
    state: dict = {}
    reference, ours = alternate(
        args.rounds, command, lambda: our_profile(voice, args.repeats, state), ROOT
    )

    runs = args.repeats * args.rounds
    print_blas_status()
    print(f"prepare_conditionals (English), best of {runs} ({args.rounds} alternating "
          "rounds); ratio = reference / ours")  # fmt: skip
    print(f"{'part':20s} {'ref s':>7s} {'ours s':>7s} {'ratio':>6s}")
    rows = [(part, reference["parts"].get(part, 0.0), ours["parts"].get(part, 0.0))
            for part in PARTS]  # fmt: skip
    rest = ("rest", reference["total"] - sum(r for _, r, _ in rows),
            ours["total"] - sum(o for _, _, o in rows))  # fmt: skip
    for part, ref_s, our_s in [*rows, rest, ("total", reference["total"], ours["total"])]:
        ratio = f"{ref_s / our_s:6.2f}" if our_s > 0 else ""
        print(f"{part:20s} {ref_s:7.3f} {our_s:7.3f} {ratio:>6s}")


if __name__ == "__main__":
    main()

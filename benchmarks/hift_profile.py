"""HiFT per stage, ours against the reference: seconds, GFLOP and GFLOP/s of each stage.

Both vocode the same mel with the same full-size random checkpoint (as benchmarks/hift.py).
The stages are the generator's own modules (F0 predictor, source, conv_pre, each upsampling
layer, source branch and group of resblocks, conv_post); "rest" is everything between
them (source STFT, iSTFT, activations). The reference's stages are timed with forward
hooks; ours by evaluating each stage's output (so MLX fuses nothing across stages, as
torch does not). FLOPs are counted once, from the reference's convolution and linear
shapes (2 per multiply-accumulate), and apply to both sides.

    python benchmarks/hift_profile.py [--seconds 4] [--repeats 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import alternate, print_blas_status  # noqa: E402
from benchmarks.hift import REFENV, checkpoint, make_mel, reference_model  # noqa: E402

RESBLOCKS_PER_STAGE = 3


def stage_of(name: str) -> str:
    """A module path (``resblocks.4.convs1.0``) -> its stage (``resblocks.1``)."""
    parts = name.split(".")
    if parts[0] == "resblocks" and len(parts) > 1:
        return f"resblocks.{int(parts[1]) // RESBLOCKS_PER_STAGE}"
    if parts[0] in ("ups", "source_downs", "source_resblocks"):
        return ".".join(parts[:2])
    return parts[0]


def reference_profile(seconds: float, repeats: int) -> dict:
    """{"total": s, "stages": {stage: s}, "gflop": {stage: GFLOP}} of the reference."""
    import torch

    generator, mel = reference_model(seconds)

    timings, flops, starts = {}, {}, {}
    for name, module in generator.named_modules():
        if not name:
            continue
        stage = stage_of(name)
        if isinstance(module, torch.nn.Conv1d | torch.nn.ConvTranspose1d | torch.nn.Linear):

            def count(mod, inputs, output, stage=stage):
                if isinstance(mod, torch.nn.Linear):
                    macs = output.numel() * mod.in_features
                elif isinstance(mod, torch.nn.ConvTranspose1d):
                    macs = inputs[0].numel() * mod.out_channels * mod.kernel_size[0]
                else:
                    macs = output.numel() * mod.in_channels // mod.groups * mod.kernel_size[0]
                flops[stage] = flops.get(stage, 0) + 2 * macs

            module.register_forward_hook(count)
        if name == stage or (name.count(".") == 1 and stage.startswith("resblocks")):

            def start(mod, inputs, name=name):
                starts[name] = time.perf_counter()

            def stop(mod, inputs, output, name=name, stage=stage):
                timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - starts[name]

            module.register_forward_pre_hook(start)
            module.register_forward_hook(stop)

    with torch.inference_mode():
        generator.inference(speech_feat=mel)  # warm up
        best = None
        for _ in range(repeats):
            timings.clear()
            flops.clear()
            begin = time.perf_counter()
            generator.inference(speech_feat=mel)
            total = time.perf_counter() - begin
            if best is None or total < best["total"]:
                best = {"total": total, "stages": dict(timings), "gflop": dict(flops)}
    best["gflop"] = {k: v / 1e9 for k, v in best["gflop"].items()}
    return best


class Timed:
    """Stands in for one of our stage modules: evaluates its output and adds the time.
    Its inputs are evaluated first, outside the stage's time (what is still pending there,
    such as the sum of a scale's three resblocks, counts as "rest", as with the hooks)."""

    def __init__(self, module, stage: str, timings: dict):
        self.module, self.stage, self.timings = module, stage, timings

    def __call__(self, *args, **kwargs):
        import mlx.core as mx

        mx.eval([a for a in (*args, *kwargs.values()) if isinstance(a, mx.array)])
        begin = time.perf_counter()
        out = self.module(*args, **kwargs)
        mx.eval(out)
        self.timings[self.stage] = self.timings.get(self.stage, 0.0) + (time.perf_counter() - begin)
        return out


@functools.cache
def our_model(seconds: float):
    """Our vocoder with its stages wrapped in ``Timed``, its timings dict, and the mel."""
    # isort: off
    import chatterbox_mlx  # noqa: F401  (loads BLAS before mlx.core)
    import mlx.core as mx
    # isort: on

    from chatterbox_mlx.models import hift

    model = hift.load(checkpoint())
    mel = mx.array(make_mel(seconds))
    timings: dict = {}
    for name in ("f0_predictor", "m_source", "conv_pre", "conv_post"):
        object.__setattr__(model, name, Timed(getattr(model, name), name, timings))
    for name in ("ups", "source_downs", "source_resblocks", "resblocks"):
        blocks = getattr(model, name)
        for i, block in enumerate(blocks):
            blocks[i] = Timed(block, stage_of(f"{name}.{i}"), timings)
    return model, timings, mel


def our_profile(seconds: float, repeats: int) -> dict:
    model, timings, mel = our_model(seconds)  # imports chatterbox_mlx before mlx.core
    import mlx.core as mx

    mx.eval(model(mel)[0])  # warm up
    best = None
    for _ in range(repeats):
        timings.clear()
        begin = time.perf_counter()
        mx.eval(model(mel)[0])
        total = time.perf_counter() - begin
        if best is None or total < best["total"]:
            best = {"total": total, "stages": dict(timings)}
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per round")
    p.add_argument("--rounds", type=int, default=1, help="alternating reference/ours rounds")
    p.add_argument("--reference-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.reference_only:
        print(json.dumps(reference_profile(args.seconds, args.repeats)))
        return

    command = [str(REFENV), __file__, "--reference-only", "--seconds", str(args.seconds),
               "--repeats", str(args.repeats)]  # fmt: skip
    reference, ours = alternate(
        args.rounds, command, lambda: our_profile(args.seconds, args.repeats), ROOT
    )

    runs = args.repeats * args.rounds
    print_blas_status()
    print(f"HiFT, {args.seconds:g} s of audio, best of {runs} ({args.rounds} alternating "
          "rounds); ratio = reference / ours")  # fmt: skip
    print(f"{'stage':20s} {'GFLOP':>7s} {'ref s':>7s} {'ours s':>7s} {'ratio':>6s} "
          f"{'ref GFLOP/s':>11s} {'ours GFLOP/s':>12s}")  # fmt: skip
    stages = list(reference["stages"])
    rows = [(s, reference["stages"][s], ours["stages"].get(s, 0.0)) for s in stages]
    rest = ("rest", reference["total"] - sum(r for _, r, _ in rows),
            ours["total"] - sum(o for _, _, o in rows))  # fmt: skip
    for stage, ref_s, our_s in [*rows, rest, ("total", reference["total"], ours["total"])]:
        gflop = reference["gflop"].get(stage, 0.0)
        if stage == "total":
            gflop = sum(reference["gflop"].values())
        rate = (f"{gflop / ref_s:11.0f} {gflop / our_s:12.0f}" if gflop and ref_s > 0
                and our_s > 0 else "")  # fmt: skip
        ratio = f"{ref_s / our_s:6.2f}" if our_s > 0 else ""
        print(f"{stage:20s} {gflop:7.2f} {ref_s:7.3f} {our_s:7.3f} {ratio:>6s} {rate}")


if __name__ == "__main__":
    main()

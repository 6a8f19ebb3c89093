"""Peak memory of a long ``--file`` through the CLI: a 50,000-character text against a
5,000-character one (the audio is written as it is made, so memory should stay flat).

    python benchmarks/long_text.py --variant nano --tokens 2

Runs ``python -m chatterbox_mlx.generate`` in a child process per text, on the tests'
random-weight checkpoint (``--tokens`` speech tokens per chunk: random weights never stop),
and reads the child's peak resident memory from ``getrusage``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SENTENCE = "The quick brown fox jumps over the lazy dog, and then it runs far away. "


def run(model: str, chars: int, tokens: int, out_dir: Path) -> tuple[float, float, int]:
    text = (SENTENCE * (chars // len(SENTENCE) + 1))[:chars]
    source = out_dir / f"text-{chars}.txt"
    source.write_text(text, encoding="utf-8")
    out = out_dir / f"out-{chars}.mp3"
    script = (
        "import resource, subprocess, sys, json;"
        "p = subprocess.run(sys.argv[1:]);"
        "print(json.dumps([p.returncode, "
        "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))"
    )
    cmd = [sys.executable, "-m", "chatterbox_mlx.generate", "--model", model, "--file",
           str(source), "--max-new-tokens", str(tokens), "--no-watermark", "--seed", "0",
           "--out", str(out)]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", script, *cmd], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    elapsed = time.perf_counter() - started
    code, peak_kb = json.loads(proc.stdout.strip().splitlines()[-1])
    if code != 0:
        raise RuntimeError(proc.stderr[-2000:])
    import soundfile as sf

    return peak_kb / 1024, elapsed, int(sf.info(out).duration)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="nano")
    p.add_argument("--tokens", type=int, default=2)
    p.add_argument("--chars", type=int, nargs="+", default=[5000, 50000])
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.helpers.sources import converted_dir

    model = str(converted_dir(args.variant))
    with tempfile.TemporaryDirectory() as tmp:
        results = {c: run(model, c, args.tokens, Path(tmp)) for c in args.chars}
    print(f"{args.variant}, {args.tokens} speech tokens per chunk, MP3 written as it is made")
    print(f"{'characters':>10} {'peak RSS MB':>12} {'seconds':>8} {'audio s':>8}")
    for chars, (peak, seconds, audio) in results.items():
        print(f"{chars:>10} {peak:>12.0f} {seconds:>8.0f} {audio:>8}")
    small, large = results[min(results)][0], results[max(results)][0]
    print(f"peak RSS ratio, {max(results)} / {min(results)} characters: {large / small:.3f}")


if __name__ == "__main__":
    main()

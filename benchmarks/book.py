"""Audiobook throughput and memory: hours of audio per hour of compute, and the peak
resident memory over a whole (small, generated) book, through ``python -m
chatterbox_mlx.book`` to an M4B.

    python benchmarks/book.py --variant turbo --chapters 3 --paragraphs 4 --tokens 60 \
        --batch-sizes 1 4

The book is Markdown made here: ``--chapters`` chapters of ``--paragraphs`` sentences of
about 40 characters. The tests' random-weight checkpoint never stops on its own, so each
chunk is ``--tokens`` speech tokens long (60 tokens, 2.4 s, is about what a 40-character
sentence takes when read aloud). ``--sizes 1 3`` renders books of 1 and 3 times the
chapters to compare their peak memory (it should stay flat: chunks stream to disk and the
final mux reads them back one at a time). Each book runs in a child process; its peak RSS
comes from ``getrusage``; the real-time factor is the renderer's own (model loading and
the final mux left out), hours per hour is over the child's whole run. ``--batch-sizes``
renders each book once per ``--batch-size`` (1: chunk by chunk), one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = (
    "The river ran cold and quick that spring.",
    "Nobody in the village could remember why.",
    "She packed a small bag and left at dawn.",
    "The road was longer than the map had said.",
)


def write_book(path: Path, chapters: int, paragraphs: int) -> int:
    parts = []
    for n in range(1, chapters + 1):
        parts.append(f"# Chapter {n}")
        parts += [SENTENCES[(n + i) % len(SENTENCES)] for i in range(paragraphs)]
    text = "\n\n".join(parts) + "\n"
    path.write_text(text, encoding="utf-8")
    return len(text)


def run(model: str, book: Path, tokens: int, out: Path, batch_size: int) -> dict:
    script = (
        "import resource, subprocess, sys, json;"
        "p = subprocess.run(sys.argv[1:], stderr=subprocess.PIPE, text=True);"
        "sys.stderr.write(p.stderr);"
        "print(json.dumps([p.returncode, "
        "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))"
    )
    cmd = [sys.executable, "-m", "chatterbox_mlx.book", str(book), "-o", str(out), "--model",
           model, "--max-new-tokens", str(tokens), "--no-watermark", "--seed", "0",
           "--retries", "0", "--batch-size", str(batch_size)]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", script, *cmd], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    elapsed = time.perf_counter() - started
    code, peak_kb = json.loads(proc.stdout.strip().splitlines()[-1])
    if code != 0:
        raise RuntimeError(proc.stderr[-2000:])
    import av

    with av.open(str(out)) as container:
        audio = container.duration / 1e6
    rtfs = re.findall(r"RTF ([0-9.]+)", proc.stderr)
    return {"peak_mb": peak_kb / 1024, "seconds": elapsed, "audio": audio,
            "rtf": float(rtfs[-1]) if rtfs else None}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="turbo")
    p.add_argument("--chapters", type=int, default=3)
    p.add_argument("--paragraphs", type=int, default=4)
    p.add_argument("--tokens", type=int, default=60)
    p.add_argument("--sizes", type=int, nargs="+", default=[1], help="chapter multiples")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4], help="--batch-size")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.helpers.sources import converted_dir

    model = str(converted_dir(args.variant))
    print(f"{args.variant} (random weights), {args.tokens} speech tokens a chunk, M4B output")
    print(f"{'batch':>5} {'chapters':>8} {'chars':>6} {'audio s':>8} {'wall s':>7} {'RTF':>5} "
          f"{'audio h/h run':>13} {'audio h/h render':>16} {'peak RSS MB':>12}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            for batch in args.batch_sizes:
                chapters = args.chapters * size
                book = Path(tmp) / f"book-{chapters}.md"
                chars = write_book(book, chapters, args.paragraphs)
                r = run(model, book, args.tokens, Path(tmp) / f"book-{chapters}-{batch}.m4b", batch)
                rtf = f"{r['rtf']:.2f}" if r["rtf"] is not None else "-"
                render = f"{1 / r['rtf']:.3f}" if r["rtf"] else "-"
                hours = r["audio"] / r["seconds"]
                print(
                    f"{batch:>5} {chapters:>8} {chars:>6} {r['audio']:>8.1f} "
                    f"{r['seconds']:>7.0f} {rtf:>5} {hours:>13.3f} {render:>16} "
                    f"{r['peak_mb']:>12.0f}"
                )


if __name__ == "__main__":
    main()

"""Command line: ``python -m chatterbox_mlx.generate --text "..."``."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatterbox-mlx",
        description="Chatterbox text-to-speech on Apple MLX.",
    )
    parser.add_argument("--text", help="text to speak")
    parser.add_argument("--out", default="output.wav", help="output audio file (wav/flac)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    print(
        "chatterbox-mlx: speech synthesis is not available yet in this build "
        "(the pipeline lands with issue 8).",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())

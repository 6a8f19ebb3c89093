"""The command line's parsers (``generate`` and ``voice``) and the argument types that the
server's command line shares (``schedule_argument``, ``count_argument``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..constants import DEFAULT_BATCH_SIZE, STREAM_CHUNK_SCHEDULE, STREAM_PROMPT_TOKENS
from ..params import parse_schedule

# The sampling keywords of ``generate`` that the command lines take as options.
GENERATION_OPTIONS = (
    "exaggeration",
    "cfg_weight",
    "temperature",
    "repetition_penalty",
    "min_p",
    "top_p",
    "top_k",
    "max_new_tokens",
)

VOICE_COMMAND = "voice"
SERVE_COMMAND = "serve"
BOOK_COMMAND = "book"
WYOMING_COMMAND = "wyoming"


class CLIError(Exception):
    """A user error: printed as one line, exit code 1."""


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="english",
        help="english | turbo | nano | multilingual | multilingual-v3 | a local directory | "
        "a hub repo id (default: english)",
    )
    p.add_argument("--quantize", type=int, choices=(4, 8), help="quantize T3 to 4 or 8 bits")


def schedule_argument(text: str) -> tuple[int, ...]:
    """``--chunk-tokens 10,50,100``: a streaming chunk schedule."""
    try:
        return parse_schedule(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def count_argument(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def batch_size_argument(text: str) -> int:
    value = count_argument(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more (1: one chunk at a time)")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="chatterbox-mlx",
        description="Chatterbox text-to-speech on Apple MLX. Reads text from --text, "
        "--file or standard input and writes audio (WAV, FLAC, MP3, Opus), or plays it "
        f"live. `chatterbox-mlx {VOICE_COMMAND} save CLIP -o me.voice` saves a cloned voice; "
        f"`chatterbox-mlx {SERVE_COMMAND} --model turbo` starts the OpenAI-compatible server; "
        f"`chatterbox-mlx {WYOMING_COMMAND}` a Wyoming server for Home Assistant.",
    )
    _add_model_args(p)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--text", help="text to speak ([pause:500ms] inserts silence)")
    src.add_argument("--file", type=Path, help="read the text (UTF-8) from this file")
    p.add_argument(
        "--voice",
        type=Path,
        help="a clip to clone or a saved .voice file (default: the built-in voice)",
    )
    p.add_argument("--language", help="language id for the multilingual model (e.g. fr, zh)")
    p.add_argument(
        "--lines",
        action="store_true",
        help="one output per non-empty line "
        "of the text, --out numbered: out-1.wav, ... (line i: seed + i)",
    )
    p.add_argument(
        "--vc",
        type=Path,
        metavar="SOURCE",
        help="voice conversion: speak SOURCE audio in --voice's voice",
    )
    gen = p.add_argument_group("generation (defaults: the variant's upstream defaults)")
    gen.add_argument(
        "--exaggeration",
        type=float,
        help="emotion intensity, 0.25 to 2 (0.5 neutral; English and Multilingual)",
    )
    gen.add_argument(
        "--cfg-weight",
        type=float,
        help="classifier-free guidance, >= 0 (0: off; "
        "lower speaks slower; English and Multilingual)",
    )
    gen.add_argument(
        "--temperature",
        type=float,
        help="sampling temperature, > 0 (lower: steadier, higher: more varied)",
    )
    gen.add_argument(
        "--repetition-penalty", type=float, help="> 0, 1: off; higher avoids repeated speech tokens"
    )
    gen.add_argument(
        "--min-p",
        type=float,
        help="drop tokens under this fraction of the "
        "likeliest's probability, [0, 1) (0: off; English, Multilingual)",
    )
    gen.add_argument(
        "--top-p",
        type=float,
        help="nucleus sampling: keep the likeliest tokens up to this probability, (0, 1] (1: off)",
    )
    gen.add_argument(
        "--top-k", type=int, help="sample from the k likeliest tokens (0: off; Turbo and Nano)"
    )
    gen.add_argument(
        "--max-new-tokens",
        type=int,
        help="cap on speech tokens per text chunk, 25 a second of audio",
    )
    gen.add_argument("--speed", type=float, help="0.5 to 2.0, pitch kept (default 1.0)")
    gen.add_argument("--seed", type=int, help="random seed for a reproducible result")
    gen.add_argument(
        "--batch-size",
        type=batch_size_argument,
        metavar="N",
        help="text chunks (or --lines) that T3 decodes together "
        f"(default {DEFAULT_BATCH_SIZE}; 1: one at a time)",
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--out",
        help="output file: .wav, .flac, .mp3, .opus/.ogg, or - for "
        "standard output (default: output.wav unless --play is given)",
    )
    out.add_argument("--format", help="wav | flac | mp3 | opus | pcm (default: from --out)")
    out.add_argument(
        "--play", action="store_true", help="play through the speakers as it is generated"
    )
    out.add_argument(
        "--stream",
        action="store_true",
        help="generate in chunks (first audio sooner); implied by --play",
    )
    out.add_argument(
        "--chunk-tokens",
        type=schedule_argument,
        metavar="N[,N...]",
        help="streaming: speech tokens per chunk, the last size repeating "
        f"(default {','.join(map(str, STREAM_CHUNK_SCHEDULE))}; 25 tokens are "
        "1 s)",
    )
    out.add_argument(
        "--flow-prompt-tokens",
        type=count_argument,
        metavar="N",
        help="streaming: "
        "the voice prompt's last N tokens condition each chunk (default "
        f"{STREAM_PROMPT_TOKENS}; "
        "250: the whole 10 s prompt, slower)",
    )
    out.add_argument("--no-watermark", action="store_true", help="do not apply the Perth watermark")
    p.add_argument("--verbose", action="store_true", help="print timings (RTF, tokens/s, memory)")
    return p


def build_voice_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"chatterbox-mlx {VOICE_COMMAND}",
        description="Saved voices: clone once, reuse with --voice.",
    )
    sub = p.add_subparsers(dest="action", required=True)
    save = sub.add_parser(
        "save",
        help="prepare a voice from a clip (or export the built-in "
        "voice) and save it as a .voice file",
    )
    save.add_argument("clip", nargs="?", type=Path, help="the clip (default: built-in voice)")
    save.add_argument("-o", "--out", type=Path, required=True, help="the .voice file to write")
    save.add_argument("--exaggeration", type=float, help="English/Multilingual (default 0.5)")
    _add_model_args(save)
    return p

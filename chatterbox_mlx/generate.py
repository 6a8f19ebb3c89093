"""Command line: ``python -m chatterbox_mlx.generate --text "..."`` (also ``chatterbox-mlx``).

Exit codes: 0 done, 1 bad input or a failure (one-line message on stderr), 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

MODELS = ("english", "turbo", "nano", "multilingual")


class CLIError(Exception):
    """A user error: printed as one line, exit code 1."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="chatterbox-mlx",
        description="Chatterbox text-to-speech on Apple MLX. Reads text from --text, "
        "--file or standard input and writes a 24 kHz WAV/FLAC, or plays it live.",
    )
    p.add_argument(
        "--model",
        default="english",
        help="english | turbo | nano | multilingual | a local directory | a hub repo id "
        "(default: english)",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--text", help="text to speak")
    src.add_argument("--file", type=Path, help="read the text from this file")
    p.add_argument("--voice", type=Path, help="reference clip to clone (default: built-in voice)")
    p.add_argument("--language", help="language id for the multilingual model (e.g. fr, zh)")
    p.add_argument("--vc", type=Path, metavar="SOURCE", help="voice conversion: speak SOURCE "
                   "audio in --voice's voice")  # fmt: skip
    gen = p.add_argument_group("generation (defaults: the variant's upstream defaults)")
    gen.add_argument("--exaggeration", type=float)
    gen.add_argument("--cfg-weight", type=float)
    gen.add_argument("--temperature", type=float)
    gen.add_argument("--repetition-penalty", type=float)
    gen.add_argument("--min-p", type=float)
    gen.add_argument("--top-p", type=float)
    gen.add_argument("--top-k", type=int)
    gen.add_argument("--max-new-tokens", type=int)
    gen.add_argument("--seed", type=int, help="random seed for a reproducible result")
    out = p.add_argument_group("output")
    out.add_argument("--out", type=Path, help="output file, .wav or .flac (default: output.wav "
                     "unless --play is given)")  # fmt: skip
    out.add_argument("--play", action="store_true", help="play through the speakers as it is "
                     "generated")  # fmt: skip
    out.add_argument("--stream", action="store_true", help="generate in chunks (first audio "
                     "sooner); implied by --play")  # fmt: skip
    out.add_argument("--no-watermark", action="store_true", help="do not apply the Perth "
                     "watermark")  # fmt: skip
    p.add_argument("--quantize", type=int, choices=(4, 8), help="quantize T3 to 4 or 8 bits")
    p.add_argument("--verbose", action="store_true", help="print timings (RTF, tokens/s, memory)")
    return p


def read_text(args) -> str:
    if args.vc is not None:
        return ""
    if args.text is not None:
        text = args.text
    elif args.file is not None:
        try:
            text = args.file.read_text(encoding="utf-8")
        except OSError as err:
            raise CLIError(f"cannot read --file {args.file}: {err.strerror}") from err
    elif not sys.stdin.isatty():
        text = sys.stdin.read()
    else:
        raise CLIError("no text given: use --text, --file, or pipe text on standard input")
    if not text.strip():
        raise CLIError("the text is empty or only whitespace: give some words to speak")
    return text


def generation_kwargs(args) -> dict:
    names = ("exaggeration", "cfg_weight", "temperature", "repetition_penalty", "min_p",
             "top_p", "top_k", "max_new_tokens", "seed")  # fmt: skip
    kwargs = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    if args.language is not None:
        kwargs["language_id"] = args.language
    return kwargs


def check_output_path(path: Path) -> None:
    if path.suffix.lower() not in (".wav", ".flac"):
        raise CLIError(f"--out {path}: use a .wav or .flac file name")
    parent = path.resolve().parent
    if not parent.is_dir():
        raise CLIError(f"--out {path}: folder {parent} does not exist")
    import os

    if not os.access(parent, os.W_OK):
        raise CLIError(f"--out {path}: folder {parent} is not writable")


def run(args) -> int:
    import numpy as np

    from . import audio
    from .progress import Progress
    from .tts import load_pipeline

    text = read_text(args)
    if args.vc is None and args.voice is not None and not args.voice.is_file():
        raise CLIError(f"--voice {args.voice}: file not found")
    if args.vc is not None:
        if not args.vc.is_file():
            raise CLIError(f"--vc {args.vc}: file not found")
        if args.voice is None:
            raise CLIError("--vc needs --voice: the target voice to convert into")
    out = args.out if args.out is not None or args.play else Path("output.wav")
    if out is not None:
        check_output_path(out)

    started = time.perf_counter()
    progress = Progress(enabled=sys.stderr.isatty() and not args.verbose)
    with progress.status(f"loading {args.model}"):
        model = load_pipeline(args.model, vc=args.vc is not None, quantize=args.quantize)
    loaded = time.perf_counter()

    watermark = not args.no_watermark
    player = None
    if args.play:
        from .playback import Player

        player = Player(model.sr)
    chunks = []
    try:
        if args.vc is not None:
            wav = model.generate(str(args.vc), target_voice_path=str(args.voice),
                                 watermark=watermark)  # fmt: skip
            chunks.append(np.asarray(wav, dtype=np.float32).reshape(-1))
            if player:
                player.play(chunks[-1])
        else:
            kwargs = generation_kwargs(args)
            if args.voice is not None:
                kwargs["audio_prompt_path"] = str(args.voice)
            stream = args.stream or args.play
            pieces = model.generate_stream(text, watermark=watermark, progress=progress,
                                           **kwargs) if stream else None  # fmt: skip
            if pieces is None:
                wav = model.generate(text, watermark=watermark, progress=progress, **kwargs)
                pieces = [wav]
            for piece in pieces:
                piece = np.asarray(piece, dtype=np.float32).reshape(-1)
                chunks.append(piece)
                if player:
                    player.play(piece)
        if player:
            player.wait()
    except BaseException:
        if player:
            player.stop()
            player.close()
            player = None
        raise
    finally:
        if player:
            player.close()

    wav = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if out is not None:
        audio.save_audio(out, wav, model.sr)
    if args.verbose:
        total = time.perf_counter() - started
        seconds = len(wav) / model.sr
        stats = getattr(model, "last_stats", {})
        generating = total - (loaded - started)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"load {loaded - started:.2f} s, generate {generating:.2f} s for {seconds:.2f} s "
            f"of audio (RTF {generating / max(seconds, 1e-9):.2f}), peak memory {peak_mb:.0f} MB"
            + "".join(f", {k} {v}" for k, v in stats.items()),
            file=sys.stderr,
        )
    if out is not None:
        print(f"wrote {out} ({len(wav) / model.sr:.2f} s)", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, FileNotFoundError, OSError, RuntimeError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"chatterbox-mlx: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

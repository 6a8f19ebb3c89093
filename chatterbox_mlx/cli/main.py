"""Command line: ``python -m chatterbox_mlx.generate --text "..."`` (also ``chatterbox-mlx``).

``chatterbox-mlx voice save CLIP -o me.voice`` saves a cloned voice (without CLIP: the
model's built-in voice) for ``--voice me.voice``; ``chatterbox-mlx serve`` starts the
OpenAI-compatible speech server (``chatterbox_mlx.server``); ``chatterbox-mlx wyoming``
the Wyoming protocol server for Home Assistant (``chatterbox_mlx.wyoming``);
``chatterbox-mlx book BOOK -o book.m4b`` makes an audiobook (``chatterbox_mlx.book``).

Exit codes: 0 done, 1 bad input or a failure (one-line message on stderr, detail lines
indented below it), 130 Ctrl-C, 143 SIGTERM. Nothing is left half-written.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import threading
import time

from .arguments import (
    BOOK_COMMAND,
    GENERATION_OPTIONS,
    SERVE_COMMAND,
    VOICE_COMMAND,
    WYOMING_COMMAND,
    CLIError,
    build_parser,
    build_voice_parser,
)

# ---- input --------------------------------------------------------------------------


def _decoded(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CLIError(
            f"{where} is not valid UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start}); "
            "save or pipe the text as UTF-8"
        ) from None


def _check_encodable(text: str, where: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:  # lone surrogates (argv decoded with surrogateescape)
        raise CLIError(
            f"{where} is not valid UTF-8 text (undecodable character at position {err.start}); "
            "pass the text as UTF-8"
        ) from None
    return text


def read_text(args) -> str:
    if args.vc is not None:
        return ""
    if args.text is not None:
        text = _check_encodable(args.text, "--text")
    elif args.file is not None:
        try:
            raw = args.file.read_bytes()
        except OSError as err:
            raise CLIError(f"cannot read --file {args.file}: {err.strerror}") from err
        text = _decoded(raw, f"--file {args.file}")
    elif not sys.stdin.isatty():
        text = _decoded(sys.stdin.buffer.read(), "standard input")
    else:
        raise CLIError("no text given: use --text, --file, or pipe text on standard input")
    if not text.strip():
        raise CLIError("the text is empty or only whitespace: give some words to speak")
    return text


def generation_kwargs(args) -> dict:
    names = (*GENERATION_OPTIONS, "seed", "speed")
    kwargs = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    if args.language is not None:
        kwargs["language_id"] = args.language
    return kwargs


def _check_streaming(args) -> None:
    for flag, value in (
        ("--chunk-tokens", args.chunk_tokens),
        ("--flow-prompt-tokens", args.flow_prompt_tokens),
    ):
        if value is not None and not (args.stream or args.play):
            raise CLIError(f"{flag} only applies to streaming: add --stream or --play")


def _check_paths(args) -> str | None:
    """Everything about files that can be checked before loading a model; returns the
    output format (None when only playing)."""
    from ..audio import formats

    if args.vc is None and args.voice is not None and not args.voice.is_file():
        raise CLIError(f"--voice {args.voice}: file not found")
    if args.vc is not None:
        if not args.vc.is_file():
            raise CLIError(f"--vc {args.vc}: file not found")
        if args.voice is None:
            raise CLIError("--vc needs --voice: the target voice to convert into")
    if args.out is None and args.play:
        return None
    if args.out == "-":
        return formats.resolve_format(None, args.format or "wav")
    return formats.check_output_path(args.out or "output.wav", args.format)


def _check_variant_early(args) -> None:
    """The language and the generation parameters, when ``--model`` names a variant (a
    directory or repo id is checked once it is loaded, still before any generation)."""
    from .. import params
    from ..variants import UnknownVariantError, get_variant

    try:
        variant = get_variant(args.model)
    except UnknownVariantError:
        return
    if args.vc is None:
        given = generation_kwargs(args)
        for name in ("seed", "speed", "language_id"):
            given.pop(name, None)
        params.resolve(variant, given)
    if variant.needs_language and args.language is None and args.vc is None:
        from ..text import SUPPORTED_LANGUAGES

        raise CLIError(
            f"the {variant.name} model needs --language; one of: {', '.join(SUPPORTED_LANGUAGES)}"
        )


# ---- run ----------------------------------------------------------------------------


def _chunks(model, args, text: str, progress):
    """The audio as it is made: stream chunks, or one piece per text chunk."""
    watermark = not args.no_watermark
    if args.vc is not None:
        yield model.generate(
            str(args.vc), target_voice_path=str(args.voice), watermark=watermark, seed=args.seed
        )
        return
    kwargs = generation_kwargs(args)
    if args.voice is not None:
        kwargs["audio_prompt_path"] = str(args.voice)
    if args.stream or args.play:
        for name in ("chunk_tokens", "flow_prompt_tokens"):
            if getattr(args, name) is not None:
                kwargs[name] = getattr(args, name)
        yield from model.generate_stream(text, watermark=watermark, progress=progress, **kwargs)
    else:
        if args.batch_size is not None:
            kwargs["batch_size"] = args.batch_size
        yield from model.generate_pieces(text, watermark=watermark, progress=progress, **kwargs)


def _check_lines(args, text: str) -> list[str] | None:
    """``--lines``: the texts, one per non-empty line (None without ``--lines``)."""
    if not args.lines:
        return None
    for flag, given in (
        ("--stream", args.stream),
        ("--play", args.play),
        ("--vc", args.vc is not None),
        ("--out -", args.out == "-"),
    ):
        if given:
            raise CLIError(f"--lines writes one file per line; it does not combine with {flag}")
    return [line for line in text.splitlines() if line.strip()]


def numbered(out: str, number: int, count: int) -> str:
    """``out.wav`` -> ``out-07.wav`` (as many digits as ``count`` has)."""
    from pathlib import Path

    path = Path(out)
    return str(path.with_name(f"{path.stem}-{number:0{len(str(count))}d}{path.suffix}"))


def _run_lines(model, args, texts: list[str], fmt: str, progress) -> float:
    """Every line through ``generate_batch`` (T3 batched across them); seconds written."""
    import numpy as np

    from ..audio.formats import AudioFileWriter

    kwargs = generation_kwargs(args)
    if args.voice is not None:
        kwargs["audio_prompt_path"] = str(args.voice)
    if args.batch_size is not None:
        kwargs["batch_size"] = args.batch_size
    wavs = model.generate_batch(texts, watermark=not args.no_watermark, progress=progress, **kwargs)
    seconds = 0.0
    for number, wav in enumerate(wavs, 1):
        path = numbered(args.out or "output.wav", number, len(wavs))
        writer = AudioFileWriter(path, model.sr, fmt)  # discards its file if it fails
        writer.write(np.asarray(wav, dtype=np.float32).reshape(-1))
        writer.close()
        seconds += wav.shape[-1] / model.sr
        print(f"wrote {path} ({wav.shape[-1] / model.sr:.2f} s)", file=sys.stderr)
    return seconds


class _StdoutWriter:
    """``--out -``: one continuous stream of ``fmt`` on standard output, for piping."""

    def __init__(self, fmt: str, sr: int):
        from ..audio.formats import StreamEncoder

        self.encoder = StreamEncoder(fmt, sr)
        self.out = sys.stdout.buffer

    def write(self, piece) -> None:
        self.out.write(self.encoder.push(piece))
        self.out.flush()

    def close(self) -> None:
        self.out.write(self.encoder.finish())
        self.out.flush()

    def abort(self) -> None:
        self.out.flush()


def _open_output(args, fmt: str | None, sr: int):
    from ..audio.formats import AudioFileWriter

    if fmt is None:
        return None
    if args.out == "-":
        return _StdoutWriter(fmt, sr)
    return AudioFileWriter(args.out or "output.wav", sr, fmt)


def run(args) -> int:
    import numpy as np

    from ..pipeline.progress import Progress
    from ..tts import load_pipeline

    text = read_text(args)
    fmt = _check_paths(args)
    lines = _check_lines(args, text)
    _check_streaming(args)
    _check_variant_early(args)
    if args.speed is not None:
        from ..audio.speed import check_speed

        check_speed(args.speed)

    started = time.perf_counter()
    progress = Progress.for_stream(sys.stderr, enabled=not args.verbose)
    with progress.status(f"loading {args.model}"):
        model = load_pipeline(args.model, vc=args.vc is not None, quantize=args.quantize)
    loaded = time.perf_counter()
    if lines is not None:
        _run_lines(model, args, lines, fmt, progress)
        return 0

    player = writer = None
    samples = 0

    def interrupted(signum, frame) -> None:
        """Ctrl-C while streaming: the stream's thread would finish its chunk before a
        KeyboardInterrupt could end the program (seconds); clean up and exit now."""
        if writer is not None:
            writer.abort()
        if player is not None:
            player.stop()
        print(
            "chatterbox-mlx: interrupted; nothing was left half-written",
            file=sys.stderr,
            flush=True,
        )
        os._exit(130)

    streaming = (args.stream or args.play) and threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, interrupted) if streaming else None
    try:
        if args.play:
            from .playback import Player

            player = Player(model.sr)
        writer = _open_output(args, fmt, model.sr)
        for piece in _chunks(model, args, text, progress):
            piece = np.asarray(piece, dtype=np.float32).reshape(-1)
            samples += len(piece)
            if writer is not None:
                writer.write(piece)
            if player is not None:
                player.play(piece)
        if player is not None:
            player.wait()
        if writer is not None:
            writer.close()
            writer = None
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        if writer is not None:
            writer.abort()
        if player is not None:
            player.stop()
            player.close()

    seconds = samples / model.sr
    if args.verbose:
        total = time.perf_counter() - started
        stats = getattr(model, "last_stats", {})
        generating = total - (loaded - started)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"load {loaded - started:.2f} s, generate {generating:.2f} s for {seconds:.2f} s "
            f"of audio (RTF {generating / max(seconds, 1e-9):.2f}), peak memory {peak_mb:.0f} MB"
            + "".join(f", {k} {v}" for k, v in stats.items()),
            file=sys.stderr,
        )
    if fmt is not None and args.out != "-":
        print(f"wrote {args.out or 'output.wav'} ({seconds:.2f} s)", file=sys.stderr)
    return 0


def run_voice(args) -> int:
    from ..tts import load_pipeline

    model = load_pipeline(args.model, quantize=args.quantize)
    if args.clip is not None:
        if not args.clip.is_file():
            raise CLIError(f"{args.clip}: file not found")
        kwargs = {} if args.exaggeration is None else {"exaggeration": args.exaggeration}
        model.prepare_conditionals(str(args.clip), **kwargs)
    model.save_voice(args.out)
    print(f"wrote {args.out} (a voice for the {model.variant.name} model family)", file=sys.stderr)
    return 0


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"chatterbox-mlx: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    import warnings

    from ..checkpoints.convert import Terminated, format_error, sigterm_raises

    warnings.showwarning = _show_warning  # one line each, no source location

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [SERVE_COMMAND]:
        from ..server import main as serve

        return serve(argv[1:])
    if argv[:1] == [BOOK_COMMAND]:
        from ..book.cli import main as book

        return book(argv[1:])
    if argv[:1] == [WYOMING_COMMAND]:
        from ..wyoming.cli import main as wyoming

        return wyoming(argv[1:])
    voice = bool(argv) and argv[0] == VOICE_COMMAND
    args = build_voice_parser().parse_args(argv[1:]) if voice else build_parser().parse_args(argv)
    try:
        with sigterm_raises():
            return run_voice(args) if voice else run(args)
    except KeyboardInterrupt:
        print("chatterbox-mlx: interrupted; nothing was left half-written", file=sys.stderr)
        return 130
    except Terminated:
        print(
            "chatterbox-mlx: terminated (SIGTERM); nothing was left half-written", file=sys.stderr
        )
        return 143
    except (CLIError, ValueError, OSError, RuntimeError) as err:
        print(f"chatterbox-mlx: {format_error(err)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

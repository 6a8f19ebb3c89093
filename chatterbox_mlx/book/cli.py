"""``python -m chatterbox_mlx.book BOOK -o book.m4b`` (also ``chatterbox-mlx book``).

Exit codes as the main command line: 0 done, 1 bad input or a failure (one line on
stderr), 130 Ctrl-C, 143 SIGTERM; after 130 or 143 the finished chunks are in the work
folder and the same command resumes.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path

from ..cli.arguments import GENERATION_OPTIONS, batch_size_argument
from .chapters import Book, BookError
from .output import FOLDER_FORMATS, book_audio, output_kind, write_book
from .plan import MAX_CHUNK_CHARS, Pauses, plan_chapter
from .sources import read_book, select_chapters

MAX_PAUSE_S = 30.0
BOOK_BATCH_SIZE = 4  # chunks T3 decodes together by default (docs/audiobooks.md: measured)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 <= value <= MAX_PAUSE_S:
        raise argparse.ArgumentTypeError(f"must be 0 to {MAX_PAUSE_S:g} seconds, got {text}")
    return value


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number 0 or more, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="chatterbox-mlx book",
        description="A book (EPUB, .txt or .md) in, a chaptered audiobook out. Stopped runs "
        "resume: run the same command again.",
    )
    p.add_argument("input", type=Path, help="the book: .epub, .txt or .md")
    p.add_argument(
        "-o",
        "--output",
        help="book.m4b | .m4a | .mp3 | .opus | .ogg | .flac | "
        ".wav | a folder (one file per chapter and a playlist)",
    )
    p.add_argument("--list", action="store_true", help="print the chapters found and exit")
    p.add_argument("--chapters", metavar="3-7,9", help="only these chapters (see --list)")
    p.add_argument(
        "--front-matter",
        action="store_true",
        help="also read the cover page, table of contents and copyright page",
    )
    p.add_argument(
        "--chapter-regex",
        metavar="REGEX",
        help="plain text: a line matching "
        "this (whole) starts a chapter (default: Chapter 1, CHAPTER IV, Part Two...)",
    )
    p.add_argument("--title", help="the book's title (default: from the book)")
    p.add_argument("--author", help="the book's author (default: from the book)")
    model = p.add_argument_group("model and voice")
    model.add_argument(
        "--model",
        default="english",
        help="english | turbo | nano | "
        "multilingual | multilingual-v3 | a local directory | a hub "
        "repo id",
    )
    model.add_argument("--quantize", type=int, choices=(4, 8), help="quantize T3 to 4 or 8 bits")
    model.add_argument("--voice", type=Path, help="a clip to clone or a saved .voice file")
    model.add_argument("--language", help="language id for the multilingual model")
    gen = p.add_argument_group("generation (defaults: the variant's upstream defaults)")
    gen.add_argument("--exaggeration", type=float)
    gen.add_argument("--cfg-weight", type=float)
    gen.add_argument("--temperature", type=float)
    gen.add_argument("--repetition-penalty", type=float)
    gen.add_argument("--min-p", type=float)
    gen.add_argument("--top-p", type=float)
    gen.add_argument("--top-k", type=int)
    gen.add_argument("--max-new-tokens", type=int)
    gen.add_argument("--speed", type=float, help="0.5 to 2.0, pitch kept (default 1.0)")
    gen.add_argument(
        "--seed", type=int, help="the book's seed (default: a random one, kept in the work folder)"
    )
    gen.add_argument("--no-watermark", action="store_true", help="no Perth watermark")
    gen.add_argument(
        "--batch-size",
        type=batch_size_argument,
        default=BOOK_BATCH_SIZE,
        metavar="N",
        help=f"chunks T3 decodes together (1: one at a time; default {BOOK_BATCH_SIZE})",
    )
    book = p.add_argument_group("book")
    book.add_argument(
        "--paragraph-pause",
        type=_seconds,
        default=Pauses.paragraph,
        metavar="S",
        help=f"silence between paragraphs (default {Pauses.paragraph})",
    )
    book.add_argument(
        "--chapter-pause",
        type=_seconds,
        default=Pauses.chapter,
        metavar="S",
        help=f"silence between chapters (default {Pauses.chapter})",
    )
    book.add_argument(
        "--retries",
        type=_count,
        default=2,
        help="render a suspect chunk again up to this many times, with other seeds (default 2)",
    )
    book.add_argument(
        "--work-dir",
        type=Path,
        help="where finished chunks are kept (default: OUTPUT.work beside the output)",
    )
    book.add_argument(
        "--keep-work", action="store_true", help="keep the work folder after the book is written"
    )
    book.add_argument(
        "--restart", action="store_true", help="discard the work folder's chunks and start again"
    )
    book.add_argument(
        "--format", choices=FOLDER_FORMATS, help="a folder's file format (default mp3)"
    )
    book.add_argument(
        "--bitrate",
        type=int,
        metavar="BPS",
        help="AAC/MP3/Opus bit rate (default 64000; Opus 32000)",
    )
    return p


def generation_kwargs(args) -> dict:
    return {n: getattr(args, n) for n in GENERATION_OPTIONS if getattr(args, n) is not None}


# ---- listing ------------------------------------------------------------------------------


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def list_chapters(book: Book, chosen, pauses: Pauses, speed: float, out=None) -> None:
    out = out or sys.stdout
    picked = {c.number for c in chosen}
    by = f", by {book.author}" if book.author else ""
    print(f"{book.title}{by}: {len(book.chapters)} chapters", file=out)
    print(f"{'#':>4}  {'characters':>10}  {'audio':>8}  title", file=out)
    total_chars, total_seconds = 0, 0.0
    for chapter in book.chapters:
        seconds = chapter.estimated_seconds(speed) + pauses.paragraph * len(chapter.paragraphs)
        notes = []
        if chapter.front_matter:
            notes.append("front matter")
        if chapter.number not in picked:
            notes.append("skipped")
        else:
            total_chars += chapter.characters
            total_seconds += seconds + pauses.chapter
        note = f"  ({', '.join(notes)})" if notes else ""
        print(
            f"{chapter.number:>4}  {chapter.characters:>10,}  {_clock(seconds):>8}  "
            f"{chapter.title}{note}",
            file=out,
        )
    print(
        f"chosen: {len(chosen)} chapters, {total_chars:,} characters, about "
        f"{_clock(total_seconds)} of audio (an estimate: 15 characters a second)",
        file=out,
    )


# ---- running ------------------------------------------------------------------------------


def _check_variant_early(args) -> None:
    from .. import params
    from ..variants import UnknownVariantError, get_variant

    try:
        variant = get_variant(args.model)
    except UnknownVariantError:
        return
    params.resolve(variant, generation_kwargs(args))
    if variant.needs_language and args.language is None:
        raise BookError(f"the {variant.name} model needs --language (e.g. --language fr)")


def manifest_settings(args) -> dict:
    """What shapes the chunks' audio: a work folder resumes only with the same."""
    from ..files import sha256_file

    config = Path(args.model) / "config.json"
    return {
        "model": args.model,
        "model_config_sha256": sha256_file(config) if config.is_file() else None,
        "quantize": args.quantize,
        "voice_sha256": sha256_file(args.voice) if args.voice is not None else None,
        "language": args.language,
        "generation": generation_kwargs(args),
        "speed": 1.0 if args.speed is None else args.speed,
        "watermark": not args.no_watermark,
        "chunk_chars": MAX_CHUNK_CHARS,
    }


def _voice(model, args):
    if args.voice is None:
        return None
    if not args.voice.is_file():
        raise BookError(f"--voice {args.voice}: file not found")
    if args.voice.suffix == ".voice":
        return model.load_voice(args.voice)
    kwargs = {} if args.exaggeration is None else {"exaggeration": args.exaggeration}
    return model.prepare_voice(str(args.voice), **kwargs)


def _check_chunks(model, plans, language) -> None:
    """Every chunk through the tokenizer now, not hours into the book."""
    for plan in plans:
        for chunk in plan.chunks:
            try:
                model.tokenizer.t3_ids(chunk.text, language)
            except (ValueError, KeyError) as err:
                raise BookError(
                    f"chapter {chunk.chapter}, chunk {chunk.index + 1}: {err}"
                ) from None


def default_work_dir(output: str) -> Path:
    path = Path(output.rstrip("/\\") or ".")
    return path.with_name(path.name + ".work")


def run(args, model=None, on_chunk=None) -> int:
    """The command; ``model`` (a loaded pipeline) and ``on_chunk`` (called after each
    finished chunk) are for callers inside Python, such as the tests."""
    book = read_book(args.input, args.chapter_regex)
    book.title = args.title or book.title
    book.author = args.author or book.author
    chosen = select_chapters(book, args.chapters, args.front_matter)
    pauses = Pauses(args.paragraph_pause, args.chapter_pause)
    if args.list:
        list_chapters(book, chosen, pauses, args.speed or 1.0)
        return 0
    if not args.output:
        raise BookError("no output: give -o book.m4b (or a folder), or --list to see the chapters")
    if not chosen:
        raise BookError("no chapters chosen: see --list, and --chapters or --front-matter")
    kind = output_kind(args.output, args.format)
    plans = [plan_chapter(c, pauses) for c in chosen]
    _check_variant_early(args)
    if args.speed is not None:
        from ..audio.speed import check_speed

        check_speed(args.speed)
    if model is None:
        model = _load(args)
    return _render(args, model, book, plans, kind, pauses, on_chunk)


def _load(args):
    from ..pipeline.progress import Progress
    from ..tts import load_pipeline

    with Progress.for_stream(sys.stderr).status(f"loading {args.model}"):
        return load_pipeline(args.model, quantize=args.quantize)


def _render(args, model, book, plans, kind, pauses, on_chunk) -> int:
    from .. import params
    from .progress import BookProgress
    from .render import BookRenderer, ChunkSynthesizer, RenderSettings, report_lines
    from .work import WorkFolder

    generation = generation_kwargs(args)
    resolved = params.resolve(model.variant, generation)
    language = args.language if model.variant.needs_language else None
    _check_chunks(model, plans, language)
    voice = _voice(model, args)
    settings = RenderSettings(
        generation,
        resolved["max_new_tokens"],
        args.speed or 1.0,
        language,
        not args.no_watermark,
        args.retries,
        args.batch_size,
    )
    work = WorkFolder(args.work_dir or default_work_dir(args.output), model.sr)
    seed = work.open(
        book.sha256,
        manifest_settings(args),
        args.seed,
        secrets.randbelow(2**31),
        restart=args.restart,
    )
    try:
        renderer = BookRenderer(
            ChunkSynthesizer(model, voice, settings), work, settings, seed, on_chunk=on_chunk
        )
        records = renderer.finished(plans)
        done = [p for p in plans if all((c.chapter, c.index) in records for c in p.chunks)]
        if records:
            print(
                f"resuming: {len(done)} of {len(plans)} chapters done ({len(records)} of "
                f"{sum(len(p.chunks) for p in plans)} chunks) in {work.path}",
                file=sys.stderr,
            )
        progress = BookProgress(
            len(plans),
            sum(p.characters for p in plans),
            len(done),
            sum(len(r["text"]) for r in records.values()),
            sum(r["seconds"] for r in records.values()),
        )
        with progress:
            renderer.progress = progress
            records = renderer.render(plans, records)
        audio = book_audio(
            plans, records, pauses.chapter, model.sr, book.title, book.author, book.cover
        )
        write_book(args.output, kind, audio, work.read_audio, args.format, args.bitrate)
    except BaseException as err:  # Ctrl-C, SIGTERM, a failure: the work stays
        if not isinstance(err, BookError):
            print(
                f"chatterbox-mlx book: the finished chunks are kept in {work.path}; run the "
                "same command again to resume",
                file=sys.stderr,
            )
        raise
    finally:
        work.close()
    for line in report_lines(plans, records):
        print(line, file=sys.stderr)
    if not args.keep_work:
        work.remove()
    note = " (WAV holds no chapter markers)" if kind == "wav" else ""
    print(
        f"wrote {args.output}: {len(plans)} chapters, {_clock(audio.samples / model.sr)} "
        f"of audio{note}",
        file=sys.stderr,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    import warnings

    from ..checkpoints.convert import Terminated, format_error, sigterm_raises

    warnings.showwarning = lambda message, *a, **k: print(
        f"chatterbox-mlx book: warning: {message}", file=sys.stderr
    )
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        with sigterm_raises():
            return run(args)
    except KeyboardInterrupt:
        print("chatterbox-mlx book: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("chatterbox-mlx book: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except (ValueError, OSError, RuntimeError) as err:
        print(f"chatterbox-mlx book: {format_error(err)}", file=sys.stderr)
        return 1

"""``chatterbox-mlx wyoming`` / ``python -m chatterbox_mlx.wyoming``: load the models and
serve them to Home Assistant over the Wyoming protocol on tcp://127.0.0.1:10200 unless
told otherwise (``--uri tcp://0.0.0.0:10200`` for the network).

Exit codes: 0 after SIGTERM (connections closed), 1 bad input (one line on standard
error: a model that cannot load, a port in use, the ``wyoming`` extra missing), 2 a
malformed command line, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from ..cli.arguments import count_argument
from ..server.cli import LIMITS, add_served_model_arguments, add_stream_arguments
from . import DEFAULT_URI, check_extra

PROG = "chatterbox-mlx wyoming"
SHARED_LIMITS = ("--max-queue", "--max-chars", "--max-new-tokens")  # the HTTP server's


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="A Wyoming protocol text-to-speech server for Home Assistant (Settings "
        "-> Devices & services -> Add integration -> Wyoming Protocol), with the HTTP "
        "server's voice library.",
    )
    p.add_argument(
        "--uri",
        default=DEFAULT_URI,
        help=f"where to listen: tcp://HOST:PORT, "
        f"unix://PATH or stdio:// (default {DEFAULT_URI}: this machine only; "
        "tcp://0.0.0.0:10200 for Home Assistant on another machine)",
    )
    add_served_model_arguments(p)
    p.add_argument(
        "--voices",
        metavar="DIR",
        help="the voice library folder, shared with "
        "`chatterbox-mlx serve` (default: ~/.cache/chatterbox-mlx/voices)",
    )
    p.add_argument(
        "--language",
        default="en",
        help="the language of a request that names none, for a multilingual model (default en)",
    )
    p.add_argument(
        "--seed",
        type=count_argument,
        help="one seed for every request: the same "
        "text always sounds the same (default: a new draw each time)",
    )
    for flag, kind, default, meaning in LIMITS:
        if flag in SHARED_LIMITS:
            p.add_argument(flag, type=kind, default=default, help=f"{meaning} (default {default})")
    add_stream_arguments(p)
    p.add_argument("--no-watermark", action="store_true", help="do not apply the Perth watermark")
    p.add_argument(
        "--zeroconf",
        nargs="?",
        const="",
        metavar="NAME",
        help="advertise the "
        "server over mDNS (_wyoming._tcp) so Home Assistant discovers it (NAME "
        "default: chatterbox-mlx-<hostname>)",
    )
    p.add_argument(
        "--log-level", default="info", choices=("critical", "error", "warning", "info", "debug")
    )
    return p


def settings_from(args):
    from ..text import TextError, check_language
    from .service import Settings

    try:
        language = check_language(args.language.strip().lower())
    except TextError as err:
        raise ValueError(f"--language: {err}") from None
    return Settings(
        max_chars=args.max_chars,
        max_new_tokens=args.max_new_tokens,
        chunk_tokens=args.chunk_tokens,
        flow_prompt_tokens=args.flow_prompt_tokens,
        watermark=not args.no_watermark,
        seed=args.seed,
        language=language,
    )


def load_models(names: list[str], quantize: int | None) -> dict:
    """``{name: pipeline}``, each named by its variant (``turbo``, ``turbo-2``...)."""
    from ..tts import load_pipeline

    models: dict = {}
    for given in names:
        print(f"{PROG}: loading {given}", file=sys.stderr, flush=True)
        model = load_pipeline(given, quantize=quantize)
        name, n = model.variant.name, 1
        while name in models:
            n += 1
            name = f"{model.variant.name}-{n}"
        models[name] = model
    return models


def run(args) -> int:
    check_extra()
    from ..server.voices import LibraryError, VoiceLibrary, default_dir
    from . import server as server_mod
    from .discovery import default_name
    from .service import Service

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s: %(message)s")
    settings = settings_from(args)
    server = server_mod.open_server(args.uri)
    try:
        library = VoiceLibrary(args.voices or default_dir())
    except LibraryError as err:
        raise ValueError(str(err)) from None
    advertiser = None
    if args.zeroconf is not None:
        advertiser = server_mod.advertiser_for(server, args.zeroconf or default_name())
    service = Service.create(
        load_models(args.model or ["turbo"], args.quantize), library, settings, args.max_queue
    )
    print(
        f"{PROG}: serving {', '.join(service.served)} on {server_mod.shown(server, args.uri)} "
        f"(voices in {library.root}"
        f"{'; advertised as ' + advertiser.info.name if advertiser else ''})",
        file=sys.stderr,
        flush=True,
    )
    if not server_mod.is_local(server):
        print(
            f"{PROG}: note: the Wyoming protocol has no password; anyone who can reach "
            "this port can use it",
            file=sys.stderr,
            flush=True,
        )
    try:
        asyncio.run(server_mod.serve(server, service, advertiser))
    finally:
        service.close()
    print(f"{PROG}: stopped", file=sys.stderr, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``chatterbox-mlx wyoming ARGS`` (``argv`` without ``wyoming``)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130
    except (ValueError, OSError, RuntimeError) as err:
        from ..checkpoints.convert import format_error

        print(f"{PROG}: {format_error(err)}", file=sys.stderr)
        return 1

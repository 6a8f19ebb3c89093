"""``chatterbox-mlx serve`` / ``python -m chatterbox_mlx.server``: load the models, start
the OpenAI-compatible server (uvicorn) on 127.0.0.1:8000 unless told otherwise.

Exit codes: 1 bad input (one line on standard error: a model that cannot load, a port in
use, the server extra missing), 2 a malformed command line. Ctrl-C and SIGTERM shut down
gracefully (queued requests get a 503, running ones end at their next chunk, within
``--shutdown-grace``), then exit as the signal says: 130 for Ctrl-C,
killed by SIGTERM (143 in a shell), as uvicorn does.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

from ..cli.arguments import count_argument as _count
from ..cli.arguments import schedule_argument
from ..constants import SERVER_MAX_BATCH, STREAM_CHUNK_SCHEDULE, STREAM_PROMPT_TOKENS

PROG = "chatterbox-mlx serve"
API_KEY_ENV = "CHATTERBOX_MLX_API_KEY"


class ServeError(Exception):
    """A problem reported as one line, exit code 1."""


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
        return value

    return parse


# the limits: flag, type, default, what it limits
LIMITS = (
    ("--max-queue", _count, 8, "requests that may wait per model for a place (more: 429)"),
    ("--max-batch", _positive(int), SERVER_MAX_BATCH, "requests a model decodes together"),
    ("--max-chars", _positive(int), 4096, "longest input in characters (OpenAI's: 4096)"),
    ("--max-new-tokens", _positive(int), 15000, "cap on a request's speech tokens, 25 a second"),
    ("--max-audio-seconds", _positive(float), 600.0, "cap on a request's audio, pauses included"),
    ("--max-upload-mb", _positive(float), 20.0, "largest voice upload in MiB"),
    ("--max-voice-seconds", _positive(float), 60.0, "longest voice clip in seconds"),
    (
        "--request-timeout",
        _positive(float),
        30.0,
        "seconds to receive a request's headers and body",
    ),
    (
        "--max-connections",
        _positive(int),
        1000,
        "open connections (fewer if the file limit is low)",
    ),
    ("--shutdown-grace", _positive(float), 10.0, "seconds a shutdown waits for running responses"),
)


def add_served_model_arguments(p: argparse.ArgumentParser) -> None:
    """``--model`` (repeatable) and ``--quantize``, as every server takes them."""
    p.add_argument(
        "--model",
        action="append",
        metavar="MODEL",
        help="english | turbo | nano | multilingual | multilingual-v3 | a local "
        "directory | a hub repo id; repeat to serve several (the first is the "
        "default; default: turbo)",
    )
    p.add_argument("--quantize", type=int, choices=(4, 8), help="quantize T3 to 4 or 8 bits")


def add_stream_arguments(p: argparse.ArgumentParser) -> None:
    """``--chunk-tokens`` and ``--flow-prompt-tokens``: how served audio is streamed."""
    schedule = ",".join(map(str, STREAM_CHUNK_SCHEDULE))
    p.add_argument(
        "--chunk-tokens",
        type=schedule_argument,
        default=STREAM_CHUNK_SCHEDULE,
        metavar="N[,N...]",
        help="speech tokens per streamed chunk, the last size "
        f"repeating (25: 1 s of audio; default {schedule})",
    )
    p.add_argument(
        "--flow-prompt-tokens",
        type=_count,
        default=STREAM_PROMPT_TOKENS,
        metavar="N",
        help="streaming: the voice prompt's last N tokens condition "
        f"each chunk (default {STREAM_PROMPT_TOKENS}; 250: all of it)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="An OpenAI-compatible speech server (POST /v1/audio/speech) with a voice "
        "library and a web page at /.",
    )
    add_served_model_arguments(p)
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 "
        "for the network, then set --api-key)",
    )
    p.add_argument("--port", type=_count, default=8000, help="port (default 8000; 0: any free)")
    p.add_argument(
        "--api-key",
        help=f"require `Authorization: Bearer KEY` on /v1 (default: "
        f"${API_KEY_ENV} when set, else no key)",
    )
    p.add_argument(
        "--voices",
        metavar="DIR",
        help="the voice library folder (default: ~/.cache/chatterbox-mlx/voices)",
    )
    p.add_argument(
        "--wyoming",
        metavar="URI",
        help="also serve the Wyoming protocol (Home Assistant) on URI, e.g. "
        "tcp://0.0.0.0:10200, with the same models and voices (docs/wyoming.md)",
    )
    for flag, kind, default, meaning in LIMITS:
        p.add_argument(flag, type=kind, default=default, help=f"{meaning} (default {default:g})")
    add_stream_arguments(p)
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name that reaches this server besides localhost, its "
        "addresses and its host name (a proxy's, a DNS name); '*': any; repeatable",
    )
    p.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a web site (e.g. http://localhost:3000) whose pages may call the API "
        "from a browser; '*': any; repeatable (default: only this server's page)",
    )
    p.add_argument("--no-watermark", action="store_true", help="do not apply the Perth watermark")
    p.add_argument(
        "--log-level", default="info", choices=("critical", "error", "warning", "info", "debug")
    )
    return p


def settings_from(args):
    """The server's ``Settings`` from parsed arguments and the environment."""
    from .app import Settings

    key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    return Settings(
        api_key=key or None,
        max_chars=args.max_chars,
        max_queue=args.max_queue,
        max_batch=args.max_batch,
        max_new_tokens=args.max_new_tokens,
        max_audio_seconds=args.max_audio_seconds,
        request_timeout=args.request_timeout,
        max_connections=args.max_connections,
        shutdown_grace=args.shutdown_grace,
        allowed_hosts=tuple(args.allowed_host),
        cors_origins=tuple(args.cors_origin),
        chunk_tokens=args.chunk_tokens,
        flow_prompt_tokens=args.flow_prompt_tokens,
        max_upload_bytes=int(args.max_upload_mb * (1 << 20)),
        max_voice_seconds=args.max_voice_seconds,
        watermark=not args.no_watermark,
    )


def _load_models(names: list[str], quantize: int | None) -> dict:
    from ..tts import load_pipeline
    from ..variants import ALIASES, VARIANTS

    models: dict = {}
    for given in names:
        print(f"{PROG}: loading {given}", file=sys.stderr, flush=True)
        model = load_pipeline(given, quantize=quantize)
        key = given.lower()
        name = ALIASES.get(key, key) if ALIASES.get(key, key) in VARIANTS else model.variant.name
        base, n = name, 1
        while name in models:
            n += 1
            name = f"{base}-{n}"
        models[name] = model
    return models


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise ServeError(f"--host {host}: {err.strerror}") from None
    family = infos[0][0]
    try:
        return socket.create_server((host, port), family=family, backlog=128)
    except OSError as err:
        hint = "; pick another with --port (0: any free port)" if port else ""
        raise ServeError(f"cannot listen on {host}:{port}: {err.strerror}{hint}") from None


def run(args) -> int:
    import importlib.util

    for module, package in (
        ("fastapi", "fastapi"),
        ("uvicorn", "uvicorn"),
        ("python_multipart", "python-multipart"),
    ):
        if importlib.util.find_spec(module) is None:
            raise ServeError(
                f"the server needs the `server` extra ({package} is missing): "
                "pip install 'mlx-chatterbox[server]'"
            )
    from .app import create_app
    from .connections import raise_file_limit
    from .serving import make_server
    from .voices import LibraryError, VoiceLibrary, default_dir

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s: %(message)s")
    settings = settings_from(args)
    raise_file_limit()  # before the sockets: the connection cap follows the limit
    try:
        library = VoiceLibrary(args.voices or default_dir())
    except LibraryError as err:
        raise ServeError(str(err)) from None
    sock = _bind(args.host, args.port)
    wyoming = None
    if args.wyoming:
        from ..wyoming import beside_http

        wyoming = beside_http(args.wyoming)  # listening now, before the models load
    models = _load_models(args.model or ["turbo"], args.quantize)
    app = create_app(models, settings=settings, library=library)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(
        f"{PROG}: serving {', '.join(models)} on http://{shown}:{port} (voices in "
        f"{library.root}{'; API key required' if settings.api_key else ''})",
        file=sys.stderr,
        flush=True,
    )
    if args.host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key:
        print(
            f"{PROG}: warning: listening on {args.host} without --api-key: anyone who can "
            "reach this port can use it",
            file=sys.stderr,
            flush=True,
        )
    server = make_server(app, log_level=args.log_level, access_log=args.log_level == "debug")
    if wyoming is not None:
        print(f"{PROG}: Wyoming protocol on {wyoming.uri}", file=sys.stderr, flush=True)
        wyoming.run(server, [sock], app.state.server)
    else:
        server.run(sockets=[sock])
    return 0


def main(argv: list[str] | None = None) -> int:
    """``chatterbox-mlx serve ARGS`` (``argv`` without ``serve``)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except KeyboardInterrupt:  # while loading, or uvicorn's after its graceful shutdown
        return 130
    except (ServeError, ValueError, OSError, RuntimeError) as err:
        from ..checkpoints.convert import format_error

        print(f"{PROG}: {format_error(err)}", file=sys.stderr)
        return 1

"""The small command-line points of issue 30: the converter names an unknown option,
every generation option of ``chatterbox-mlx`` has help text, and ``serve --help``
describes the server's limits and cross-site flags (parsed into ``Settings``)."""

from __future__ import annotations

import subprocess
import sys

from chatterbox_mlx.cli.arguments import build_parser as generate_parser
from chatterbox_mlx.server.cli import build_parser, settings_from

import pytest


def test_convert_names_an_unknown_option():
    done = subprocess.run(
        [sys.executable, "-m", "chatterbox_mlx.checkpoints.convert", "--bogus"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "convert.py: error: unrecognized arguments: --bogus"
    )
    done = subprocess.run(
        [sys.executable, "-m", "chatterbox_mlx.checkpoints.convert"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "SOURCE --hf-path is required" in done.stderr


def test_every_generation_option_has_help():
    parser = generate_parser()
    (group,) = [g for g in parser._action_groups if g.title.startswith("generation")]
    missing = [a.option_strings[0] for a in group._group_actions if not a.help]
    assert missing == []


@pytest.mark.parametrize(
    "flags, field, value",
    [
        (["--max-audio-seconds", "30"], "max_audio_seconds", 30.0),
        (["--request-timeout", "2.5"], "request_timeout", 2.5),
        (["--max-connections", "50"], "max_connections", 50),
        (["--shutdown-grace", "3"], "shutdown_grace", 3.0),
        (
            ["--allowed-host", "a.example", "--allowed-host", "b"],
            "allowed_hosts",
            ("a.example", "b"),
        ),
        (["--cors-origin", "http://localhost:3000"], "cors_origins", ("http://localhost:3000",)),
    ],
)
def test_serve_flags_reach_the_settings(flags, field, value):
    assert getattr(settings_from(build_parser().parse_args(flags)), field) == value
    help_text = build_parser().format_help()
    assert flags[0] in help_text


@pytest.mark.parametrize("flag", ["--max-audio-seconds", "--request-timeout", "--shutdown-grace"])
def test_serve_refuses_limits_that_are_not_positive(flag):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([flag, "0"])
    assert exited.value.code == 2

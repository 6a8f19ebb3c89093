"""Every command of ours in README.md's shell blocks parses with the real argument parsers.

A shell line is split at ``&&``, ``||``, ``;``, ``|`` and ``&`` (comments, quotes and
``\\`` continuations as a shell reads them); each command whose program is ours
(``chatterbox-mlx``, ``python -m chatterbox_mlx.<module>``, ``python convert.py``) is
parsed by that program's ``build_parser()``, and one of ours without a known parser fails.
Other programs (pip, pytest, benchmark scripts) are skipped. ``[...]`` marks optional
arguments: the command is checked without and with each such group.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SHELLS = ("bash", "sh", "shell", "console")
SEPARATORS = {"&&", "||", ";", "|", "&"}


def generate_parser():
    from chatterbox_mlx.cli.main import build_parser

    return build_parser()


def convert_parser():
    from chatterbox_mlx.checkpoints.convert import build_parser

    return build_parser()


def serve_parser():
    from chatterbox_mlx.server.cli import build_parser

    return build_parser()


def wyoming_parser():
    from chatterbox_mlx.wyoming.cli import build_parser

    return build_parser()


def book_parser():
    from chatterbox_mlx.book.cli import build_parser

    return build_parser()


def voice_parser():
    from chatterbox_mlx.cli.main import build_voice_parser

    return build_voice_parser()


# Our programs -> their parser. A README command of ours missing here fails the test.
MODULE_PARSERS = {
    "chatterbox_mlx.generate": generate_parser,
    "chatterbox_mlx.checkpoints.convert": convert_parser,
    "chatterbox_mlx.server": serve_parser,
    "chatterbox_mlx.wyoming": wyoming_parser,
    "chatterbox_mlx.book": book_parser,
}
SCRIPT_PARSERS = {"convert.py": convert_parser}
ENTRY_POINTS = {"chatterbox-mlx": generate_parser}
SUBCOMMANDS = {  # their own parsers
    ("chatterbox-mlx", "voice"): voice_parser,
    ("chatterbox-mlx", "serve"): serve_parser,
    ("chatterbox-mlx", "wyoming"): wyoming_parser,
    ("chatterbox-mlx", "book"): book_parser,
}


def shell_lines(markdown: str) -> list[tuple[int, str]]:
    """(line number, logical line) of every fenced shell block, continuations joined."""
    out, fence, pending, start = [], None, "", 0
    for number, line in enumerate(markdown.splitlines(), 1):
        stripped = line.strip()
        if fence is None:
            match = re.match(r"^(```+|~~~+)\s*(\w+)?", stripped)
            if match:
                fence = (match.group(1), (match.group(2) or "").lower())
            continue
        if stripped.startswith(fence[0]):
            fence = None
            continue
        if fence[1] not in SHELLS:
            continue
        if fence[1] == "console":
            if not stripped.startswith("$ ") and not pending:
                continue  # output, not a command
            line = line.split("$ ", 1)[1] if not pending else line
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    return out


def commands(line: str) -> list[list[str]]:
    """The simple commands of one shell line, as argument lists (redirections and
    leading ``NAME=value`` assignments removed)."""
    line = re.sub(r"(?<=\s)\d+(?=[<>])", "", line)  # the descriptor of 2>file, 2>&1
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    out, current = [], []
    redirected = False
    for token in lexer:
        if redirected:  # the target of a redirection
            redirected = False
        elif token in SEPARATORS:
            out.append(current)
            current = []
        elif set(token) <= set("<>&") and set(token) & set("<>"):
            redirected = True
        else:
            current.append(token)
    out.append(current)
    for argv in out:
        while argv and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", argv[0]):
            argv.pop(0)
    return [argv for argv in out if argv]


def program(argv: list[str]):
    """(name, parser factory, arguments) when ``argv`` runs one of ours, else None.
    The factory is None for one of ours whose parser this test does not know."""
    name = Path(argv[0]).name
    if len(argv) > 1 and (name, argv[1]) in SUBCOMMANDS:
        return f"{name} {argv[1]}", SUBCOMMANDS[name, argv[1]], argv[2:]
    if name in ENTRY_POINTS or name.startswith("chatterbox"):
        return name, ENTRY_POINTS.get(name), argv[1:]
    if re.fullmatch(r"python(\d+(\.\d+)?)?", name) and len(argv) > 1:
        if argv[1] == "-m" and len(argv) > 2:
            module = argv[2]
            if module.split(".")[0] == "chatterbox_mlx":
                return f"python -m {module}", MODULE_PARSERS.get(module), argv[3:]
            return None
        script = Path(argv[1])
        if script.name in SCRIPT_PARSERS and script.parent in (Path("."), Path("")):
            return f"python {argv[1]}", SCRIPT_PARSERS[script.name], argv[2:]
    return None


def expand_optional(args: list[str]) -> list[list[str]]:
    """``a [b c] d`` -> ``a d`` and ``a b c d`` (every combination of the groups)."""
    groups, plain = [], []
    inside = None
    for token in args:
        if inside is None and token.startswith("["):
            inside = []
            token = token[1:]
        if inside is not None:
            closing = token.endswith("]")
            if token.rstrip("]"):
                inside.append(token.rstrip("]") if closing else token)
            if closing:
                groups.append(inside)
                plain.append(len(groups) - 1)
                inside = None
            continue
        plain.append(token)
    if inside is not None:
        raise ValueError(f"unclosed [ in {' '.join(args)}")
    variants = []
    for chosen in itertools.product((False, True), repeat=len(groups)):
        argv = []
        for item in plain:
            if isinstance(item, int):
                argv += groups[item] if chosen[item] else []
            else:
                argv.append(item)
        variants.append(argv)
    return variants


def readme_commands() -> list[tuple[str, str, object, list[str]]]:
    """(id, our program, parser factory, arguments) for every command of ours."""
    found = []
    for number, line in shell_lines(README.read_text(encoding="utf-8")):
        for argv in commands(line):
            ours = program(argv)
            if ours is None:
                continue
            name, factory, args = ours
            for variant in expand_optional(args):
                found.append((f"README.md:{number}: {name} {' '.join(variant)}", name, factory,
                              variant))  # fmt: skip
    return found


COMMANDS = readme_commands()


def test_the_readme_shows_commands_of_each_program():
    """So that a reorganised README cannot empty the parametrized test below."""
    names = {name for _, name, _, _ in COMMANDS}
    assert "chatterbox-mlx" in names and "python convert.py" in names, names
    assert "python -m chatterbox_mlx.generate" in names, names


@pytest.mark.parametrize("where,name,factory,args", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_readme_command_parses(where, name, factory, args):
    assert factory is not None, (
        f"{where}: {name} is one of ours but this test knows no parser for it; add its "
        "build_parser to the tables at the top of tests/test_readme_commands.py"
    )
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            factory().parse_args(args)
    except SystemExit as stop:
        assert stop.code == 0, (
            f"{where}\n{errors.getvalue()}(a subcommand with a parser of its own belongs in "
            "SUBCOMMANDS at the top of tests/test_readme_commands.py)"
        )


# ------------------------------------------------------------------- the splitter itself


def test_shell_lines_join_continuations_and_skip_other_blocks():
    text = (
        "```python\nchatterbox-mlx --no\n```\n"
        "```bash\nchatterbox-mlx --text hi \\\n  --out a.wav  # comment\necho x\n```\n"
        "```console\n$ python convert.py SRC\nSaved the MLX model to SRC-mlx\n```\n"
    )
    assert shell_lines(text) == [
        (5, "chatterbox-mlx --text hi    --out a.wav  # comment"),
        (7, "echo x"),
        (10, "python convert.py SRC"),
    ]


@pytest.mark.parametrize(
    "line,expected",
    [
        ("pip install -e . && chatterbox-mlx --text 'a # b' --out x.wav  # says hi",
         [["pip", "install", "-e", "."], ["chatterbox-mlx", "--text", "a # b", "--out", "x.wav"]]),
        ('echo "Piped." | HF_HUB_OFFLINE=1 chatterbox-mlx --seed 1 > log.txt 2>&1',
         [["echo", "Piped."], ["chatterbox-mlx", "--seed", "1"]]),
        ("python convert.py a/b -o c; python -m chatterbox_mlx.generate --play &",
         [["python", "convert.py", "a/b", "-o", "c"],
          ["python", "-m", "chatterbox_mlx.generate", "--play"]]),
    ],
)  # fmt: skip
def test_commands_split_like_a_shell(line, expected):
    assert commands(line) == expected


def test_programs_of_ours_are_recognised():
    assert program(["python3", "-m", "chatterbox_mlx.generate", "--text", "x"])[1] is not None
    assert program(["python", "convert.py", "x"])[2] == ["x"]
    assert program(["python", "-m", "chatterbox_mlx.serve"])[1] is None  # ours, no parser
    assert program(["chatterbox-mlx-voice", "add"])[1] is None
    assert program(["chatterbox-mlx", "voice", "--out", "v"])[:2] == ("chatterbox-mlx voice",
                                                                      voice_parser)  # fmt: skip
    for other in (["python", "-m", "pytest"], ["python", "benchmarks/x.py"], ["pip", "install"]):
        assert program(other) is None


def test_optional_groups_are_expanded():
    assert expand_optional(["--variant", "turbo", "[--quantize", "0", "8]", "[-q]"]) == [
        ["--variant", "turbo"],
        ["--variant", "turbo", "-q"],
        ["--variant", "turbo", "--quantize", "0", "8"],
        ["--variant", "turbo", "--quantize", "0", "8", "-q"],
    ]
    with pytest.raises(ValueError, match="unclosed"):
        expand_optional(["[--play"])


def test_a_line_that_does_not_parse_is_caught():
    """The check itself: a wrong option fails with argparse's message."""
    with pytest.raises(AssertionError, match="unrecognized arguments: -x"):
        test_readme_command_parses("README.md:1", "python convert.py", convert_parser, ["a", "-x"])

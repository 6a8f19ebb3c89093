"""Source checks for code paths that only a GPU backend would exercise."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "chatterbox_mlx"


def _is_mx_attr(node: ast.AST, name: str) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == name
        and isinstance(node.value, ast.Name)
        and node.value.id == "mx"
    )


def float64_calls_off_the_cpu_stream(source: str) -> list[int]:
    """Line numbers of calls taking ``mx.float64`` that do not say ``stream=mx.cpu``."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        values = [*node.args, *(k.value for k in node.keywords)]
        if not any(_is_mx_attr(v, "float64") for v in values):
            continue
        stream = [k.value for k in node.keywords if k.arg == "stream"]
        if not (stream and _is_mx_attr(stream[0], "cpu")):
            lines.append(node.lineno)
    return lines


def test_the_check_catches_an_unpinned_float64_cast():
    bad = "y = mx.cumsum(x.astype(mx.float64), axis=1, stream=mx.cpu)"
    good = "y = mx.cumsum(x.astype(mx.float64, stream=mx.cpu), axis=1, stream=mx.cpu)"
    assert float64_calls_off_the_cpu_stream(bad) == [1]
    assert float64_calls_off_the_cpu_stream(good) == []


def test_float64_mlx_ops_are_pinned_to_the_cpu_stream():
    # Metal and CUDA have no float64: an MLX op that makes float64 must run on
    # stream=mx.cpu, or it fails on a GPU default device (as HiFT's phase cumsum once did).
    offenders = [
        f"{path.relative_to(PACKAGE)}:{line}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line in float64_calls_off_the_cpu_stream(path.read_text())
    ]
    assert not offenders, f"float64 MLX ops off the CPU stream: {offenders}"

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


# What only chatterbox_mlx.models.layers may touch: the CPU kernels and device checks.
BOUNDARY_NAMES = {"numpy_view", "on_cpu", "default_device_is_cpu", "cpu_kernels_active", "_blas"}


def boundary_crossings(source: str) -> list[str]:
    """``line: what`` for each import of ``chatterbox_mlx.cpu`` / ``_blas``, each use of a
    device check or numpy view, and each test of ``mx.default_device()``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            names = {alias.name for alias in node.names}
            if module.split(".")[0] in ("cpu", "_blas") or module.endswith((".cpu", "_blas")):
                found.append(f"{node.lineno}: from {module} import")
            elif names & (BOUNDARY_NAMES | {"cpu"}):
                found.append(f"{node.lineno}: import {sorted(names & (BOUNDARY_NAMES | {'cpu'}))}")
        elif isinstance(node, ast.Attribute) and node.attr in BOUNDARY_NAMES | {"default_device"}:
            found.append(f"{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Name) and node.id in BOUNDARY_NAMES:
            found.append(f"{node.lineno}: {node.id}")
    return found


def test_the_boundary_check_catches_a_crossing():
    assert boundary_crossings("from ..layers import Conv1d, attention") == []
    assert boundary_crossings("from ..layers import on_cpu") == ["1: import ['on_cpu']"]
    assert boundary_crossings("from ..cpu import conv") == ["1: from cpu import"]
    assert boundary_crossings("from .. import cpu") == ["1: import ['cpu']"]
    assert boundary_crossings("if mx.default_device() == mx.cpu: pass") == ["1: .default_device"]
    assert boundary_crossings("y = layers.numpy_view(x)") == ["1: .numpy_view"]


# The two modules of models/ that are not networks: the boundary itself, and the strict
# loader (its finite check reads MLX's buffers through numpy where the CPU paths are on).
NOT_NETWORKS = {"layers.py", "weights.py"}


def test_networks_reach_cpu_paths_only_through_layers():
    # A network module reads as an MLX model: the CPU-only paths, and the decision whether
    # to take them, live behind chatterbox_mlx.models.layers (DEVELOPING.md, "CPU boundary").
    offenders = [
        f"{path.relative_to(PACKAGE)}:{crossing}"
        for path in sorted((PACKAGE / "models").rglob("*.py"))
        if path.relative_to(PACKAGE / "models").as_posix() not in NOT_NETWORKS
        for crossing in boundary_crossings(path.read_text())
    ]
    assert not offenders, f"network modules crossing the CPU boundary: {offenders}"

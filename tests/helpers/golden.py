"""Reading the committed reference outputs (``tests/golden/*.npz``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "golden"


def load_golden(name: str) -> dict[str, np.ndarray]:
    path = GOLDEN_DIR / f"{name}.npz"
    if not path.exists():
        raise FileNotFoundError(
            f"golden {path} is missing: run `bash tests/reference/make_goldens.sh`"
        )
    with np.load(path) as data:
        out = {k: data[k] for k in data.files}
    out["__meta__"] = json.loads(str(out["__meta__"]))
    return out


def assert_close(actual, expected, rtol: float, name: str = "") -> float:
    """Max abs error relative to the reference signal's max abs value; assert <= rtol.

    This is the project's parity metric (DEVELOPERS.md: ~1e-4 relative in float32)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    dtype = np.complex128 if np.iscomplexobj(actual) or np.iscomplexobj(expected) else np.float64
    actual, expected = actual.astype(dtype), expected.astype(dtype)  # complex: |a - b|
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    scale = max(float(np.max(np.abs(expected))), 1e-12)
    err = float(np.max(np.abs(actual - expected))) / scale
    assert err <= rtol, f"{name}: relative max error {err:.3g} > {rtol:.3g}"
    return err

"""Shared by the golden scripts, which run inside the reference venv.

Every golden file is ``tests/golden/<name>.npz``: the arrays, plus ``__meta__``
(a JSON string) recording the reference version and the command that made it.
Scripts fix every seed so that regenerating gives the same bytes.
"""

from __future__ import annotations

import json
import platform
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
GOLDEN_DIR = ROOT / "tests" / "golden"
sys.path.insert(0, str(ROOT))  # so scripts can import tests.helpers


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in (
        "chatterbox-tts",
        "torch",
        "torchaudio",
        "transformers",
        "diffusers",
        "librosa",
        "numpy",
        "s3tokenizer",
        "pyloudnorm",
        "resemble-perth",
    ):
        try:
            out[pkg] = version(pkg)
        except Exception:
            pass
    return out


def save_golden(name: str, arrays: dict, script: str, notes: str = "") -> Path:
    """Write ``tests/golden/<name>.npz``; torch tensors are converted to numpy."""
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    clean = {}
    for key, value in arrays.items():
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        clean[key] = np.asarray(value)
    meta = {
        "reference": versions(),
        "command": f".refenv/bin/python {script}",
        "regenerate_all": "bash tests/reference/make_goldens.sh",
        "notes": notes,
    }
    clean["__meta__"] = np.array(json.dumps(meta, sort_keys=True))
    path = GOLDEN_DIR / f"{name}.npz"
    np.savez(path, **clean)
    return path

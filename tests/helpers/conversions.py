"""Conversions the checkpoint tests share: what a failed conversion may leave behind, and
a Hugging Face cache entry made by hand (offline tests of hub resolution)."""

from __future__ import annotations

import os
from pathlib import Path


def leftovers(path: Path) -> list[str]:
    """Temporary conversion folders left beside ``path``."""
    return [p.name for p in path.parent.glob(f".{path.name}.*")]


def assert_no_output(out: Path) -> None:
    assert not out.exists()
    assert not leftovers(out)


def fake_hf_cache(root: Path, repo: str, files: dict[str, Path]) -> Path:
    """A Hugging Face cache entry (refs/main -> snapshot) holding ``files``."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    entry = root / f"models--{repo.replace('/', '--')}"
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(commit)
    snap = entry / "snapshots" / commit
    snap.mkdir(parents=True)
    for name, target in files.items():
        os.symlink(target, snap / name)
    return snap

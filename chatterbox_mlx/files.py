"""Writing files whole or not at all, and hashing them.

Every writer in the package goes through ``AtomicFile`` (or ``atomic_write``, its context
manager): the bytes go to a temporary file in the destination's folder, are synced to
disk, and replace the destination in one ``os.replace``, so a reader sees the old file or
the new one, never half of one, and an error leaves no temporary behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


class AtomicFile:
    """A temporary file beside ``path`` (``.file``, open for writing and reading back)
    that becomes ``path`` on ``commit()``; ``discard()`` removes it. Creating one raises
    OSError when the folder cannot take a file."""

    def __init__(self, path: str | os.PathLike, mode: int | None = None):
        self.path = Path(path)
        fd, name = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
        )
        self.tmp_path = Path(name)
        self.file: BinaryIO = os.fdopen(fd, "w+b")  # encoders seek back to headers
        self._mode = 0o666 & ~_umask() if mode is None else mode  # mkstemp makes 0600

    def commit(self) -> None:
        """Sync the temporary file and move it onto ``path``."""
        if not self.file.closed:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
        os.chmod(self.tmp_path, self._mode)
        os.replace(self.tmp_path, self.path)

    def discard(self) -> None:
        """Remove the temporary file; ``path`` stays as it was."""
        with contextlib.suppress(OSError):
            self.file.close()
        self.tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: int | None = None) -> Iterator[BinaryIO]:
    """``with atomic_write(path) as f: f.write(...)``: ``path`` is replaced when the block
    ends cleanly and left untouched (no temporary left) when it raises."""
    target = AtomicFile(path, mode)
    try:
        yield target.file
        target.commit()
    except BaseException:
        target.discard()
        raise


def sha256_file(path: str | os.PathLike, block_bytes: int = 1 << 24) -> str:
    """Hex sha256 of a file's contents, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(block_bytes):
            digest.update(block)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

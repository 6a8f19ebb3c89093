"""The work folder: what a book's run has finished, kept so that it can resume.

Layout: ``manifest.json`` (the book's sha256, the settings that shape the audio, the
seed), ``lock`` (held while a run uses the folder), and per chapter ``NNNN/``: for each
finished chunk ``CCCC.flac`` (its audio, 16-bit: every output is 16-bit or lossy) and
``CCCC.json`` (its text, seed, attempts, token count, duration and any problems). Both
are written atomically, the record last: a chunk is finished when its record exists, so
a run killed at any point leaves finished chunks and at most stray temporary files,
which the next run removes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from pathlib import Path

import numpy as np

from ..audio.formats import encode_audio
from ..files import atomic_write
from .chapters import BookError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class WorkFolderError(BookError):
    """The work folder belongs to another book or other settings, or is in use."""


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append(f"{prefix}{key} {a!r} -> {b!r}")
    return changes


class WorkFolder:
    def __init__(self, path: str | os.PathLike, sr: int):
        self.path = Path(path)
        self.sr = sr
        self._lock = None

    # ---- opening ------------------------------------------------------------------------

    def open(
        self,
        book_sha256: str,
        settings: dict,
        seed: int | None,
        new_seed: int,
        restart: bool = False,
    ) -> int:
        """Lock the folder and check (or write) its manifest; returns the book's seed:
        ``seed``, or the one this folder was started with, or ``new_seed`` for a new one."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise WorkFolderError(
                f"cannot make the work folder {self.path}: {err.strerror}"
            ) from None
        self._take_lock()
        try:
            return self._start(book_sha256, settings, seed, new_seed, restart)
        except BaseException:
            self.close()
            raise

    def _start(self, book_sha256: str, settings: dict, seed, new_seed: int, restart) -> int:
        manifest_path = self.path / MANIFEST
        if restart:
            self._clear()
        if manifest_path.exists():
            return self._check(manifest_path, book_sha256, settings, seed)
        chosen = new_seed if seed is None else seed
        manifest = {
            "format": FORMAT_VERSION,
            "book_sha256": book_sha256,
            "settings": settings,
            "seed": chosen,
        }
        with atomic_write(manifest_path) as f:
            f.write(json.dumps(manifest, indent=1, sort_keys=True).encode())
        return chosen

    def _take_lock(self) -> None:
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise WorkFolderError(
                f"another run is using the work folder {self.path}; wait for it to finish "
                "or stop it first"
            ) from None
        self._lock = fd

    def _check(self, manifest_path: Path, book_sha256: str, settings: dict, seed) -> int:
        restart = f"add --restart to discard the work in {self.path} and start again"
        try:
            manifest = json.loads(manifest_path.read_text())
            stored_seed = int(manifest["seed"])
        except (ValueError, KeyError, TypeError) as err:
            raise WorkFolderError(f"{manifest_path} is damaged ({err}); {restart}") from None
        if manifest.get("format") != FORMAT_VERSION:
            raise WorkFolderError(f"{self.path} was made by another version; {restart}")
        if manifest.get("book_sha256") != book_sha256:
            raise WorkFolderError(
                f"the book changed since {self.path} was started; give the same file to "
                f"resume, or {restart}"
            )
        changes = _differences(manifest.get("settings", {}), settings)
        if seed is not None and seed != stored_seed:
            changes.append(f"seed {stored_seed} -> {seed}")
        if changes:
            raise WorkFolderError(
                f"{self.path} was started with other settings ({'; '.join(changes)}); run "
                f"with the same options to resume, or {restart}"
            )
        return stored_seed

    def _clear(self) -> None:
        for entry in self.path.iterdir():
            if entry.name == "lock":
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    # ---- chunks -------------------------------------------------------------------------

    def _chunk_path(self, chapter: int, index: int, suffix: str) -> Path:
        return self.path / f"{chapter:04d}" / f"{index:04d}{suffix}"

    def audio_path(self, chapter: int, index: int) -> Path:
        return self._chunk_path(chapter, index, ".flac")

    def load_record(self, chapter: int, index: int) -> dict | None:
        """The finished chunk's record, or None (not finished, or its audio is gone)."""
        record_path = self._chunk_path(chapter, index, ".json")
        try:
            record = json.loads(record_path.read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            return None  # cannot happen with atomic writes; render it again
        if not self.audio_path(chapter, index).is_file():
            return None
        return record

    def save(self, chapter: int, index: int, wav: np.ndarray, record: dict) -> None:
        folder = self.path / f"{chapter:04d}"
        folder.mkdir(exist_ok=True)
        encode_audio(wav, self.sr, self.audio_path(chapter, index))
        self.save_record(chapter, index, record)

    def save_record(self, chapter: int, index: int, record: dict) -> None:
        with atomic_write(self._chunk_path(chapter, index, ".json")) as f:
            f.write(json.dumps(record, ensure_ascii=False, sort_keys=True).encode())

    def read_audio(self, chapter: int, index: int) -> np.ndarray:
        import soundfile as sf

        wav, _ = sf.read(self.audio_path(chapter, index), dtype="float32")
        return wav

    def remove_strays(self) -> None:
        """Temporary files a killed run left behind."""
        for stray in self.path.glob("*/.*.tmp"):
            with contextlib.suppress(OSError):
                stray.unlink()

    # ---- closing ------------------------------------------------------------------------

    def close(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def remove(self) -> None:
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)

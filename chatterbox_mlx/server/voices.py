"""The server's voice library: uploaded clips, prepared once per model family and kept as
saved-voice files (``chatterbox_mlx.voice.voice_file``) under one folder (``--voices DIR``, default
``~/.cache/chatterbox-mlx/voices``, under ``$CHATTERBOX_MLX_CACHE`` when that is set)::

    DIR/<id>/voice.json        {"id", "name", "created_at", "source", "source_sha256",
                                "source_seconds"}
    DIR/<id>/source.<ext>      the uploaded clip as it was sent (wav, flac, mp3 or ogg)
    DIR/<id>/<family>.voice    the prepared voice of a model family (``cfg``: English and
                               Multilingual; ``turbo``: Turbo and Nano), made at upload with
                               the model it was uploaded to, and on first use for the other

Ids are made by the server from the name (lowercase ASCII letters, digits, ``-`` and
``_``, at most 64 characters) and are the only part of a path that comes from a request:
an id that does not match that pattern is never looked up on disk, and a name (shown to
people, matched case-insensitively) is only ever stored inside ``voice.json``. A voice
appears whole or not at all (it is assembled in a hidden staging folder, then renamed).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

from ..voice import voice_file as voice_files
from ..voice.conditionals import Conditionals

ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
MAX_NAME_CHARS = 64
BUILTIN_ID = "default"  # the model's built-in voice; no saved voice may take this name
META_FILE = "voice.json"
SOURCE_STEM = "source"
CACHE_SIZE = 16  # prepared voices kept in memory


class LibraryError(ValueError):
    """A voice name or upload the library refuses; ``status`` is the HTTP status."""

    def __init__(
        self, message: str, status: int = 400, param: str | None = None, code: str | None = None
    ):
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code


def evaluated(conds: Conditionals | None) -> Conditionals | None:
    """``conds`` with every array evaluated: MLX arrays left lazy in the thread that made
    them cannot be evaluated in another (each model computes in its own thread)."""
    import mlx.core as mx

    if conds is not None:
        parts = [p for p in (conds.t3, conds.gen) if p is not None]
        arrays = [getattr(p, f.name) for p in parts for f in fields(p)]
        mx.eval([a for a in arrays if isinstance(a, mx.array)])
    return conds


def default_dir() -> Path:
    from ..checkpoints.originals import cache_root

    return cache_root() / "voices"


def check_name(name) -> str:
    """A voice name, stripped; LibraryError when it is empty, too long, holds control
    characters or path separators, or is the built-in voice's id."""
    if not isinstance(name, str) or not name.strip():
        raise LibraryError(
            "the voice needs a name (form field `name`), e.g. name=Alice",
            param="name",
            code="invalid_name",
        )
    name = name.strip()
    if len(name) > MAX_NAME_CHARS:
        raise LibraryError(
            f"the voice name has {len(name)} characters; the limit is {MAX_NAME_CHARS}",
            param="name",
            code="invalid_name",
        )
    bad = [c for c in name if unicodedata.category(c).startswith("C") or c in "/\\"]
    if bad or name in (".", ".."):
        shown = ", ".join(sorted({f"U+{ord(c):04X}" if c not in "/\\" else c for c in bad}))
        raise LibraryError(
            f"the voice name {name!r} is refused: it must not contain path separators (/ \\), "
            f"control characters or NUL{f' (found {shown})' if shown else ''}, nor be . or ..; "
            "use letters, digits, spaces and punctuation",
            param="name",
            code="invalid_name",
        )
    if name.casefold() == BUILTIN_ID:
        raise LibraryError(
            f"{BUILTIN_ID!r} is the built-in voice's id; choose another name",
            param="name",
            code="invalid_name",
        )
    return name


def slug(name: str) -> str:
    """The id stem of a name: ASCII letters and digits, other runs as ``-``."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    stem = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:48].strip("-")
    return stem or "voice"


def is_id(value) -> bool:
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


@dataclass(frozen=True)
class VoiceEntry:
    id: str
    name: str
    created_at: int
    source: str  # file name of the clip inside the voice's folder
    source_sha256: str | None = None
    source_seconds: float | None = None

    def public(self) -> dict:
        """The voice as the API shows it (OpenAI's ``audio.voice`` object, plus ours)."""
        return {
            "id": self.id,
            "name": self.name,
            "object": "audio.voice",
            "type": "audio_sample",
            "created_at": self.created_at,
            "source_seconds": self.source_seconds,
        }


class VoiceLibrary:
    """Saved voices under ``root`` (see the module docstring). Safe from several threads."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise LibraryError(
                f"cannot create the voice folder {self.root}: "
                f"{err.strerror or err}; pass --voices DIR"
            ) from err
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise LibraryError(f"the voice folder {self.root} is not writable; pass --voices DIR")
        self._lock = threading.RLock()
        self._cache: OrderedDict[tuple, Conditionals] = OrderedDict()
        self._clean_staging()

    def _clean_staging(self) -> None:
        for path in self.root.glob(".staging-*"):
            shutil.rmtree(path, ignore_errors=True)
        for path in self.root.glob(".trash-*"):
            shutil.rmtree(path, ignore_errors=True)

    # ---- reading --------------------------------------------------------------------

    def _folder(self, voice_id: str) -> Path:
        if not is_id(voice_id):  # never a path from a request that is not an id
            raise LibraryError("invalid voice id", status=404, code="voice_not_found")
        return self.root / voice_id

    def _read(self, folder: Path) -> VoiceEntry | None:
        try:
            meta = json.loads((folder / META_FILE).read_text("utf-8"))
            entry = VoiceEntry(
                id=folder.name,
                name=str(meta["name"]),
                created_at=int(meta["created_at"]),
                source=str(meta["source"]),
                source_sha256=meta.get("source_sha256"),
                source_seconds=meta.get("source_seconds"),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if Path(entry.source).name != entry.source:
            return None  # a hand-edited voice.json cannot point outside its folder
        return entry

    def list(self) -> list[VoiceEntry]:
        entries = []
        for folder in self.root.iterdir():
            if is_id(folder.name) and folder.is_dir():
                entry = self._read(folder)
                if entry is not None:
                    entries.append(entry)
        return sorted(entries, key=lambda e: (e.name.casefold(), e.id))

    def get(self, voice_id: str) -> VoiceEntry | None:
        if not is_id(voice_id):
            return None
        folder = self.root / voice_id
        return self._read(folder) if folder.is_dir() else None

    def find(self, ref: str) -> VoiceEntry | None:
        """The voice whose id is ``ref``, else whose name is ``ref`` (ignoring case)."""
        entry = self.get(ref)
        if entry is not None:
            return entry
        wanted = ref.strip().casefold()
        for entry in self.list():
            if entry.name.casefold() == wanted:
                return entry
        return None

    def check_new_name(self, name) -> str:
        """``name``, checked (``check_name``) and unique: no voice has it (any case) as
        its name or its id, so that a name or an id always picks one voice."""
        name = check_name(name)
        wanted = name.casefold()
        for existing in self.list():
            if wanted in (existing.name.casefold(), existing.id):
                taken = "named" if wanted == existing.name.casefold() else "with the id"
                raise LibraryError(
                    f"a voice {taken} {name!r} already exists (id {existing.id!r}, name "
                    f"{existing.name!r}); delete it first (DELETE /v1/audio/voices/"
                    f"{existing.id}) or choose another name",
                    status=409,
                    param="name",
                    code="voice_exists",
                )
        return name

    # ---- writing --------------------------------------------------------------------

    def staging(self) -> Path:
        """A fresh hidden folder inside the library for one upload (``add`` moves it into
        place; ``discard`` removes it)."""
        path = self.root / f".staging-{secrets.token_hex(8)}"
        path.mkdir()
        return path

    @staticmethod
    def discard(staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def add(
        self, name: str, staging: Path, source: str, family: str, conds: Conditionals
    ) -> VoiceEntry:
        """Store the clip ``staging/source`` and its prepared voice for ``family`` as a new
        voice named ``name``; ``staging`` (from :meth:`staging`) is consumed."""
        try:
            voice_files.save_voice(
                staging / f"{family}{voice_files.SUFFIX}",
                conds,
                family=family,
                source_sha256=conds.source_sha256,
                source_seconds=conds.source_seconds,
            )
            with self._lock:
                name = self.check_new_name(name)
                voice_id = self._free_id(slug(name))
                entry = VoiceEntry(
                    id=voice_id,
                    name=name,
                    created_at=int(time.time()),
                    source=source,
                    source_sha256=conds.source_sha256,
                    source_seconds=conds.source_seconds,
                )
                meta = {k: v for k, v in entry.__dict__.items() if k != "id"}
                (staging / META_FILE).write_text(json.dumps({"id": voice_id, **meta}), "utf-8")
                os.rename(staging, self.root / voice_id)
                return entry
        finally:
            self.discard(staging)

    def _free_id(self, stem: str) -> str:
        """An id no voice has as its id or (any case) as its name."""
        names = {entry.name.casefold() for entry in self.list()}
        for n in range(1, 10_000):
            voice_id = stem if n == 1 else f"{stem[:58]}-{n}"
            taken = voice_id in names or (self.root / voice_id).exists()
            if voice_id != BUILTIN_ID and not taken:
                return voice_id
        raise LibraryError(f"no free id for {stem!r}", status=409, code="voice_exists")

    def delete(self, voice_id: str) -> bool:
        """Remove a voice; False when there is none with this id."""
        with self._lock:
            if self.get(voice_id) is None:
                return False
            trash = self.root / f".trash-{secrets.token_hex(8)}"
            os.rename(self._folder(voice_id), trash)
            for key in [k for k in self._cache if k[0] == voice_id]:
                del self._cache[key]
        shutil.rmtree(trash, ignore_errors=True)
        return True

    # ---- prepared voices ------------------------------------------------------------

    def conditionals(
        self, entry: VoiceEntry, family: str, prepare: Callable[[Path], Conditionals]
    ) -> Conditionals:
        """The voice prepared for ``family``: from memory, from its ``.voice`` file, or
        made from the source clip with ``prepare(clip_path)`` (and saved) when the voice
        has no file for this family yet or its file is unreadable. Call it where the
        model computes (it may run ``prepare``)."""
        folder = self._folder(entry.id)
        path = folder / f"{family}{voice_files.SUFFIX}"
        try:
            stamp = path.stat().st_mtime_ns
        except FileNotFoundError:
            stamp = None
        key = (entry.id, family, stamp)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        conds = None
        if stamp is not None:
            try:
                conds = voice_files.load_voice(path, family=family, require_t3=True).conds
            except voice_files.VoiceFileError:
                conds = None  # damaged: prepared again from the clip below
        if conds is None:
            source = folder / entry.source
            if not source.is_file():
                raise LibraryError(
                    f"voice {entry.id!r} has lost its clip; delete it and upload it again",
                    status=500,
                    code="voice_damaged",
                )
            conds = prepare(source)
            voice_files.save_voice(
                path,
                conds,
                family=family,
                source_sha256=conds.source_sha256,
                source_seconds=conds.source_seconds,
            )
            key = (entry.id, family, path.stat().st_mtime_ns)
        evaluated(conds)
        with self._lock:
            if (folder / META_FILE).is_file():  # not deleted meanwhile
                self._cache[key] = conds
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
        return conds

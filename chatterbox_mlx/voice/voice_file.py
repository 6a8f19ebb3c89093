"""Saved voices: a prepared ``Conditionals`` in a file, reusable without the reference clip.

A voice file (suffix ``.voice``) is safetensors: the tensors of ``Conditionals.to_flat()``
(``t3.*``, absent for a voice made for voice conversion only, and ``gen.*``) and string
metadata:

=================  ========================================================================
``format``         ``"chatterbox-mlx-voice"``
``format_version`` ``"1"`` (:data:`FORMAT_VERSION`); a newer file is refused
``family``         :data:`FAMILY_CFG` (English, Multilingual) or :data:`FAMILY_TURBO`
                   (Turbo, Nano): their T3 prompts differ (150 tokens of 6 s / 375 of
                   15 s, loudness-normalized), so a voice only serves its own family
``source_sha256``  sha256 of the reference clip's file (absent for the built-in voice)
``source_seconds`` the clip's duration in seconds (``repr`` of a float; absent likewise)
``exaggeration``   ``t3.emotion_adv`` (family ``cfg`` only; absent for Turbo/Nano)
``created``        ISO 8601 UTC time of saving
``library_version``  ``chatterbox_mlx.__version__`` that wrote it
``digest``         ``"sha256:<hex>"`` over the tensors (name, dtype, shape, bytes, sorted by
                   name) and the other metadata entries (sorted by key), length-prefixed;
                   any edit of the tensors or the metadata is detected
=================  ========================================================================

Loading reads tensors only (no S3Tokenizer, CAMPPlus or VoiceEncoder) and holds no state
between calls, so it is safe from several threads. Every refusal is a
:class:`VoiceFileError` naming the file, what is wrong and what to do.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import mlx.core as mx
import numpy as np

from .. import __version__
from ..files import AtomicFile
from ..variants import get_variant
from .checks import (
    FAMILIES,
    FAMILY_CFG,
    FAMILY_NAMES,
    NUMPY_DTYPES,
    audio_kind,
    check_specs,
    check_values,
    shape_text,
)
from .conditionals import Conditionals

FORMAT = "chatterbox-mlx-voice"
FORMAT_VERSION = 1
SUFFIX = ".voice"

CONDS_FORMAT = "chatterbox-mlx-conds"  # conditionals.FORMAT: a model's built-in voice file
MAX_HEADER_BYTES = 1 << 20  # a voice header is ~2 kB; anything larger is not one of ours


class VoiceFileError(ValueError):
    """A voice file cannot be written, or is not a usable voice for this model."""


def family_for_variant(variant: str) -> str:
    """The voice family of a variant name (``english``, ``turbo``, ``nano``, ...)."""
    return get_variant(variant).family


@dataclass(frozen=True)
class VoiceMeta:
    """The metadata of a voice file (see the module docstring)."""

    family: str
    created: str
    library_version: str
    digest: str
    source_sha256: str | None = None
    source_seconds: float | None = None
    exaggeration: float | None = None
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_metadata(self) -> dict[str, str]:
        """The safetensors metadata strings (absent fields left out)."""
        out = {
            "format": self.format,
            "format_version": str(self.format_version),
            "family": self.family,
            "created": self.created,
            "library_version": self.library_version,
            "digest": self.digest,
        }
        for key in ("source_sha256", "source_seconds", "exaggeration"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value if isinstance(value, str) else repr(float(value))
        return out


@dataclass(frozen=True)
class Voice:
    """A loaded voice: the conditionals to generate with, and what the file says of them."""

    conds: Conditionals
    meta: VoiceMeta


# ---------------------------------------------------------------------------- digest


def _digest(records: Iterable[tuple[str, str, tuple, bytes]], metadata: Mapping[str, str]) -> str:
    """``sha256:<hex>`` of ``(name, dtype code, shape, data)`` records (sorted by name)
    and the metadata entries other than ``digest`` (sorted by key), each field prefixed
    with its length so no two different files hash alike."""
    h = hashlib.sha256()

    def field(data: bytes | str) -> None:
        data = data.encode() if isinstance(data, str) else data
        h.update(struct.pack("<Q", len(data)))
        h.update(data)

    records = sorted(records)
    entries = sorted((k, v) for k, v in metadata.items() if k != "digest")
    field(f"{FORMAT} digest {len(records)} tensors {len(entries)} metadata")
    for name, code, shape, data in records:
        field(name)
        field(code)
        field(",".join(str(int(d)) for d in shape))
        field(data)
    for key, value in entries:
        field(key)
        field(value)
    return "sha256:" + h.hexdigest()


# ---------------------------------------------------------------------------- saving


def _flat_arrays(conds: Conditionals) -> dict[str, np.ndarray]:
    flat = conds.to_flat()
    emotion = flat.get("t3.emotion_adv")
    if emotion is not None and emotion.size == 1:
        # T3Cond allows a plain float (its default is 0.5); the file holds [1, 1, 1].
        flat["t3.emotion_adv"] = emotion.reshape(1, 1, 1)
    return {name: np.ascontiguousarray(np.asarray(value)) for name, value in flat.items()}


def _code_of(dtype: np.dtype) -> str:
    for code, known in NUMPY_DTYPES.items():
        if known == dtype.newbyteorder("<"):
            return code
    return str(dtype)


def save_voice(
    path: str | os.PathLike,
    conds: Conditionals,
    *,
    family: str,
    source_sha256: str | None = None,
    source_seconds: float | None = None,
) -> VoiceMeta:
    """Write ``conds`` as a voice file for ``family`` (:data:`FAMILIES`); returns its metadata.

    The exaggeration recorded is ``conds.t3.emotion_adv`` (``cfg`` family). The file
    appears whole or not at all (a temporary file in the same folder, then
    ``os.replace``). Conditionals that ``load_voice`` would refuse (wrong shapes or
    dtypes, non-finite values, a prompt too long for the family) are refused here."""
    path = Path(path)
    where = f"cannot save voice {path}"
    if family not in FAMILIES:
        raise VoiceFileError(f"{where}: unknown family {family!r}; choose one of {FAMILIES}")
    if not isinstance(conds, Conditionals) or conds.gen is None:
        raise VoiceFileError(f"{where}: expected prepared Conditionals, got {type(conds).__name__}")
    arrays = _flat_arrays(conds)
    problems = check_specs({n: (_code_of(a.dtype), a.shape) for n, a in arrays.items()}, family)
    problems = problems or check_values(arrays, family)
    if problems:
        raise VoiceFileError(
            f"{where}: the conditionals are not a {FAMILY_NAMES[family]} voice: "
            + "; ".join(problems)
            + ". Prepare them with prepare_conditionals of a model of this family"
        )
    if source_sha256 is not None and not _is_sha256(source_sha256):
        raise VoiceFileError(f"{where}: source_sha256 must be 64 lowercase hex digits")
    if source_seconds is not None and not (math.isfinite(source_seconds) and source_seconds > 0):
        raise VoiceFileError(f"{where}: source_seconds must be a positive number of seconds")

    exaggeration = None
    if family == FAMILY_CFG and "t3.emotion_adv" in arrays:
        exaggeration = float(str(np.float32(arrays["t3.emotion_adv"].reshape(-1)[0])))
    meta = VoiceMeta(
        family=family,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        library_version=__version__,
        digest="",
        source_sha256=source_sha256,
        source_seconds=None if source_seconds is None else float(source_seconds),
        exaggeration=exaggeration,
    )
    records = [(n, _code_of(a.dtype), a.shape, a.tobytes()) for n, a in arrays.items()]
    metadata = meta.to_metadata()
    metadata["digest"] = _digest(records, metadata)
    from safetensors.numpy import save

    _write_atomic(path, save(arrays, metadata=metadata), where)
    return replace(meta, digest=metadata["digest"])


def _write_atomic(path: Path, data: bytes, where: str) -> None:
    folder = path.parent
    if path.is_dir():
        raise VoiceFileError(f"{where}: it is a folder; give a file name such as me{SUFFIX}")
    if not folder.is_dir():
        raise VoiceFileError(f"{where}: the folder {folder} does not exist; create it first")
    try:
        target = AtomicFile(path)
    except OSError as err:
        raise VoiceFileError(
            f"{where}: cannot create a file in {folder} ({err.strerror or err}); "
            "choose a folder you can write to"
        ) from err
    try:
        target.file.write(data)
        target.commit()
    except OSError as err:
        target.discard()
        raise VoiceFileError(f"{where}: writing failed ({err.strerror or err})") from err
    except BaseException:
        target.discard()
        raise


def _is_sha256(value: object) -> bool:
    return (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )


# ---------------------------------------------------------------------------- loading


def _read_header(f, path: Path, size: int) -> tuple[dict, int]:
    """The parsed safetensors header and its length, or a VoiceFileError."""
    head = f.read(12)
    # A safetensors header starts with "{" after its 8-byte length: never an audio file.
    kind = audio_kind(head) if head[8:9] != b"{" else None
    if kind is not None:
        raise VoiceFileError(
            f"{path}: this is a {kind} audio file, not a voice file (whatever its name). "
            "Pass it as the reference clip, or save a voice from it first"
        )
    if size < 8:
        raise VoiceFileError(
            f"{path}: truncated voice file ({size} bytes, too short for any header). "
            "It was cut short (an interrupted copy or download?); copy or save it again"
        )
    (n,) = struct.unpack("<Q", head[:8])
    not_ours = (
        f"{path}: not a voice file (not safetensors: {{}}). Pass a file written by "
        "save_voice, or pass an audio clip as the reference"
    )
    if n > MAX_HEADER_BYTES:
        raise VoiceFileError(not_ours.format(f"its first 8 bytes give a header of {n} bytes"))
    if 8 + n > size:
        raise VoiceFileError(
            f"{path}: truncated voice file ({size} bytes; its header alone needs {8 + n}). "
            "It was cut short (an interrupted copy or download?); copy or save it again"
        )
    f.seek(8)
    raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise VoiceFileError(not_ours.format("its header is not JSON")) from None
    if not isinstance(header, dict):
        raise VoiceFileError(not_ours.format("its header is not a JSON object"))
    return header, n


def _tensor_entries(header: dict, path: Path, data_size: int) -> dict[str, tuple]:
    """``{name: (code, shape, begin, end)}`` after checking the layout against the file."""
    corrupt = f"{path}: corrupt voice file ({{}}); save the voice again"
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            code, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
            ok = all(isinstance(d, int) and d >= 0 for d in (*shape, begin, end)) and begin <= end
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok or not isinstance(code, str):
            raise VoiceFileError(corrupt.format(f"malformed header entry {name!r}"))
        if code in NUMPY_DTYPES and end - begin != math.prod(shape) * NUMPY_DTYPES[code].itemsize:
            raise VoiceFileError(corrupt.format(f"{name} does not hold {shape_text(shape)}"))
        entries[name] = (code, shape, begin, end)
    position = 0
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda e: e[1][2:]):
        if begin != position:
            raise VoiceFileError(corrupt.format(f"{name}'s data does not follow the previous"))
        position = end
    if position > data_size:
        raise VoiceFileError(
            f"{path}: truncated voice file (its tensors need {position} bytes after the "
            f"header, the file has {data_size}). It was cut short (an interrupted copy or "
            "download?); copy or save it again"
        )
    if position < data_size:
        raise VoiceFileError(
            f"{path}: the voice file has {data_size - position} unexpected bytes after its "
            "tensors: it was modified or corrupted after it was saved. Save the voice again"
        )
    return entries


def _parse_meta(metadata: Mapping[str, str], path: Path) -> VoiceMeta:
    bad = f"{path}: malformed voice file metadata ({{}}); save the voice again"
    for key in ("family", "created", "library_version", "digest"):
        if not isinstance(metadata.get(key), str):
            raise VoiceFileError(bad.format(f"no {key!r}"))
    if metadata["family"] not in FAMILIES:
        raise VoiceFileError(bad.format(f"unknown family {metadata['family']!r}"))
    try:
        datetime.fromisoformat(metadata["created"])
    except ValueError:
        raise VoiceFileError(bad.format(f"created={metadata['created']!r}")) from None
    sha = metadata.get("source_sha256")
    if sha is not None and not _is_sha256(sha):
        raise VoiceFileError(bad.format(f"source_sha256={sha!r}"))
    numbers = {}
    for key in ("source_seconds", "exaggeration"):
        text = metadata.get(key)
        if text is None:
            continue
        try:
            numbers[key] = float(text)
        except ValueError:
            numbers[key] = math.nan
        if not math.isfinite(numbers[key]) or (key == "source_seconds" and numbers[key] <= 0):
            raise VoiceFileError(bad.format(f"{key}={text!r}"))
    return VoiceMeta(
        family=metadata["family"],
        created=metadata["created"],
        library_version=metadata["library_version"],
        digest=metadata["digest"],
        source_sha256=sha,
        **numbers,
    )


def _check_format(metadata, path: Path) -> None:
    fmt = metadata.get("format") if isinstance(metadata, dict) else None
    if fmt != FORMAT:
        if fmt == CONDS_FORMAT:
            what = "a model's built-in voice (conds.safetensors); load it with Conditionals.load"
        elif fmt is None:
            what = "a safetensors file without voice metadata (model weights?)"
        else:
            what = f"a safetensors file of format {fmt!r}"
        raise VoiceFileError(
            f"{path}: not a voice file: it is {what}. Pass a file written by save_voice"
        )
    version = metadata.get("format_version")
    if not (isinstance(version, str) and version.isdigit() and int(version) >= 1):
        raise VoiceFileError(
            f"{path}: malformed voice file metadata (format_version={version!r}); "
            "save the voice again"
        )
    if int(version) > FORMAT_VERSION:
        raise VoiceFileError(
            f"{path}: voice file format version {version} is newer than this chatterbox-mlx "
            f"({__version__}) reads (up to {FORMAT_VERSION}); upgrade chatterbox-mlx "
            "(pip install -U chatterbox-mlx)"
        )


def load_voice(
    path: str | os.PathLike, *, family: str | None = None, require_t3: bool = False
) -> Voice:
    """Read a voice file written by :func:`save_voice`.

    ``family``: the family of the model it is for (:func:`family_for_variant`); None
    accepts either (voice conversion uses only the S3Gen part, which both share).
    ``require_t3``: refuse a voice that has no T3 part (one saved for voice conversion).
    """
    path = Path(path)
    if family is not None and family not in FAMILIES:
        raise ValueError(f"unknown voice family {family!r}; choose one of {FAMILIES}")
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            header, n = _read_header(f, path, size)
            metadata = header.get("__metadata__")
            _check_format(metadata, path)
            entries = _tensor_entries(header, path, size - 8 - n)
            f.seek(8 + n)
            data = f.read()
    except FileNotFoundError:
        raise VoiceFileError(f"{path}: no such voice file") from None
    except IsADirectoryError:
        raise VoiceFileError(f"{path}: is a folder, not a voice file") from None
    except OSError as err:
        raise VoiceFileError(f"{path}: cannot read the voice file ({err.strerror or err})") from err

    records = [(name, e[0], e[1], data[e[2] : e[3]]) for name, e in entries.items()]
    if metadata.get("digest") != _digest(records, metadata):
        raise VoiceFileError(
            f"{path}: the voice file's contents do not match its digest: it was modified or "
            "corrupted after it was saved. Save the voice again from the source clip"
        )
    meta = _parse_meta(metadata, path)
    if family is not None and meta.family != family:
        raise VoiceFileError(
            f"{path}: this voice was made for {FAMILY_NAMES[meta.family]} models; this model "
            f"is {FAMILY_NAMES[family]}. Save the voice again with this model (from the "
            "source clip)"
        )

    problems = check_specs({name: e[:2] for name, e in entries.items()}, meta.family)
    arrays = {}
    if not problems:
        arrays = {
            name: np.frombuffer(data[e[2] : e[3]], NUMPY_DTYPES[e[0]]).reshape(e[1])
            for name, e in entries.items()
        }
        problems = check_values(arrays, meta.family)
    has_t3 = "t3.speaker_emb" in arrays
    if not problems:
        emotion = arrays.get("t3.emotion_adv")
        recorded = None
        if meta.family == FAMILY_CFG and emotion is not None:
            recorded = float(str(emotion.reshape(-1)[0]))
        if meta.exaggeration != recorded:
            problems.append(
                f"exaggeration {meta.exaggeration} does not match t3.emotion_adv ({recorded})"
            )
    if problems:
        raise VoiceFileError(
            f"{path}: not a valid {FAMILY_NAMES[meta.family]} voice: "
            + "; ".join(problems)
            + ". Save the voice again with this version of chatterbox-mlx"
        )
    if require_t3 and not has_t3:
        raise VoiceFileError(
            f"{path}: this voice holds only the S3Gen part (it was saved for voice "
            "conversion); text-to-speech also needs the T3 part. Save the voice again "
            "with a text-to-speech model"
        )

    conds = Conditionals.from_flat({n: mx.array(a) for n, a in arrays.items()}, str(path))
    if conds.t3 is not None and "t3.emotion_adv" not in arrays:
        conds.t3.emotion_adv = None  # not T3Cond's default 0.5: the file had none
    return Voice(conds=conds, meta=meta)


def is_voice_file(path: str | os.PathLike) -> bool:
    """True for a ``.voice`` path, or a safetensors file whose metadata names this format
    (only the header is read; False for anything unreadable). Lets a caller tell a voice
    file from an audio clip; :func:`load_voice` then says what is wrong with a bad one.
    Anything but a path (an array of samples) is not a voice file."""
    if not isinstance(path, (str, os.PathLike)):
        return False
    path = Path(path)
    if path.suffix.lower() == SUFFIX:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return False
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES:
                return False
            header = json.loads(f.read(n).decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return isinstance(metadata, dict) and metadata.get("format") == FORMAT

"""Read ``torch.save`` zip archives (``conds.pt``, ``*.pth.tar``) without torch.

A torch archive is a zip file holding ``<root>/data.pkl`` (a pickle describing the
object) and ``<root>/data/<key>`` (the raw bytes of each tensor storage). The pickle
is read with a restricted unpickler: it resolves only the handful of globals such a
file uses for plain tensors and dicts, and refuses every other global with
:class:`UnsafePickleError`, so no code from the file is ever executed.

Tensors come back as numpy arrays (C-contiguous copies, native byte order),
honouring each tensor's storage offset, shape and strides (views such as a
transposed ``prompt_feat`` are materialised exactly). ``bfloat16`` storages, which
numpy cannot represent, are widened losslessly to ``float32``.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np


class TorchArchiveError(ValueError):
    """The file is not a readable torch zip archive (corrupt, truncated, legacy format)."""


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle refers to a global that is not on the allow-list."""


# torch storage class name -> numpy dtype of one element (little-endian on disk by default).
STORAGE_DTYPES = {
    "FloatStorage": "f4",
    "DoubleStorage": "f8",
    "HalfStorage": "f2",
    "BFloat16Storage": "u2",  # widened to float32 after reading
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class StorageType:
    """Stand-in for ``torch.FloatStorage`` & co: only names an element type.

    Deliberately not callable, so a pickle cannot use it as a constructor."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(STORAGE_DTYPES[name])

    def __repr__(self) -> str:
        return f"torch.{self.name}"


def rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, *_unused):
    """``torch._utils._rebuild_tensor_v2`` for numpy: a copy of the strided view."""
    if not isinstance(storage, np.ndarray) or storage.ndim != 1:
        raise TorchArchiveError("tensor does not refer to a storage record")
    shape, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    offset = int(storage_offset)
    if len(shape) != len(stride) or offset < 0 or min(stride, default=0) < 0:
        raise TorchArchiveError(f"invalid tensor layout: size {shape}, stride {stride}")
    if 0 in shape:
        return np.zeros(shape, dtype=storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(shape, stride, strict=True))
    if last >= storage.size:
        raise TorchArchiveError(
            f"tensor of size {shape}, stride {stride}, offset {offset} reads past its "
            f"storage of {storage.size} elements: the archive is corrupt"
        )
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=shape, strides=tuple(s * item for s in stride), writeable=False
    )
    return np.array(view, order="C")  # a 0-d tensor stays 0-d


def rebuild_parameter(data, requires_grad=False, *_unused):
    """``torch._utils._rebuild_parameter``: an ``nn.Parameter`` is just its tensor here."""
    return data


ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor_v2,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{("torch", name): StorageType(name) for name in STORAGE_DTYPES},
}

# Harmless globals a caller may opt into by name with ``extra_globals``.
OPTIONAL_GLOBALS: dict[str, object] = {
    "torch._utils._rebuild_parameter": rebuild_parameter,
}


def _split_global(name: str) -> tuple[str, str]:
    module, _, attr = name.rpartition(".")
    if not module:
        raise ValueError(f"extra global {name!r} must be written as 'module.name'")
    return module, attr


def _extra_globals(
    extra: Iterable[str] | Mapping[str, Callable],
) -> dict[tuple[str, str], object]:
    if isinstance(extra, Mapping):
        return {_split_global(name): fn for name, fn in extra.items()}
    out = {}
    for name in extra:
        if name not in OPTIONAL_GLOBALS:
            raise ValueError(
                f"unknown extra global {name!r}: pass a mapping {{name: replacement}}, "
                f"or one of {sorted(OPTIONAL_GLOBALS)}"
            )
        out[_split_global(name)] = OPTIONAL_GLOBALS[name]
    return out


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only allow-listed globals; tensor storages come from the zip archive."""

    def __init__(self, data: bytes, read_storage: Callable, allowed: Mapping, source: str):
        super().__init__(io.BytesIO(data))
        self._read_storage = read_storage
        self._allowed = allowed
        self._source = source

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._source}: refusing to load global '{module}.{name}': only plain "
                "tensors, dicts and storages are allowed in a checkpoint. If you trust "
                "this file and the global is harmless, pass it in extra_globals."
            ) from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise TorchArchiveError(f"{self._source}: unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, StorageType):
            raise TorchArchiveError(f"{self._source}: storage of unknown type {storage_type!r}")
        return self._read_storage(str(key), storage_type, int(numel))


def _find_root(names: list[str], source: str) -> str:
    roots = [n[: -len("data.pkl")] for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(roots) != 1:
        found = "no data.pkl" if not roots else f"{len(roots)} data.pkl records"
        raise TorchArchiveError(f"{source}: not a torch zip archive ({found})")
    return roots[0]


def _byte_order(archive: zipfile.ZipFile, root: str, source: str) -> str:
    name = root + "byteorder"
    if name not in archive.namelist():
        return "<"  # archives written before the record existed are little-endian
    order = archive.read(name).decode("ascii", "replace").strip()
    if order not in ("little", "big"):
        raise TorchArchiveError(f"{source}: unknown byte order {order!r}")
    return "<" if order == "little" else ">"


def _open_archive(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise FileNotFoundError(f"torch archive not found: {path}")
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        with open(path, "rb") as f:
            head = f.read(2)
        if head[:1] == b"\x80":
            raise TorchArchiveError(
                f"{path}: legacy (pre-1.6, non-zip) torch format is not supported; "
                "re-save it with torch.save(..., _use_new_zipfile_serialization=True)"
            ) from err
        raise TorchArchiveError(
            f"{path}: not a torch zip archive or truncated ({err}); download it again"
        ) from err


def load(path: str | Path, extra_globals: Iterable[str] | Mapping[str, Callable] = ()):
    """Load a ``torch.save`` archive as nested dicts/lists of numpy arrays.

    ``extra_globals`` allows more globals: names from :data:`OPTIONAL_GLOBALS`, or a
    mapping ``{"module.name": replacement}`` of harmless stand-ins you provide."""
    path = Path(path)
    source = str(path)
    allowed = {**ALLOWED_GLOBALS, **_extra_globals(extra_globals)}
    with _open_archive(path) as archive:
        try:
            names = archive.namelist()
            root = _find_root(names, source)
            order = _byte_order(archive, root, source)
            storages: dict[str, np.ndarray] = {}

            def read_storage(key: str, storage_type: StorageType, numel: int) -> np.ndarray:
                if key not in storages:
                    record = f"{root}data/{key}"
                    if record not in names:
                        raise TorchArchiveError(f"{source}: storage record {record} is missing")
                    raw = archive.read(record)
                    dtype = storage_type.dtype.newbyteorder(order)
                    if len(raw) < numel * dtype.itemsize:
                        raise TorchArchiveError(
                            f"{source}: storage {record} holds {len(raw)} bytes, "
                            f"{numel * dtype.itemsize} expected: the file is truncated"
                        )
                    array = np.frombuffer(raw, dtype=dtype, count=numel)
                    if storage_type.name == "BFloat16Storage":
                        array = (array.astype(np.uint32) << 16).view(np.float32)
                    storages[key] = array.astype(array.dtype.newbyteorder("=").name)
                return storages[key]

            unpickler = RestrictedUnpickler(
                archive.read(root + "data.pkl"), read_storage, allowed, source
            )
            return unpickler.load()
        except (UnsafePickleError, TorchArchiveError):
            raise
        except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, OSError) as err:
            raise TorchArchiveError(f"{source}: corrupt or truncated archive ({err})") from err
        except (TypeError, ValueError, AttributeError, IndexError, KeyError) as err:
            raise TorchArchiveError(f"{source}: malformed pickle ({err})") from err

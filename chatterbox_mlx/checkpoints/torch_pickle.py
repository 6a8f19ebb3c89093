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

Nothing is allocated on the file's word: a storage is read only when its record holds
the bytes it claims, and a tensor is copied out only after its extent (element count
and last index, from shape, strides and offset) was checked against its storage, so a
shape of (10**6, 10**6) over a one-element storage is refused by name, not attempted.
Broadcast views (stride 0 over more elements than the storage holds) are refused too:
``torch.save`` of a state dict or a ``conds.pt`` never contains one.

Every error is a :class:`TorchArchiveError` (a ``ValueError``); a refused global is its
subclass :class:`UnsafePickleError`.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class TorchArchiveError(ValueError):
    """The file cannot be read as a torch zip archive: corrupt, truncated, legacy format,
    a tensor reaching past its storage, or a refused global."""


class UnsafePickleError(TorchArchiveError, pickle.UnpicklingError):
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


@dataclass(frozen=True)
class Storage:
    """One storage record of the archive: its elements (1-D, native byte order)."""

    data: np.ndarray
    record: str


@dataclass(frozen=True)
class TensorRef:
    """A tensor as the pickle describes it. It becomes an array (see :func:`materialize`)
    once the whole pickle is read, so that a refusal can name it by its place."""

    storage: Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _ints(values, what: str) -> tuple[int, ...]:
    if not isinstance(values, (tuple, list)) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in values
    ):
        raise TorchArchiveError(f"tensor {what} must be a tuple of integers, got {values!r}")
    return tuple(values)


def rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, *_unused):
    """``torch._utils._rebuild_tensor_v2``: records the layout; nothing is allocated."""
    if not isinstance(storage, Storage):
        raise TorchArchiveError("tensor does not refer to a storage record")
    shape, stride = _ints(size, "size"), _ints(stride, "stride")
    (offset,) = _ints((storage_offset,), "offset")
    if len(shape) != len(stride):
        raise TorchArchiveError(f"invalid tensor layout: size {shape}, stride {stride}")
    return TensorRef(storage, offset, shape, stride)


def materialize(ref: TensorRef, name: str, source: str) -> np.ndarray:
    """The tensor ``ref`` as a C-contiguous copy, after checking that its extent fits its
    storage (before anything is allocated); ``name`` says where it is in the file."""
    shape, stride, offset = ref.shape, ref.stride, ref.offset
    size = ref.storage.data.size
    layout = f"size {shape}, stride {stride}, offset {offset}"
    if offset < 0 or min(shape, default=0) < 0 or min(stride, default=0) < 0:
        raise TorchArchiveError(f"{source}: tensor {name} has an invalid layout ({layout})")
    numel = math.prod(shape)
    if numel == 0:
        return np.zeros(shape, dtype=ref.storage.data.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(shape, stride, strict=True))
    if numel > size or last >= size:
        raise TorchArchiveError(
            f"{source}: tensor {name} ({layout}) spans {numel} elements up to index "
            f"{last}, but its storage {ref.storage.record} holds {size} elements: "
            "refusing it (the file is corrupt or hostile)"
        )
    data = ref.storage.data
    strides = tuple(s * data.itemsize for s in stride)
    view = np.lib.stride_tricks.as_strided(data[offset:], shape, strides, writeable=False)
    return np.array(view, order="C")  # a 0-d tensor stays 0-d


def _materialize_all(obj, name: str, source: str, seen: dict[int, object]):
    """``obj`` with every TensorRef inside (dicts, lists, tuples) replaced by its array."""
    if isinstance(obj, TensorRef):
        return materialize(obj, name or "(the top-level tensor)", source)
    if not isinstance(obj, (dict, list, tuple)):
        return obj
    if id(obj) in seen:  # shared or self-referencing containers: each walked once
        return seen[id(obj)]
    prefix = f"{name}." if name else ""
    if isinstance(obj, tuple):
        out = tuple(_materialize_all(v, f"{prefix}{i}", source, seen) for i, v in enumerate(obj))
        seen[id(obj)] = out
        return out
    seen[id(obj)] = obj  # dicts and lists are updated in place
    items = obj.items() if isinstance(obj, dict) else enumerate(obj)
    for key, value in list(items):
        obj[key] = _materialize_all(value, f"{prefix}{key}", source, seen)
    return obj


def _with_arrays(replacement: Callable, global_name: str, source: str) -> Callable:
    """A caller's replacement global, handed arrays (not TensorRefs) as arguments."""

    def call(*args, **kwargs):
        what = f"argument of {global_name}"
        args = _materialize_all(args, what, source, {})
        kwargs = _materialize_all(kwargs, what, source, {})
        return replacement(*args, **kwargs)

    return call


def rebuild_parameter(data, requires_grad=False, *_unused):
    """``torch._utils._rebuild_parameter``: an ``nn.Parameter`` is just its tensor here
    (a TensorRef, materialised with the rest)."""
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
    extra: Iterable[str] | Mapping[str, Callable], source: str
) -> dict[tuple[str, str], object]:
    if isinstance(extra, Mapping):
        return {
            _split_global(name): _with_arrays(fn, name, source) if callable(fn) else fn
            for name, fn in extra.items()
        }
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
        if not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
            raise TorchArchiveError(f"{self._source}: storage {key!r} of {numel!r} elements")
        return self._read_storage(str(key), storage_type, numel)


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
    mapping ``{"module.name": replacement}`` of harmless stand-ins you provide (they are
    called with numpy arrays where the pickle passes tensors)."""
    path = Path(path)
    source = str(path)
    allowed = {**ALLOWED_GLOBALS, **_extra_globals(extra_globals, source)}
    with _open_archive(path) as archive:
        try:
            names = archive.namelist()
            root = _find_root(names, source)
            order = _byte_order(archive, root, source)
            storages: dict[str, Storage] = {}

            def read_storage(key: str, storage_type: StorageType, numel: int) -> Storage:
                if key not in storages:
                    record = f"{root}data/{key}"
                    if record not in names:
                        raise TorchArchiveError(f"{source}: storage record {record} is missing")
                    dtype = storage_type.dtype.newbyteorder(order)
                    wanted = numel * dtype.itemsize
                    held = archive.getinfo(record).file_size
                    if held < wanted:  # checked before reading: nothing allocated for it
                        raise TorchArchiveError(
                            f"{source}: storage {record} holds {held} bytes, {wanted} "
                            "expected: the file is truncated"
                        )
                    with archive.open(record) as f:
                        raw = f.read(wanted)
                    array = np.frombuffer(raw, dtype=dtype, count=numel)
                    if storage_type.name == "BFloat16Storage":
                        array = (array.astype(np.uint32) << 16).view(np.float32)
                    array = array.astype(array.dtype.newbyteorder("=").name)
                    storages[key] = Storage(array, record)
                return storages[key]

            unpickler = RestrictedUnpickler(
                archive.read(root + "data.pkl"), read_storage, allowed, source
            )
            return _materialize_all(unpickler.load(), "", source, {})
        except TorchArchiveError:
            raise
        except RecursionError as err:
            raise TorchArchiveError(f"{source}: the pickle is nested too deeply") from err
        except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, OSError) as err:
            raise TorchArchiveError(f"{source}: corrupt or truncated archive ({err})") from err
        except (TypeError, ValueError, AttributeError, IndexError, KeyError) as err:
            raise TorchArchiveError(f"{source}: malformed pickle ({err})") from err

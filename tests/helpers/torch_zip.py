"""Write ``torch.save``-format zip archives with numpy only (no torch).

Enough of the format for the built-in voice (``conds.pt``): nested dicts / lists /
tuples, None, bools, ints, floats, strings and numpy arrays. A numpy array that is a
non-contiguous view of a C-contiguous array (``mel.transpose(0, 2, 1)``) is written
as torch writes a view: the base's storage plus the view's offset and strides, so the
reader's stride handling is exercised exactly as with a real file.

``conds_object(variant)`` builds the real ``Conditionals.save`` structure
(``dict(t3=T3Cond.__dict__, gen=embed_ref dict)``) at each variant's real sizes.
"""

from __future__ import annotations

import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

STORAGE_NAMES = {
    np.dtype("float32"): "FloatStorage",
    np.dtype("float64"): "DoubleStorage",
    np.dtype("float16"): "HalfStorage",
    np.dtype("int64"): "LongStorage",
    np.dtype("int32"): "IntStorage",
    np.dtype("int16"): "ShortStorage",
    np.dtype("int8"): "CharStorage",
    np.dtype("uint8"): "ByteStorage",
    np.dtype("bool"): "BoolStorage",
}


@dataclass(frozen=True)
class StridedTensor:
    """A tensor written with an explicit layout over ``storage`` (1-D), which need not be
    consistent: for the reader's refusal tests. ``numel`` is what the storage record's
    persistent id claims (default: the storage's real size)."""

    storage: np.ndarray
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int = 0
    numel: int | None = None


class TorchPickler:
    """Emits protocol-2 pickle opcodes for the subset of objects torch.save produces."""

    def __init__(self, extra_global: tuple[str, str] | None = None, extra_args: tuple = ()):
        self.out = bytearray(b"\x80\x02")
        self.extra_args = extra_args
        self.storages: list[np.ndarray] = []  # C-contiguous flat buffers, by key
        self._keys: dict[int, int] = {}
        self.extra_global = extra_global

    def global_(self, module: str, name: str) -> None:
        self.out += b"c" + f"{module}\n{name}\n".encode()

    def dump(self, obj) -> bytes:
        if self.extra_global is not None:  # a foreign callable, e.g. os.system("...")
            self.global_(*self.extra_global)
            self.save(tuple(self.extra_args))
            self.out += b"R0"  # REDUCE, then POP: the result is discarded
        self.save(obj)
        self.out += b"."
        return bytes(self.out)

    def save(self, obj) -> None:
        out = self.out
        if obj is None:
            out += b"N"
        elif obj is True or obj is False:
            out += b"\x88" if obj else b"\x89"
        elif isinstance(obj, int):
            self.save_int(obj)
        elif isinstance(obj, float):
            out += b"G" + struct.pack(">d", obj)
        elif isinstance(obj, str):
            data = obj.encode()
            out += b"X" + struct.pack("<I", len(data)) + data
        elif isinstance(obj, tuple):
            out += b"("
            for item in obj:
                self.save(item)
            out += b"t"
        elif isinstance(obj, list):
            out += b"]("
            for item in obj:
                self.save(item)
            out += b"e"
        elif isinstance(obj, dict):
            out += b"}("
            for key, value in obj.items():
                self.save(key)
                self.save(value)
            out += b"u"
        elif isinstance(obj, np.ndarray):
            self.save_tensor(obj)
        elif isinstance(obj, StridedTensor):
            self.save_strided(obj)
        else:
            raise TypeError(f"cannot write {type(obj).__name__} into a torch archive")

    def save_int(self, value: int) -> None:
        if 0 <= value < 256:
            self.out += b"K" + bytes([value])
        elif 0 <= value < 65536:
            self.out += b"M" + struct.pack("<H", value)
        elif -(2**31) <= value < 2**31:
            self.out += b"J" + struct.pack("<i", value)
        else:
            data = value.to_bytes(16, "little", signed=True)
            self.out += b"\x8a" + bytes([len(data)]) + data

    def storage_of(self, array: np.ndarray) -> tuple[int, int, tuple[int, ...], np.ndarray]:
        """(key, element offset, element strides, flat storage) of an array or view."""
        base = array
        while isinstance(base.base, np.ndarray):
            base = base.base
        if base is array or not base.flags.c_contiguous or base.dtype != array.dtype:
            base = np.ascontiguousarray(array)
            offset, strides = 0, tuple(s // array.itemsize for s in base.strides)
        else:
            start = base.__array_interface__["data"][0]
            offset = (array.__array_interface__["data"][0] - start) // array.itemsize
            strides = tuple(s // array.itemsize for s in array.strides)
        if id(base) not in self._keys:
            self._keys[id(base)] = len(self.storages)
            self.storages.append(base.reshape(-1))
        return self._keys[id(base)], offset, strides, self.storages[self._keys[id(base)]]

    def save_tensor(self, array: np.ndarray) -> None:
        if array.dtype not in STORAGE_NAMES:
            raise TypeError(f"no torch storage for dtype {array.dtype}")
        key, offset, strides, storage = self.storage_of(array)
        self.save_layout(key, storage, offset, array.shape, strides, storage.size)

    def save_strided(self, tensor: StridedTensor) -> None:
        storage = np.ascontiguousarray(tensor.storage).reshape(-1)
        self.storages.append(storage)
        numel = storage.size if tensor.numel is None else tensor.numel
        key = len(self.storages) - 1
        self.save_layout(key, storage, tensor.offset, tensor.shape, tensor.stride, numel)

    def save_layout(self, key, storage, offset, shape, strides, numel) -> None:
        self.global_("torch._utils", "_rebuild_tensor_v2")
        self.out += b"("  # the argument tuple
        self.out += b"("  # the persistent id: ('storage', type, key, location, numel)
        self.save("storage")
        self.global_("torch", STORAGE_NAMES[storage.dtype])
        self.save(str(key))
        self.save("cpu")
        self.save(int(numel))
        self.out += b"tQ"  # TUPLE, BINPERSID
        self.save(int(offset))
        self.save(tuple(int(n) for n in shape))
        self.save(tuple(int(s) for s in strides))
        self.save(False)  # requires_grad
        self.global_("collections", "OrderedDict")
        self.out += b")R"  # backward hooks: OrderedDict()
        self.out += b"tR"


def write_torch_zip(
    path: str | Path,
    obj,
    root: str | None = None,
    byteorder: str = "little",
    extra_global: tuple[str, str] | None = None,
    extra_args: tuple = (),
) -> Path:
    """Write ``obj`` as torch.save would; ``root`` is the archive folder (default: the
    file's stem), ``extra_global`` injects a call ``module.name(*extra_args)`` before the
    object (a foreign global, for the refusal tests)."""
    path = Path(path)
    root = root or path.stem
    pickler = TorchPickler(extra_global, extra_args)
    data = pickler.dump(obj)
    order = "<" if byteorder == "little" else ">"
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{root}/data.pkl", data)
        archive.writestr(f"{root}/byteorder", byteorder)
        for key, storage in enumerate(pickler.storages):
            raw = storage.astype(storage.dtype.newbyteorder(order)).tobytes()
            archive.writestr(f"{root}/data/{key}", raw)
        archive.writestr(f"{root}/version", "3\n")
    os.replace(tmp, path)
    return path


# Built-in voice sizes: (T3 prompt tokens, S3Gen prompt tokens at 25 Hz; mel is 2x that).
CONDS_SIZES = {
    "english": (150, 250),
    "multilingual": (150, 250),
    "turbo": (375, 250),  # 15 s of T3 prompt, 10 s of S3Gen mel
    "nano": (375, 250),
}


def conds_object(variant: str = "english", seed: int = 0) -> dict:
    """``dict(t3=T3Cond.__dict__, gen=ref_dict)`` with random values at real sizes."""
    t3_len, gen_len = CONDS_SIZES[variant.split("-")[0]]
    rng = np.random.default_rng(seed)
    mel = rng.standard_normal((1, 80, 2 * gen_len)).astype(np.float32)
    t3 = {
        "speaker_emb": rng.standard_normal((1, 256)).astype(np.float32),
        "clap_emb": None,
        "cond_prompt_speech_tokens": rng.integers(0, 6561, (1, t3_len), dtype=np.int64),
        "cond_prompt_speech_emb": None,
        "emotion_adv": np.full((1, 1, 1), 0.5, dtype=np.float32),
    }
    gen = {
        "prompt_token": rng.integers(0, 6561, (1, gen_len), dtype=np.int64),
        "prompt_token_len": np.array([gen_len], dtype=np.int64),
        "prompt_feat": mel.transpose(0, 2, 1),  # [1, 2T, 80], a strided view
        "prompt_feat_len": None,
        "embedding": rng.standard_normal((1, 192)).astype(np.float32),
    }
    return {"t3": t3, "gen": gen}


def write_conds(path: str | Path, variant: str = "english", seed: int = 0, **kwargs) -> Path:
    return write_torch_zip(path, conds_object(variant, seed), **kwargs)

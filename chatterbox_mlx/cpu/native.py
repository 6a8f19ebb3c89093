"""The optional C extension ``_decode`` (``decode.c``, built by setup.py on Linux), loaded
once through ctypes: T3's decode-step kernels, a few rows times a weight
(``rows_matmul``) and one query's attention (``decode_attention``).

Each getter returns the C function (ctypes releases the GIL while it runs), or None where
the extension was not built (no C compiler with OpenMP at install time, or not Linux); the
callers then take BLAS or MLX. ``status`` says which.
"""

from __future__ import annotations

import ctypes
import importlib.util
import threading

from . import blas

# libgomp's idle threads spin about 300k iterations after each parallel loop, taking the
# cores that BLAS and the numpy paths run on between two products; 10k is ~25 us.
GOMP_SPINCOUNT = "10000"

_c_long, _c_float, _ptr = ctypes.c_long, ctypes.c_float, ctypes.c_void_p
_SIGNATURES = {
    # w, x, y, rows, outputs, in
    "chatterbox_rows_matmul": ([_ptr] * 3 + [_c_long] * 3, None),
    # q, k, v, bias, out, rows, heads, kv_heads, keys, dim, row_stride, head_stride, scale
    "chatterbox_decode_attention": ([_ptr] * 5 + [_c_long] * 7 + [_c_float], ctypes.c_int),
    "chatterbox_decode_version": ([], ctypes.c_char_p),
}

_lock = threading.Lock()
_library = None  # the loaded library; False where the extension is absent
status = "not loaded yet"


def _load():
    global _library, status
    with _lock:
        if _library is None:
            spec = importlib.util.find_spec(f"{__package__}._decode")
            if spec is None or spec.origin is None:
                _library, status = False, "no _decode extension (built by pip on Linux with gcc)"
            else:
                with blas.environment(GOMP_SPINCOUNT=GOMP_SPINCOUNT):
                    library = ctypes.CDLL(spec.origin)
                for name, (argtypes, restype) in _SIGNATURES.items():
                    function = getattr(library, name)
                    function.argtypes, function.restype = argtypes, restype
                _library = library
                version = library.chatterbox_decode_version().decode()
                status = f"loaded {spec.origin} ({version})"
    return _library or None


def rows_matmul():
    """``y += x @ w^T`` for a few rows, the weight read once (see ``decode.c``), or None."""
    library = _load()
    return library.chatterbox_rows_matmul if library else None


def decode_attention():
    """One query's attention per (row, head) over a cache view (see ``decode.c``), or None."""
    library = _load()
    return library.chatterbox_decode_attention if library else None

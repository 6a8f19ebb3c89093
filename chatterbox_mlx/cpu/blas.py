"""Load an optimized BLAS before ``mlx.core`` on Linux (``import chatterbox_mlx`` does).

The ``mlx-cpu`` wheel resolves its ``cblas_*`` calls to a slow reference BLAS.
Loading a real BLAS into the global symbol namespace first makes the dynamic
linker bind those calls to it instead (about 30x faster fp32 matmul).

``CHATTERBOX_MLX_BLAS`` selects the library: unset means "find the system
OpenBLAS", a path means that library, ``off`` (or ``0``/``none``) disables this.

OpenBLAS's idle worker threads busy-wait for about 2^28 cycles (0.1 s) after each
product; beside the other threads the CPU paths run (attention heads spread over the
cores), that spinning takes their cores. The library is loaded with a 2^16-cycle wait
(``OPENBLAS_THREAD_TIMEOUT=16``, about 25 us; the English estimator step 2.8 -> 2.5 s,
T3 decoding unchanged) unless that variable is already set.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import glob
import os
import sys
import threading
import warnings

ENV_VAR = "CHATTERBOX_MLX_BLAS"

_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)

THREAD_TIMEOUT = "16"  # log2 of the cycles an idle OpenBLAS thread spins before sleeping

loaded_path: str | None = None
status: str = "not attempted"


def _find_openblas() -> str | None:
    for path in _CANDIDATES:
        if os.path.exists(path):
            return path
    found = ctypes.util.find_library("openblas")
    if found:
        return found
    for pattern in ("/usr/lib/*/libopenblas*.so*", "/usr/local/lib/libopenblas*.so*"):
        hits = sorted(glob.glob(pattern))
        if hits:
            return hits[0]
    return None


@contextlib.contextmanager
def environment(**defaults: str):
    """Set the variables not already set, for what the library reads when it loads."""
    added = [name for name in defaults if name not in os.environ]
    os.environ.update({name: defaults[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            del os.environ[name]


def load() -> str | None:
    """Load the BLAS once; return its path, or None when none was loaded."""
    global loaded_path, status
    if status != "not attempted":
        return loaded_path
    choice = os.environ.get(ENV_VAR, "").strip()
    if not sys.platform.startswith("linux"):
        status = "not needed on this platform"
        return None
    if choice.lower() in ("off", "0", "none", "false"):
        status = f"disabled by {ENV_VAR}={choice}"
        return None
    if "mlx.core" in sys.modules:
        status = "mlx.core was imported before chatterbox_mlx; BLAS not replaced"
        warnings.warn(
            f"chatterbox_mlx: {status}. Import chatterbox_mlx first for fast matmul on the CPU.",
            stacklevel=3,
        )
        return None
    path = choice or _find_openblas()
    if path is None:
        status = "no OpenBLAS found"
        warnings.warn(
            "chatterbox_mlx: no optimized BLAS found, so MLX's CPU backend uses its slow "
            "reference BLAS (about 30x slower matmul). Install it with "
            "`apt-get install libopenblas0-pthread`, or set "
            f"{ENV_VAR}=/path/to/libblas.so ({ENV_VAR}=off silences this).",
            stacklevel=3,
        )
        return None
    try:
        with environment(OPENBLAS_THREAD_TIMEOUT=THREAD_TIMEOUT):
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    except OSError as err:
        status = f"failed to load {path}: {err}"
        warnings.warn(f"chatterbox_mlx: {status}", stacklevel=3)
        return None
    loaded_path = path
    status = f"loaded {path}" + _kernel_note(path)
    return path


def _kernel_note(path: str) -> str:
    """Which OpenBLAS kernel runs (``OPENBLAS_CORETYPE`` can force an older one), as a
    note for ``status``; empty for another BLAS."""
    try:
        corename = ctypes.CDLL(path).openblas_get_corename
    except (OSError, AttributeError):
        return ""
    corename.restype = ctypes.c_char_p
    forced = os.environ.get("OPENBLAS_CORETYPE")
    return f", {corename().decode()} kernels" + (f" (OPENBLAS_CORETYPE={forced})" if forced else "")


_c_int, _c_float, _ptr = ctypes.c_int, ctypes.c_float, ctypes.c_void_p
_SIGNATURES = {
    # order, trans, M, N, alpha, A, lda, x, incx, beta, y, incy
    "cblas_sgemv": [_c_int] * 4 + [_c_float, _ptr, _c_int, _ptr, _c_int, _c_float, _ptr, _c_int],
    # order, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc
    "cblas_sgemm": [_c_int] * 6 + [_c_float, _ptr, _c_int, _ptr, _c_int, _c_float, _ptr, _c_int],
}
_functions: dict[str, object] = {}


def _function(name: str):
    """``name`` of the loaded BLAS (ctypes, GIL released), or None when none was loaded
    or it lacks the symbol."""
    if name not in _functions and loaded_path is not None:
        try:
            fn = getattr(ctypes.CDLL(loaded_path), name)
        except (OSError, AttributeError):
            fn = False
        else:
            fn.argtypes = _SIGNATURES[name]
            fn.restype = None
        _functions[name] = fn
    return _functions.get(name) or None


def sgemv():
    """``cblas_sgemv`` of the loaded BLAS, or None (see ``_function``)."""
    return _function("cblas_sgemv")


def sgemm():
    """``cblas_sgemm`` of the loaded BLAS, or None (see ``_function``)."""
    return _function("cblas_sgemm")


_numpy_threads = None


def _numpy_openblas_threads():
    """(get, set) for the thread count of numpy's bundled OpenBLAS, or False when numpy
    uses another BLAS (or none could be found)."""
    import numpy

    root = os.path.dirname(numpy.__file__)
    libs = glob.glob(os.path.join(root, "..", "numpy.libs", "lib*openblas*.so*"))
    libs += glob.glob(os.path.join(root, ".libs", "lib*openblas*.so*"))
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix, int_type in (
            ("scipy_openblas", "64_", ctypes.c_int64),
            ("scipy_openblas", "", ctypes.c_int),
            ("openblas", "64_", ctypes.c_int64),
            ("openblas", "", ctypes.c_int),
        ):
            get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            set_ = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            if get is not None and set_ is not None:
                get.restype, set_.argtypes = int_type, [int_type]
                return get, set_
    return False


_numpy_lock = threading.Lock()
_numpy_depth = 0
_numpy_saved = 0


class single_threaded_numpy_blas:
    """Context manager: numpy's BLAS on one thread inside, restored on exit (also when
    entered from several threads at once).

    Our own threads then split the work, and numpy's BLAS worker threads do not spin
    beside MLX's (the two libraries' idle workers busy-wait and slow each other down).
    ``active`` says whether numpy's BLAS could be controlled."""

    def __enter__(self):
        global _numpy_threads, _numpy_depth, _numpy_saved
        with _numpy_lock:
            if _numpy_threads is None:
                _numpy_threads = _numpy_openblas_threads()
            self.active = bool(_numpy_threads)
            if self.active:
                get, set_ = _numpy_threads
                if _numpy_depth == 0:
                    _numpy_saved = get()
                    set_(1)
                _numpy_depth += 1
        return self

    def __exit__(self, *exc):
        global _numpy_depth
        if self.active:
            with _numpy_lock:
                _numpy_depth -= 1
                if _numpy_depth == 0:
                    _numpy_threads[1](_numpy_saved)

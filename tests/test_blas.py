"""The Linux BLAS loader (``chatterbox_mlx.cpu.blas``): OpenBLAS is loaded before mlx.core,
an env var names another library or turns it off, and a missing library is reported once,
clearly."""

import os
import subprocess
import sys

import pytest

SNIPPET = "import chatterbox_mlx.cpu.blas as b, chatterbox_mlx; print(b.status)"


def run(env_value, **extra):
    env = {k: v for k, v in os.environ.items() if k != "CHATTERBOX_MLX_BLAS"}
    env.update(extra)
    if env_value is not None:
        env["CHATTERBOX_MLX_BLAS"] = env_value
    return subprocess.run([sys.executable, "-c", SNIPPET], capture_output=True, text=True,
                          env=env, timeout=120)  # fmt: skip


def test_default_loads_system_openblas():
    from chatterbox_mlx.cpu import blas

    found = blas._find_openblas()
    r = run(None)
    if not sys.platform.startswith("linux"):
        assert "not needed" in r.stdout
    elif found is None:  # then the one clear warning must say how to fix it
        assert "no OpenBLAS found" in r.stdout and "libopenblas0-pthread" in r.stderr
    else:  # an OpenBLAS also names the kernel it runs
        assert r.stdout.startswith(f"loaded {found}, ") and " kernels" in r.stdout


def test_status_names_a_forced_openblas_kernel():
    """Benchmarks print the status: a kernel forced by OPENBLAS_CORETYPE is named there."""
    from chatterbox_mlx.cpu import blas

    found = blas._find_openblas()
    if not sys.platform.startswith("linux") or found is None or "openblas" not in found:
        pytest.skip("no system OpenBLAS here (CI installs one)")
    r = run(None, OPENBLAS_CORETYPE="Haswell")
    assert r.stdout.strip() == f"loaded {found}, Haswell kernels (OPENBLAS_CORETYPE=Haswell)"


def test_off_disables():
    r = run("off")
    assert "disabled by CHATTERBOX_MLX_BLAS=off" in r.stdout or "not needed" in r.stdout


def test_bad_path_is_reported():
    r = run("/nonexistent/libblas.so")
    if sys.platform.startswith("linux"):
        assert "failed to load /nonexistent/libblas.so" in r.stdout
        assert "failed to load" in r.stderr


def test_numpy_blas_is_single_threaded_inside_and_restored_after():
    import threading

    from chatterbox_mlx.cpu import blas

    import numpy

    controls = blas._numpy_openblas_threads()
    blas_name = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    if "openblas" not in blas_name:  # Accelerate, MKL...: nothing to control, say so
        assert controls is False
        with blas.single_threaded_numpy_blas() as ctx:
            assert not ctx.active
        return
    assert controls, f"numpy's bundled {blas_name} was not found"
    get, set_ = controls
    set_(2)
    barrier = threading.Barrier(2)
    seen = []

    def worker():
        with blas.single_threaded_numpy_blas() as ctx:
            assert ctx.active
            barrier.wait()  # both inside at once
            seen.append(get())
            barrier.wait()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [1, 1]
    assert get() == 2


def test_environment_sets_only_missing_variables_and_restores(monkeypatch):
    from chatterbox_mlx.cpu import blas

    monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT", raising=False)
    with blas.environment(OPENBLAS_THREAD_TIMEOUT="16"):
        assert os.environ["OPENBLAS_THREAD_TIMEOUT"] == "16"
    assert "OPENBLAS_THREAD_TIMEOUT" not in os.environ
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "28")  # the user's choice wins
    with blas.environment(OPENBLAS_THREAD_TIMEOUT="16"):
        assert os.environ["OPENBLAS_THREAD_TIMEOUT"] == "28"
    assert os.environ["OPENBLAS_THREAD_TIMEOUT"] == "28"

import chatterbox_mlx  # noqa: F401, I001  (loads the optimized BLAS before mlx.core)

import os

import pytest

from tests.helpers import models
from tests.helpers.checkpoints import cache_dir, cached_checkpoint, write_checkpoint
from tests.helpers.entry_points import ReachedT3
from tests.helpers.sources import LAYOUTS
from tests.helpers.sources import write_text_files as write_tokenizer_files
from tests.helpers.torch_zip import write_conds


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A 64 KiB tmpfs (needs root and mount; skipped where either is missing)."""
    import shutil
    import subprocess

    mount = shutil.which("mount")
    if os.geteuid() != 0 or mount is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    point = tmp_path / "tiny"
    point.mkdir()
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(point)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], check=False)


# ---------------------------------------------------------------------------- models
#
# Full-size real-layout random checkpoints (tests/helpers/sources.converted_dir), one load
# of each variant per session. ``<variant>_model`` is the pipeline as ``from_local`` loads
# it; ``<variant>`` is a second pipeline on the same networks whose voice is the built-in
# one with short prompts (tests/helpers/models.shorten: cheap calls). A test that changes
# a shared pipeline (its ``conds``, a layer, a method) puts it back before it ends.


@pytest.fixture(scope="session")
def english_model():
    return models.load("english")


@pytest.fixture(scope="session")
def turbo_model():
    return models.load("turbo")


@pytest.fixture(scope="session")
def nano_model():
    return models.load("nano")


@pytest.fixture(scope="session")
def multilingual_model():
    return models.load("multilingual")


@pytest.fixture(scope="session")
def english(english_model):
    return models.with_voice(english_model, models.shorten(english_model.conds))


@pytest.fixture(scope="session")
def turbo(turbo_model):
    return models.with_voice(turbo_model, models.shorten(turbo_model.conds))


@pytest.fixture(scope="session")
def nano(nano_model):
    return models.with_voice(nano_model, models.shorten(nano_model.conds))


@pytest.fixture(scope="session")
def multilingual(multilingual_model):
    return models.with_voice(multilingual_model, models.shorten(multilingual_model.conds))


@pytest.fixture
def stop_at_t3(monkeypatch):
    """``stop_at_t3(model)``: T3 raises ``ReachedT3`` instead of generating."""

    def install(model):
        def reached(*args, **kwargs):
            raise ReachedT3(kwargs)

        monkeypatch.setattr(model.t3, "generate_steps", reached)

    return install


# ---------------------------------------------------------------------------- checkpoints
#
# For the checkpoint tests (tests/test_convert.py and the files split from it): a file
# that converts or resolves declares ``pytestmark = pytest.mark.usefixtures("offline_env")``.


@pytest.fixture(scope="module")
def offline_env():
    """No network; conversions cache file hashes in the (persistent) test cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("CHATTERBOX_MLX_CACHE", str(cache_dir() / "mlx-cache"))
        yield


@pytest.fixture
def small_source(tmp_path):
    """An English source whose T3/S3Gen are empty placeholders: conversion fails on the
    VE (first network) long before reaching them, which is what these tests need."""
    source = tmp_path / "source"
    source.mkdir()
    write_checkpoint("ve", source)
    for name in ("t3_cfg.safetensors", "s3gen.safetensors"):
        os.symlink(cached_checkpoint(LAYOUTS["english"][0 if "t3" in name else 1]), source / name)
    write_conds(source / "conds.pt")
    write_tokenizer_files(source, "english")
    return source


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("CHATTERBOX_MLX_CACHE", str(tmp_path / "mlx-cache"))
    return cache

import chatterbox_mlx  # noqa: F401, I001  (loads the optimized BLAS before mlx.core)

import inspect
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
# Full-size real-layout random checkpoints (tests/helpers/sources.converted_dir), loaded
# once and shared by consecutive modules (tests/helpers/models.py: released between
# modules when the next one does not use them). ``<variant>_model`` is the pipeline as
# ``from_local`` loads it; ``<variant>`` is a second pipeline on the same networks whose
# voice is the built-in one with short prompts (models.shorten: cheap calls). A test
# that changes a shared pipeline (its ``conds``, a layer, a method) puts it back.

MODEL_FIXTURES = {  # fixture -> the variant it holds
    **{f"{variant}_model": variant for variant in models.VARIANTS},
    **{variant: variant for variant in models.VARIANTS},
}


@pytest.fixture(scope="module")
def english_model():
    return models.shared("english")


@pytest.fixture(scope="module")
def turbo_model():
    return models.shared("turbo")


@pytest.fixture(scope="module")
def nano_model():
    return models.shared("nano")


@pytest.fixture(scope="module")
def multilingual_model():
    return models.shared("multilingual")


@pytest.fixture(scope="module")
def english(english_model):
    return models.with_voice(english_model, models.shorten(english_model.conds))


@pytest.fixture(scope="module")
def turbo(turbo_model):
    return models.with_voice(turbo_model, models.shorten(turbo_model.conds))


@pytest.fixture(scope="module")
def nano(nano_model):
    return models.with_voice(nano_model, models.shorten(nano_model.conds))


@pytest.fixture(scope="module")
def multilingual(multilingual_model):
    return models.with_voice(multilingual_model, models.shorten(multilingual_model.conds))


def variants_used(item) -> set[str]:
    """The shared variants ``item`` needs: its fixtures, and the fixtures it takes by name
    from a parameter (``request.getfixturevalue(variant)``), unless its module defines a
    fixture of that name itself (which then overrides this file's)."""
    names = set(item.fixturenames)
    function = getattr(item, "function", None)
    if hasattr(item, "callspec") and "request" in inspect.signature(function).parameters:
        names |= {value for value in item.callspec.params.values() if isinstance(value, str)}
    own = vars(item.module) if getattr(item, "module", None) else {}
    return {MODEL_FIXTURES[name] for name in names & MODEL_FIXTURES.keys() if name not in own}


def pytest_collection_modifyitems(session, config, items):
    session.variants_by_module = {}
    for item in items:
        module = getattr(item, "module", None)
        session.variants_by_module.setdefault(module, set()).update(variants_used(item))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    yield  # the module's fixtures are finished first when nextitem is in another module
    module = getattr(item, "module", None)
    next_module = getattr(nextitem, "module", None)
    if nextitem is None or next_module is not module:
        by_module = getattr(item.session, "variants_by_module", {})
        models.release(by_module.get(next_module, set()) if nextitem else set())


@pytest.fixture
def stop_at_t3(monkeypatch):
    """``stop_at_t3(model)``: T3 raises ``ReachedT3`` instead of generating."""

    def install(model):
        def reached(*args, **kwargs):
            raise ReachedT3(kwargs)

        monkeypatch.setattr(model.t3, "generate_steps", reached)
        monkeypatch.setattr(model.t3, "generate_batch", reached)  # several chunks at once

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

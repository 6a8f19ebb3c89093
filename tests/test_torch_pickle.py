"""The torch-free reader of torch.save archives (chatterbox_mlx.checkpoints.torch_pickle)."""

from __future__ import annotations

import pickle
import zipfile

from chatterbox_mlx.checkpoints import torch_pickle
from chatterbox_mlx.checkpoints.torch_pickle import TorchArchiveError, UnsafePickleError

import numpy as np
import pytest

from tests.helpers.golden import GOLDEN_DIR, load_golden
from tests.helpers.torch_zip import StridedTensor, conds_object, write_conds, write_torch_zip


def flatten(obj, prefix: str = "") -> dict:
    out = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}{key}."))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            out.update(flatten(value, f"{prefix}{i}."))
    elif isinstance(obj, np.ndarray):
        out[prefix[:-1]] = obj
    return out


def assert_same_arrays(actual: dict, expected: dict) -> None:
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        assert actual[key].dtype == value.dtype, key
        assert actual[key].shape == value.shape, key
        np.testing.assert_array_equal(actual[key], value, err_msg=key)


@pytest.mark.golden
def test_real_conds_file_reads_identically():
    golden = load_golden("conds")
    expected = {k[len("conds.") :]: v for k, v in golden.items() if k.startswith("conds.")}
    conds = torch_pickle.load(GOLDEN_DIR / "conds.pt")
    assert set(conds) == {"t3", "gen"}
    assert conds["t3"]["clap_emb"] is None and conds["t3"]["cond_prompt_speech_emb"] is None
    assert conds["gen"]["prompt_feat_len"] is None
    assert conds["gen"]["prompt_token"].dtype == np.int64
    assert conds["gen"]["prompt_feat"].flags.c_contiguous  # the transposed view, materialised
    assert_same_arrays(flatten(conds), expected)


@pytest.mark.golden
def test_real_file_with_every_storage_type_reads_identically():
    golden = load_golden("conds")
    expected = {k[len("dtypes.") :]: v for k, v in golden.items() if k.startswith("dtypes.")}
    obj = torch_pickle.load(
        GOLDEN_DIR / "conds_dtypes.pt", extra_globals=["torch._utils._rebuild_parameter"]
    )
    assert_same_arrays(flatten(obj), expected)
    assert obj["scalar"].shape == ()
    assert obj["nested"]["a"] == [1, 2.5, None, "text"]
    assert obj["nested"]["b"][0] is True


@pytest.mark.golden
def test_parameter_global_needs_opting_in():
    with pytest.raises(UnsafePickleError, match="torch._utils._rebuild_parameter"):
        torch_pickle.load(GOLDEN_DIR / "conds_dtypes.pt")


@pytest.mark.parametrize("variant", ["english", "multilingual", "turbo", "nano"])
@pytest.mark.parametrize("root,byteorder", [("archive", "little"), (None, "big")])
def test_written_conds_round_trip(tmp_path, variant, root, byteorder):
    path = write_conds(tmp_path / "conds.pt", variant, seed=3, root=root, byteorder=byteorder)
    expected = flatten(conds_object(variant, seed=3))
    expected = {k: np.ascontiguousarray(v) for k, v in expected.items()}
    assert_same_arrays(flatten(torch_pickle.load(path)), expected)


def test_sizes_of_each_variant(tmp_path):
    turbo = torch_pickle.load(write_conds(tmp_path / "turbo.pt", "turbo"))
    assert turbo["t3"]["cond_prompt_speech_tokens"].shape == (1, 375)
    assert turbo["gen"]["prompt_feat"].shape == (1, 500, 80)  # 10 s of 50 Hz mel
    english = torch_pickle.load(write_conds(tmp_path / "english.pt", "english"))
    assert english["t3"]["cond_prompt_speech_tokens"].shape == (1, 150)
    assert english["t3"]["emotion_adv"].shape == (1, 1, 1)


@pytest.mark.parametrize("module,name", [("os", "system"), ("builtins", "eval")])
def test_foreign_global_is_refused_without_running(tmp_path, module, name):
    marker = tmp_path / "was_run"
    command = f"touch {marker}" if name == "system" else f"open({str(marker)!r}, 'w')"
    path = write_torch_zip(
        tmp_path / "evil.pt",
        {"x": np.ones(3, np.float32)},
        extra_global=(module, name),
        extra_args=(command,),
    )
    with pytest.raises(UnsafePickleError, match=rf"'{module}\.{name}'"):
        torch_pickle.load(path)
    assert not marker.exists()


def test_extra_globals_mapping_supplies_a_replacement(tmp_path):
    path = write_torch_zip(
        tmp_path / "x.pt", {"x": 1}, extra_global=("argparse", "Namespace"), extra_args=()
    )
    seen = []
    out = torch_pickle.load(path, extra_globals={"argparse.Namespace": lambda: seen.append(1)})
    assert out == {"x": 1} and seen == [1]
    with pytest.raises(ValueError, match="unknown extra global"):
        torch_pickle.load(path, extra_globals=["argparse.Namespace"])


def test_storage_type_is_not_callable(tmp_path):
    # A pickle calling torch.FloatStorage(...) must not get a constructor.
    path = write_torch_zip(tmp_path / "x.pt", {"x": 1}, extra_global=("torch", "FloatStorage"))
    with pytest.raises(TorchArchiveError, match="malformed"):
        torch_pickle.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        torch_pickle.load(tmp_path / "nope.pt")


def test_truncated_archive(tmp_path):
    path = write_conds(tmp_path / "conds.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TorchArchiveError, match="truncated"):
        torch_pickle.load(path)


def test_legacy_format_is_named(tmp_path):
    path = tmp_path / "old.pt"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(TorchArchiveError, match="legacy"):
        torch_pickle.load(path)


def test_zip_without_pickle(tmp_path):
    path = tmp_path / "x.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/version", "3\n")
    with pytest.raises(TorchArchiveError, match="no data.pkl"):
        torch_pickle.load(path)


def test_short_storage_record(tmp_path):
    path = write_torch_zip(tmp_path / "x.pt", {"x": np.ones(10, np.float32)}, root="archive")
    with zipfile.ZipFile(path) as archive:
        records = {n: archive.read(n) for n in archive.namelist()}
    records["archive/data/0"] = records["archive/data/0"][:12]
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in records.items():
            archive.writestr(name, data)
    with pytest.raises(TorchArchiveError, match="truncated"):
        torch_pickle.load(path)


def test_view_inside_its_storage_is_materialised():
    storage = torch_pickle.Storage(np.arange(6, dtype=np.float32), "archive/data/0")
    ref = torch_pickle.rebuild_tensor_v2(storage, 1, (2, 2), (1, 2))
    view = torch_pickle.materialize(ref, "x", "test")
    np.testing.assert_array_equal(view, [[1, 3], [2, 4]])
    assert view.flags.c_contiguous


def conds_with(tmp_path, **gen) -> object:
    obj = conds_object("english")
    obj["gen"].update(gen)
    return write_torch_zip(tmp_path / "conds.pt", obj, root="archive")


@pytest.mark.parametrize(
    "layout,extent",
    [
        # 10**12 elements out of one: a MemoryError (or terabytes) before
        (dict(shape=(10**6, 10**6), stride=(0, 0)), "spans 1000000000000 elements"),
        (dict(shape=(4000, 4000), stride=(0, 0)), "spans 16000000 elements"),  # 64 MB
        (dict(shape=(100, 100), stride=(100, 1)), "up to index 9999"),  # ordinary, too long
        (dict(shape=(2, 3), stride=(3, 1), offset=5), "up to index 10"),
    ],
)
def test_tensor_claiming_more_than_its_storage_is_refused_by_name(tmp_path, layout, extent):
    import tracemalloc

    bad = StridedTensor(np.ones(10, np.float32), **layout)
    path = conds_with(tmp_path, prompt_feat=bad)
    tracemalloc.start()
    try:
        with pytest.raises(TorchArchiveError) as err:
            torch_pickle.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(err.value)
    assert "tensor gen.prompt_feat" in message and extent in message, message
    assert "storage archive/data/" in message and "holds 10 elements" in message, message
    assert peak < 16 << 20, f"{peak} bytes allocated before refusing"


def test_invalid_layouts_are_refused(tmp_path):
    path = conds_with(tmp_path, embedding=StridedTensor(np.ones(4, np.float32), (2, -2), (1, 1)))
    with pytest.raises(TorchArchiveError, match="tensor gen.embedding has an invalid layout"):
        torch_pickle.load(path)
    path = conds_with(tmp_path, embedding=StridedTensor(np.ones(4, np.float32), (2, 2), (1,)))
    with pytest.raises(TorchArchiveError, match="invalid tensor layout"):
        torch_pickle.load(path)


def test_storage_claiming_more_than_its_record_is_refused_before_reading(tmp_path):
    bad = StridedTensor(np.ones(10, np.float32), (10,), (1,), numel=10**12)
    path = conds_with(tmp_path, embedding=bad)
    with pytest.raises(TorchArchiveError, match=r"holds 40 bytes, 4000000000000 expected"):
        torch_pickle.load(path)


def test_refusals_are_value_errors_for_the_command_lines():
    """Both CLIs print ValueError (and OSError) as one line with exit code 1."""
    assert issubclass(UnsafePickleError, TorchArchiveError)
    assert issubclass(TorchArchiveError, ValueError)
    assert issubclass(UnsafePickleError, pickle.UnpicklingError)


def test_replacement_globals_are_handed_arrays(tmp_path):
    seen = []

    def keep(x):
        seen.append(x)
        return x

    obj = {"x": np.arange(3, dtype=np.float32)}
    pickler_path = write_torch_zip(tmp_path / "x.pt", obj)
    data = torch_pickle.load(pickler_path, extra_globals={"argparse.Namespace": keep})
    np.testing.assert_array_equal(data["x"], [0, 1, 2])
    path = write_torch_zip(
        tmp_path / "y.pt", {}, extra_global=("argparse", "Namespace"),
        extra_args=(np.arange(4, dtype=np.int64),),
    )  # fmt: skip
    torch_pickle.load(path, extra_globals={"argparse.Namespace": keep})
    assert len(seen) == 1 and isinstance(seen[0], np.ndarray) and seen[0].tolist() == [0, 1, 2, 3]

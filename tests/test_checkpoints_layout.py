"""A converted folder's config.json and tensors as loading checks them
(checkpoints.layout, through hub.load_components): each wrong field named with the fix,
an unreadable file not reported as missing, non-finite tensors and voices refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from chatterbox_mlx.checkpoints import convert, hub
from chatterbox_mlx.checkpoints import layout as checkpoint
from chatterbox_mlx.models.weights import CheckpointError
from chatterbox_mlx.variants import get_variant

import mlx.core as mx
import numpy as np
import pytest

from tests.helpers.checkpoints import random_weights
from tests.helpers.torch_zip import write_conds

pytestmark = pytest.mark.usefixtures("offline_env")


def write_converted(directory: Path, variant: str = "english", **overrides) -> Path:
    """A converted folder holding only config.json, the VE and the built-in voice: enough
    for ``load_components(..., networks=("voice_encoder",))``. ``overrides`` replace
    tensors of the original VE file by key."""
    var = get_variant(variant)
    configs = {net.name: net.default_config(var) for net in checkpoint.NETWORKS}
    directory.mkdir(parents=True, exist_ok=True)
    checkpoint.write_config(
        directory, checkpoint.new_config(var, "float32", None, configs, [], {"files": {}})
    )
    ve = next(n for n in checkpoint.NETWORKS if n.name == "voice_encoder")
    original = {k: mx.array(v) for k, v in random_weights("ve", overrides=overrides).items()}
    mx.save_safetensors(str(directory / ve.file), ve.sanitize(original))
    convert.save_conds(directory / checkpoint.CONDS_FILE, write_conds(directory / "conds.pt"))
    (directory / "conds.pt").unlink()
    return directory


def edit_config(directory: Path, edit) -> None:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


def _set(path: str, value):
    def edit(config):
        *parents, last = path.split(".")
        node = config
        for key in parents:
            node = node[key]
        node[last] = value

    return edit


def _delete(path: str):
    def edit(config):
        *parents, last = path.split(".")
        node = config
        for key in parents:
            node = node[key]
        del node[last]

    return edit


def _quantized(config):
    config["quantization"] = {"bits": "4", "group_size": 64, "networks": ["t3"]}


def _nested_one_level_too_deep(config):
    entry = config["networks"]["flow"]
    entry["config"] = {"config": entry["config"]}


BAD_CONFIGS = [
    ("no networks", _delete("networks"), r"the top level has no field 'networks'"),
    ("no t3 entry", _delete("networks.t3"), r"'networks' has no field 't3'"),
    ("unknown network", _set("networks.t4", {}), r"'networks' has an unknown field 't4'"),
    ("version as string", _set("format_version", "1"), r"'format_version' must be an integer"),
    ("bits as string", _quantized, r"'quantization.bits' must be one of 4, 8, got '4'"),
    (
        "number as string",
        _set("networks.t3.config.hidden_size", "1024"),
        r"'networks.t3.config' is not valid \(.*hidden_size.*'1024'",
    ),
    ("list for an entry", _set("networks.flow", []), r"'networks.flow' must be an object"),
    ("wrong nesting", _nested_one_level_too_deep, r"'networks.flow.config' is not valid.*config"),
    ("file outside", _set("networks.t3.file", "../t3.safetensors"), r"must name a file in"),
    ("unknown variant", _set("variant", "klingon"), r"'variant': unknown variant 'klingon'"),
    ("unknown dtype", _set("dtype", "float8"), r"'dtype' must be one of float32"),
    ("unknown field", _set("netwroks", {}), r"the top level has an unknown field 'netwroks'"),
    ("tokenizer list", _set("tokenizer_files", "tokenizer.json"), r"'tokenizer_files' must be a"),
]


@pytest.mark.parametrize(
    "edit,message", [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_wrong_config_contents_name_the_field_and_the_fix(tmp_path, edit, message):
    folder = write_converted(tmp_path / "model")
    hub.load_components(folder, networks=("voice_encoder",))  # valid before the edit
    edit_config(folder, edit)
    for call in (lambda: checkpoint.read_config(folder), lambda: hub.load_components(folder)):
        with pytest.raises(CheckpointError, match=message) as err:
            call()
        text = str(err.value)
        assert "\n" not in text and str(folder / "config.json") in text
        assert f"delete {folder} and convert the model again" in text


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda p: p.write_text(p.read_text()[:200]), r"not valid JSON, truncated or corrupt"),
        (lambda p: p.write_bytes(b"\xff\xfe" + p.read_bytes()), r"not text"),
        (lambda p: (p.unlink(), p.mkdir()), r"cannot read .*config.json: Is a directory"),
        (lambda p: p.write_text("[1, 2]"), r"is not a chatterbox-mlx config \(format: 'list'\)"),
    ],
    ids=["truncated", "not utf-8", "unreadable", "not an object"],
)
def test_unreadable_config_is_not_reported_as_missing(tmp_path, damage, message):
    folder = write_converted(tmp_path / "model")
    damage(folder / "config.json")
    for call in (lambda: hub.resolve(folder), lambda: hub.load_components(folder)):
        with pytest.raises(CheckpointError, match=message) as err:
            call()
        assert "no config.json" not in str(err.value)
    config = folder / "config.json"
    shutil.rmtree(config) if config.is_dir() else config.unlink()
    with pytest.raises(hub.MissingFilesError, match="no config.json"):
        hub.resolve(folder)


def test_loading_refuses_non_finite_tensors_by_name(tmp_path):
    weights = random_weights("ve")
    bad = weights["proj.weight"].copy()
    bad[0, :3] = [np.nan, np.inf, -np.inf]
    folder = write_converted(tmp_path / "model", **{"proj.weight": bad})
    with pytest.raises(CheckpointError) as err:
        hub.load_components(folder, networks=("voice_encoder",))
    lines = str(err.value).splitlines()
    assert "1 tensor with NaN or infinite values" in lines[0]
    assert "voice_encoder.safetensors" in lines[0]
    assert lines[1:] == [f"  non-finite proj.weight: 3 NaN or infinite of {bad.size} values"]


def test_loading_refuses_a_non_finite_builtin_voice(tmp_path):
    folder = write_converted(tmp_path / "model")
    conds = dict(mx.load(str(folder / checkpoint.CONDS_FILE)))
    conds["gen.embedding"] = mx.full(conds["gen.embedding"].shape, float("nan"))
    mx.save_safetensors(str(folder / checkpoint.CONDS_FILE), conds)
    with pytest.raises(CheckpointError, match=r"built-in voice[\s\S]*non-finite gen.embedding"):
        hub.load_components(folder, networks=("voice_encoder",))

"""Model resolution (checkpoints.hub): hub repo ids, original and converted directories,
the conversion cache; offline against a private Hugging Face cache folder (nothing
touches the network)."""

from __future__ import annotations

import json

from chatterbox_mlx.checkpoints import convert, hub
from chatterbox_mlx.models.weights import CheckpointError
from chatterbox_mlx.variants import get_variant

import pytest

from tests.helpers.checkpoints import write_checkpoint
from tests.helpers.conversions import assert_no_output, fake_hf_cache

pytestmark = pytest.mark.usefixtures("offline_env")


def test_offline_without_cache_lists_missing_files(hf_cache):
    with pytest.raises(hub.MissingFilesError) as err:
        hub.resolve("ResembleAI/chatterbox-turbo")
    message = str(err.value)
    assert "t3_turbo_v1.safetensors" in message and "s3gen_meanflow.safetensors" in message
    assert "HF_HUB_OFFLINE" in message and "huggingface-cli download" in message


def test_convert_from_repo_offline_names_missing_files(hf_cache, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(hub.MissingFilesError, match="t3_nano_v1.safetensors"):
        convert.convert("ResembleAI/chatterbox-nano", out)
    assert_no_output(out)
    assert convert.main(["--hf-path", "ResembleAI/chatterbox-nano", "--mlx-path", str(out)]) == 1


def test_offline_partial_cache_lists_what_is_missing(hf_cache, tmp_path):
    ve = write_checkpoint("ve", tmp_path / "files")
    fake_hf_cache(hf_cache, "ResembleAI/chatterbox", {"ve.safetensors": ve})
    with pytest.raises(hub.MissingFilesError) as err:
        hub.resolve("ResembleAI/chatterbox")
    missing = str(err.value).split("checkpoint:")[1].split("\n")[0]
    assert "t3_cfg.safetensors" in missing and "ve.safetensors" not in missing


def test_converted_repo_and_cached_conversion_load_offline(hf_cache, tmp_path):
    # A hub repo holding a conversion: resolved from the (offline) HF cache.
    mlx_dir = tmp_path / "mlx"
    mlx_dir.mkdir()
    (mlx_dir / "config.json").write_text(json.dumps({"format": "chatterbox-mlx"}))
    snap = fake_hf_cache(
        hf_cache, "someone/chatterbox-mlx", {"config.json": mlx_dir / "config.json"}
    )
    assert hub.resolve("someone/chatterbox-mlx") == snap
    # An original repo converted earlier: found in the conversion cache with no network.
    var = get_variant("turbo")
    target = hub.converted_cache_dir("ResembleAI/chatterbox-turbo@main", var)
    target.mkdir(parents=True)
    (target / "config.json").write_text(json.dumps({"format": "chatterbox-mlx"}))
    assert hub.resolve("ResembleAI/chatterbox-turbo") == target


def test_resolve_rejects_unknown_names(tmp_path):
    with pytest.raises(hub.MissingFilesError, match="neither a converted"):
        hub.resolve(tmp_path)
    with pytest.raises(hub.MissingFilesError, match="not a hub repo id"):
        hub.resolve(str(tmp_path / "nowhere" / "deeper" / "x"))


def test_load_components_refuses_newer_format(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"format": "chatterbox-mlx", "format_version": 99, "variant": "english"})
    )
    with pytest.raises(CheckpointError, match="format version 99"):
        hub.load_components(tmp_path)

"""The variant registry and the detection of a checkpoint's variant (chatterbox_mlx.variants)."""

from __future__ import annotations

from chatterbox_mlx.variants import VARIANTS, UnknownVariantError, detect_variant, get_variant

import pytest

pytestmark = pytest.mark.usefixtures("offline_env")


def test_variant_registry():
    assert set(VARIANTS) == {"english", "multilingual", "multilingual-v3", "turbo", "nano"}
    assert get_variant("multilingual-v2") is VARIANTS["multilingual"]
    assert VARIANTS["multilingual"].t3_file == "t3_mtl23ls_v2.safetensors"
    assert VARIANTS["multilingual-v3"].t3_file == "t3_mtl23ls_v3.safetensors"
    assert VARIANTS["multilingual"].generation["repetition_penalty"] == 1.2
    assert VARIANTS["turbo"].generation["top_k"] == 1000
    assert VARIANTS["english"].generation["cfg_weight"] == 0.5
    assert VARIANTS["nano"].meanflow and not VARIANTS["english"].meanflow
    with pytest.raises(UnknownVariantError, match="klingon.*english"):
        get_variant("klingon")


def test_variant_detection(tmp_path):
    for variant in VARIANTS.values():  # empty placeholder files are enough to detect
        (tmp_path / variant.t3_file).touch()
    assert detect_variant(tmp_path).name == "english"  # the repo's own default
    assert detect_variant(tmp_path, "ResembleAI/chatterbox-nano").name == "nano"
    (tmp_path / "t3_cfg.safetensors").unlink()
    assert detect_variant(tmp_path).name == "turbo"
    for name in ("t3_turbo_v1", "t3_nano_v1"):
        (tmp_path / f"{name}.safetensors").unlink()
    assert detect_variant(tmp_path).name == "multilingual"
    with pytest.raises(UnknownVariantError, match="no known T3"):
        detect_variant(tmp_path / "missing")

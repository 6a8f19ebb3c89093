"""The converter (checkpoints.convert), the variant registry and model resolution (hub).

Full-size, real-layout random checkpoints (tests/helpers/checkpoints.py) of every
variant are converted once per module; each network's converted parameters are compared
exactly with the source tensors after the documented transforms. Nothing touches the
network: hub behaviour is exercised offline against a private Hugging Face cache folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from chatterbox_mlx.checkpoints import convert, hub, originals
from chatterbox_mlx.checkpoints import layout as checkpoint
from chatterbox_mlx.models.weights import CheckpointError, fold_weight_norm, strip_prefix
from chatterbox_mlx.variants import VARIANTS, UnknownVariantError, detect_variant, get_variant

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from tests.helpers.checkpoints import cache_dir, cached_checkpoint, random_weights, write_checkpoint
from tests.helpers.sources import LAYOUTS, make_source
from tests.helpers.sources import write_text_files as write_tokenizer_files
from tests.helpers.torch_zip import conds_object, write_conds, write_torch_zip

# Conditionals.save's layout, flattened (None entries are not stored).
CONDS_KEYS = {
    "t3.speaker_emb",
    "t3.cond_prompt_speech_tokens",
    "t3.emotion_adv",
    "gen.prompt_token",
    "gen.prompt_token_len",
    "gen.prompt_feat",
    "gen.embedding",
}


@pytest.fixture(scope="module", autouse=True)
def offline_env():
    """No network; conversions cache file hashes in the (persistent) test cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("CHATTERBOX_MLX_CACHE", str(cache_dir() / "mlx-cache"))
        yield


# ---------------------------------------------------------------------------- sources


def source_of(directory: Path, variant: str, name: str) -> dict[str, mx.array]:
    var = get_variant(variant)
    files = {"t3": var.t3_file, "s3gen": var.s3gen_file, "ve": var.ve_file}
    return mx.load(str(directory / files[name]))


def leftovers(path: Path) -> list[str]:
    """Temporary conversion folders left beside ``path``."""
    return [p.name for p in path.parent.glob(f".{path.name}.*")]


# ---------------------------------------------------------------------------- conversions

FULL_VARIANTS = ["english", "multilingual", "turbo", "nano"]


@pytest.fixture(scope="module", params=FULL_VARIANTS)
def converted(request, tmp_path_factory):
    """(variant, source dir, output dir); Nano goes through hub.resolve (convert on first
    use into the cache), the others through convert()."""
    variant = request.param
    root = tmp_path_factory.mktemp(f"convert-{variant}")
    source = make_source(root / "source", variant)
    try:
        if variant == "nano":
            mp = pytest.MonkeyPatch()
            mp.setenv("CHATTERBOX_MLX_CACHE", str(root / "cache"))
            try:
                out = hub.resolve(source)
            finally:
                mp.undo()
            assert out.parent == root / "cache" / "converted"
        else:
            out = convert.convert(source, root / "out")
        yield variant, source, out
    finally:
        shutil.rmtree(root, ignore_errors=True)  # ~3 GB per variant


def test_output_files_and_config(converted):
    variant, source, out = converted
    var = get_variant(variant)
    config = json.loads((out / "config.json").read_text())
    assert config["format"] == "chatterbox-mlx" and config["format_version"] == 1
    assert config["variant"] == variant
    assert config["dtype"] == "float32" and config["quantization"] is None
    assert set(config["networks"]) == {n.name for n in checkpoint.NETWORKS}
    assert config["networks"]["flow"]["config"]["meanflow"] is var.meanflow
    t3 = config["networks"]["t3"]["config"]
    assert t3["backbone"] == ("gpt2" if variant in ("turbo", "nano") else "llama")
    assert t3["text_vocab_size"] == {"english": 704, "multilingual": 2454}.get(variant, 50276)
    assert config["generation"] == var.generation
    # provenance: every source file read, with its hash
    files = config["source"]["files"]
    assert set(files) == {*var.weight_files, "conds.pt", *config["tokenizer_files"]}
    assert files["conds.pt"]["sha256"] == originals.cached_sha256(source / "conds.pt")
    assert files[var.ve_file]["size"] == (source / var.ve_file).stat().st_size
    # tokenizer files copied byte for byte
    expected_tok = [*var.tokenizer_files, *var.optional_files]
    assert config["tokenizer_files"] == expected_tok
    for name in expected_tok:
        assert (out / name).read_bytes() == (source / name).read_bytes()
    written = {p.name for p in out.iterdir()}
    nets = {f"{n.name}.safetensors" for n in checkpoint.NETWORKS}
    assert written == {"config.json", "conds.safetensors", *nets, *expected_tok}
    assert not leftovers(out)


def summary(arrays) -> mx.array:
    """Order-free summary of a set of tensors (lazy): [element count, sum, sum of squares]."""
    arrays = list(arrays)
    return mx.stack(
        [
            mx.array(float(sum(a.size for a in arrays))),
            sum((mx.sum(a) for a in arrays), mx.array(0.0)),
            sum((mx.sum(mx.square(a)) for a in arrays), mx.array(0.0)),
        ]
    )


def check_network(net: checkpoint.Network, source: dict, out: Path) -> None:
    """Exactly sanitize(source) (keys, shapes, dtypes, values), and the same multiset of
    values as the source tensors (sanitize only renames and re-lays out; dropped: the
    documented dead/derived tensors). Not summarised: HiFT (folds weight norm) and T3
    (2 GB; it only drops the dead embedding and transposes GPT-2's Conv1D, both checked in
    test_documented_transforms)."""
    weights = strip_prefix(source, net.prefix) if net.prefix else source
    expected = net.sanitize(weights)
    actual = mx.load(str(out / f"{net.name}.safetensors"))
    assert sorted(actual) == sorted(expected), net.name
    for key, value in expected.items():
        assert actual[key].shape == value.shape, f"{net.name}.{key}"
        assert actual[key].dtype == value.dtype, f"{net.name}.{key}"
    equal = mx.stack([mx.array_equal(actual[k], v) for k, v in expected.items()])
    summarised = net.name not in ("hift", "t3")
    checks = [equal]
    if summarised:
        dropped = ("tfmr.wte.weight", "tfmr.embed_tokens.weight", "_mel_filters", "window")
        kept = [v for k, v in weights.items() if not k.endswith(dropped)]
        kept = [v for v in kept if v.dtype != mx.int64]  # BatchNorm num_batches_tracked
        checks += [summary(actual.values()), summary(kept)]
    mx.eval(checks)
    bad = [k for k, ok in zip(expected, equal.tolist(), strict=True) if not ok]
    assert not bad, f"{net.name}: values differ from sanitize(source): {bad[:10]}"
    if summarised:
        np.testing.assert_allclose(
            np.asarray(checks[1]), np.asarray(checks[2]), rtol=1e-5, err_msg=net.name
        )


# Multilingual reads the very same ve/s3gen files as English, Nano the same
# s3gen_meanflow as Turbo: their T3 is what is new (and converted all the same).
CHECKED_SOURCES = {
    "english": ("ve", "s3gen", "t3"),
    "multilingual": ("t3",),
    "turbo": ("s3gen", "t3"),
    "nano": ("t3",),
}


def test_parameters_match_source(converted):
    variant, source, out = converted
    for name in CHECKED_SOURCES[variant]:
        weights = source_of(source, variant, name)
        for net in checkpoint.NETWORKS:
            if net.source == name:
                check_network(net, weights, out)
        del weights


def test_documented_transforms(converted):
    """Spot checks written independently of the sanitize functions (CHECKPOINTS.md)."""
    variant, source, out = converted
    t3_src, t3 = source_of(source, variant, "t3"), mx.load(str(out / "t3.safetensors"))
    if variant in ("turbo", "nano"):  # GPT-2 Conv1D [in, out] -> Linear [out, in]
        for key in ("attn.c_attn.weight", "mlp.c_proj.weight"):
            k = f"tfmr.h.0.{key}"
            assert mx.array_equal(t3[k], t3_src[k].T).item(), k
        assert "tfmr.wte.weight" not in t3 and "speech_head.bias" in t3
    else:
        k = "tfmr.layers.0.self_attn.q_proj.weight"
        assert mx.array_equal(t3[k], t3_src[k]).item()
        assert "tfmr.embed_tokens.weight" not in t3
    s3gen = source_of(source, variant, "s3gen")
    hift = mx.load(str(out / "hift.safetensors"))
    g = np.asarray(s3gen["mel2wav.conv_pre.parametrizations.weight.original0"])
    v = np.asarray(s3gen["mel2wav.conv_pre.parametrizations.weight.original1"])
    folded = g * v / np.linalg.norm(v, axis=(1, 2), keepdims=True)  # w = g v / ||v||
    np.testing.assert_allclose(
        np.asarray(hift["conv_pre.weight"]), folded.transpose(0, 2, 1), rtol=1e-5, atol=1e-7
    )
    ups = fold_weight_norm(
        s3gen["mel2wav.ups.0.parametrizations.weight.original0"],
        s3gen["mel2wav.ups.0.parametrizations.weight.original1"],
    )  # ConvTranspose1d [in, out, k] -> [out, k, in]
    assert mx.allclose(hift["ups.0.weight"], ups.transpose(1, 2, 0)).item()
    tok = mx.load(str(out / "s3tokenizer.safetensors"))
    conv1 = s3gen["tokenizer.encoder.conv1.weight"]  # Conv1d [out, in, k] -> [out, k, in]
    assert mx.array_equal(tok["encoder.conv1.weight"], conv1.transpose(0, 2, 1)).item()
    assert not any(k.endswith(("_mel_filters", "window")) for k in tok)
    camp = mx.load(str(out / "campplus.safetensors"))
    # Conv2d [out, in, k_freq, k_time] -> [out, k_time, k_freq, in] (maps are [B, T, F, C])
    conv2d = s3gen["speaker_encoder.head.conv1.weight"]
    assert mx.array_equal(camp["head.conv1.weight"], conv2d.transpose(0, 3, 2, 1)).item()
    assert not any(k.endswith("num_batches_tracked") for k in camp)
    ve_src, ve = source_of(source, variant, "ve"), mx.load(str(out / "voice_encoder.safetensors"))
    assert mx.array_equal(ve["lstm.layers.2.weight_hh"], ve_src["lstm.weight_hh_l2"]).item()
    assert mx.array_equal(ve["proj.weight"], ve_src["proj.weight"]).item()


def test_conds_safetensors_holds_the_builtin_voice(converted):
    variant, _, out = converted
    conds = mx.load(str(out / "conds.safetensors"))
    assert set(conds) == CONDS_KEYS
    expected = conds_object(variant, seed=0)
    for key in CONDS_KEYS:
        part, name = key.split(".")
        want = np.ascontiguousarray(expected[part][name])
        assert conds[key].shape == want.shape, key
        np.testing.assert_array_equal(np.asarray(conds[key]), want, err_msg=key)
    assert conds["gen.prompt_feat"].shape == (1, 500, 80)
    t3_len = 375 if variant in ("turbo", "nano") else 150
    assert conds["t3.cond_prompt_speech_tokens"].shape == (1, t3_len)


def test_load_components(converted, monkeypatch):
    variant, source, out = converted
    if variant == "nano":  # the second resolve of an original dir must reuse the cache
        monkeypatch.setenv("CHATTERBOX_MLX_CACHE", str(out.parent.parent))

        def no_conversion(*args, **kwargs):
            raise AssertionError("converted again")

        monkeypatch.setattr(hub, "convert", no_conversion)
        parts = hub.load_components(source)
        assert parts.path == out
    else:
        parts = hub.load_components(out)
    assert parts.variant.name == variant
    assert parts.generation == get_variant(variant).generation
    assert [p.name for p in parts.tokenizer_files] == parts.config["tokenizer_files"]
    for net in checkpoint.NETWORKS:
        model = getattr(parts, net.name)
        loaded = dict(tree_flatten(model.parameters()))
        stored = mx.load(str(out / f"{net.name}.safetensors"))
        assert sorted(loaded) == sorted(stored), net.name
        key = sorted(stored)[0]
        assert mx.array_equal(loaded[key], stored[key]).item()
    from chatterbox_mlx.voice.conditionals import Conditionals

    assert isinstance(parts.conds, Conditionals)
    assert parts.conds.t3.speaker_emb.shape == (1, 256)
    assert parts.conds.gen.prompt_feat.shape == (1, 500, 80)


# ---------------------------------------------------------------------------- quantized


def test_quantized_conversion_loads_and_runs(tmp_path):
    source = make_source(tmp_path / "source", "nano", seed=1)
    out = tmp_path / "nano-q4"
    code = convert.main(["--hf-path", str(source), "--mlx-path", str(out), "-q", "--q-bits", "4"])
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    assert config["quantization"] == {"bits": 4, "group_size": 64, "networks": ["t3"]}
    t3_file = mx.load(str(out / "t3.safetensors"))
    assert t3_file["tfmr.h.0.attn.c_attn.weight"].dtype == mx.uint32
    assert "tfmr.h.0.attn.c_attn.scales" in t3_file
    assert t3_file["speech_head.weight"].dtype == mx.float32  # heads stay float
    assert mx.load(str(out / "flow.safetensors"))["input_embedding.weight"].dtype == mx.float32

    parts = hub.load_components(out, networks=("t3",))
    assert parts.flow is None
    from chatterbox_mlx.models.t3 import T3Cond

    conds = mx.load(str(out / "conds.safetensors"))
    cond = T3Cond(
        speaker_emb=conds["t3.speaker_emb"],
        cond_prompt_speech_tokens=conds["t3.cond_prompt_speech_tokens"][:, :20],
    )
    text_logits, speech_logits = parts.t3(cond, mx.array([[1, 2, 3, 4]]), mx.array([[6561, 5]]))
    assert speech_logits.shape == (1, 2, 6563) and text_logits.shape == (1, 4, 50276)
    assert bool(mx.all(mx.isfinite(speech_logits)).item())


def test_dtype_applies_to_the_generation_networks():
    """--dtype casts T3/flow/HiFT; the voice-cloning front end stays float32."""
    s3gen = mx.load(str(cached_checkpoint("s3gen")))
    var = get_variant("english")
    for name, want in (("hift", mx.bfloat16), ("campplus", mx.float32)):
        net = next(n for n in checkpoint.NETWORKS if n.name == name)
        config = net.default_config(var)
        params = convert.convert_network(net, s3gen, config, "bfloat16", None, "s3gen")
        floats = {v.dtype for v in params.values() if mx.issubdtype(v.dtype, mx.floating)}
        assert floats == {want}, name
        assert net.stored_dtype("bfloat16") == str(want).split(".")[-1]


# ---------------------------------------------------------------------------- variants


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


# ---------------------------------------------------------------------------- bad input


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


def assert_no_output(out: Path) -> None:
    assert not out.exists()
    assert not leftovers(out)


def test_missing_file_names_it_and_how_to_get_it(small_source, tmp_path):
    (small_source / "tokenizer.json").unlink()
    (small_source / "conds.pt").unlink()
    out = tmp_path / "out"
    with pytest.raises(hub.MissingFilesError) as err:
        convert.convert(small_source, out)
    assert "tokenizer.json" in str(err.value) and "conds.pt" in str(err.value)
    assert "huggingface-cli download ResembleAI/chatterbox" in str(err.value)
    assert_no_output(out)


def test_truncated_safetensors(small_source, tmp_path):
    ve = small_source / "ve.safetensors"
    ve.write_bytes(ve.read_bytes()[:4096])
    out = tmp_path / "out"
    with pytest.raises(CheckpointError, match="ve.safetensors.*truncated"):
        convert.convert(small_source, out)
    assert_no_output(out)


def test_wrong_shape_names_the_tensor(small_source, tmp_path):
    write_checkpoint(
        "ve", small_source, transform=lambda k, v: v[:, :-1] if k == "proj.weight" else v
    )
    out = tmp_path / "out"
    with pytest.raises(CheckpointError, match=r"wrong shape proj\.weight: \(256, 255\)"):
        convert.convert(small_source, out)
    assert_no_output(out)


def test_unexpected_and_missing_tensors_are_listed(small_source, tmp_path):
    write_checkpoint("ve", small_source, drop=("proj.bias",))
    out = tmp_path / "out"
    with pytest.raises(CheckpointError, match=r"missing proj\.bias"):
        convert.convert(small_source, out)
    assert_no_output(out)


def test_unknown_variant(small_source, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(UnknownVariantError, match="unknown variant 'klingon'"):
        convert.convert(small_source, out, variant="klingon")
    with pytest.raises(hub.MissingFilesError, match="t3_turbo_v1.safetensors"):
        convert.convert(small_source, out, variant="turbo")  # its files are not there
    assert_no_output(out)


def test_unwritable_output(small_source, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(convert.ConversionError, match="cannot write to"):
        convert.convert(small_source, blocker / "out")
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(convert.ConversionError, match="already exists"):
        convert.convert(small_source, existing)
    assert list(existing.iterdir()) == []


def test_bad_options(small_source, tmp_path):
    with pytest.raises(convert.ConversionError, match="unknown dtype"):
        convert.convert(small_source, tmp_path / "out", dtype="float8")
    with pytest.raises(convert.ConversionError, match="q-bits"):
        convert.convert(small_source, tmp_path / "out", quantize=True, q_bits=3)
    with pytest.raises(convert.ConversionError, match="q-group-size"):
        convert.convert(small_source, tmp_path / "out", quantize=True, q_group_size=100)
    assert convert.main(["--hf-path", str(tmp_path / "nowhere"), "--mlx-path", "x"]) == 1
    assert_no_output(tmp_path / "out")


def test_s3gen_without_mel_buffers_converts():
    """Upstream lets tokenizer._mel_filters / tokenizer.window be absent: both work."""
    s3gen = mx.load(str(cached_checkpoint("s3gen")))
    tokenizer = {k: v for k, v in s3gen.items() if k.startswith("tokenizer.")}
    net = next(n for n in checkpoint.NETWORKS if n.name == "s3tokenizer")
    config = net.default_config(get_variant("english"))
    with_buffers = convert.convert_network(net, tokenizer, config, "float32", None, "s3gen")
    trimmed = {k: v for k, v in tokenizer.items() if not k.endswith(("_mel_filters", "window"))}
    without = convert.convert_network(net, trimmed, config, "float32", None, "s3gen")
    assert sorted(with_buffers) == sorted(without)


def test_stray_s3gen_tensor_is_refused():
    weights = {"flow.x": mx.zeros(1), "decoder.extra": mx.zeros(2)}
    with pytest.raises(CheckpointError, match="decoder.extra"):
        convert.check_prefixes("s3gen", weights, "s3gen.safetensors")


def test_torch_pickle_state_dict_fallback(tmp_path):
    """Multilingual's ve.pt / s3gen.pt are read without torch when .safetensors is absent."""
    weights = random_weights("ve")
    write_torch_zip(tmp_path / "ve.pt", weights)
    var = get_variant("multilingual")
    path = originals.source_path(tmp_path, var, "ve.safetensors")
    assert path.name == "ve.pt"
    loaded = convert.load_tensors(path)
    assert sorted(loaded) == sorted(weights)
    for key, value in weights.items():
        np.testing.assert_array_equal(np.asarray(loaded[key]), value)


# ---------------------------------------------------------------------------- hub


def fake_hf_cache(root: Path, repo: str, files: dict[str, Path]) -> Path:
    """A Hugging Face cache entry (refs/main -> snapshot) holding ``files``."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    entry = root / f"models--{repo.replace('/', '--')}"
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(commit)
    snap = entry / "snapshots" / commit
    snap.mkdir(parents=True)
    for name, target in files.items():
        os.symlink(target, snap / name)
    return snap


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("CHATTERBOX_MLX_CACHE", str(tmp_path / "mlx-cache"))
    return cache


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


def test_upload_writes_a_card_and_uploads_the_folder(tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:
        def create_repo(self, **kwargs):
            calls.append(("create_repo", kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    convert.upload_to_hub(tmp_path, "me/chatterbox-turbo-mlx", get_variant("turbo"))
    assert "base_model: ResembleAI/chatterbox-turbo" in (tmp_path / "README.md").read_text()
    assert calls == [
        ("create_repo", {"repo_id": "me/chatterbox-turbo-mlx", "exist_ok": True}),
        (
            "upload_folder",
            {
                "folder_path": str(tmp_path),
                "repo_id": "me/chatterbox-turbo-mlx",
                "repo_type": "model",
            },
        ),
    ]


def test_top_level_script_help():
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, str(root / "convert.py"), "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    for option in (
        "--hf-path",
        "--mlx-path",
        "--q-bits",
        "--q-group-size",
        "--dtype",
        "--upload-repo",
    ):
        assert option in result.stdout


# ---------------------------------------------------------------------------- layering


def test_imports_run_one_way():
    """layout (format) and originals (source files) import neither the converter nor
    hub; the converter does not import hub; nothing calls a module ``conv``."""
    import ast

    package = Path(checkpoint.__file__).parent

    def imported(module: str) -> set[str]:
        tree = ast.parse((package / f"{module}.py").read_text())
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names |= {node.module} if node.module else {a.name for a in node.names}
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                assert all(a.asname != "conv" for a in node.names), module
        return {n.split(".")[0] for n in names}

    assert not imported("layout") & {"hub", "convert", "originals"}
    assert not imported("originals") & {"hub", "convert", "layout"}
    assert "hub" not in imported("convert")
    assert {"layout", "convert", "originals"} <= imported("hub")
    for net in checkpoint.NETWORKS:  # direct references, no importlib strings
        assert isinstance(net.config_class, type) and isinstance(net.model_class, type)
        assert callable(net.sanitize) and net.sanitize.__module__.startswith("chatterbox_mlx.")


# ---------------------------------------------------------------------------- config.json


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


@pytest.mark.parametrize("dtype", [mx.float32, mx.float16, mx.bfloat16])
def test_finiteness_is_checked_in_batches(monkeypatch, dtype):
    """One reduction per tensor, ``FINITE_BATCH`` tensors per evaluation (not one each),
    on the numpy path (float32/16 on the CPU) and the MLX one (bfloat16) alike."""
    from chatterbox_mlx.models import weights as weights_mod

    evaluated = []
    real_eval = mx.eval

    def counting_eval(*args):
        evaluated.append(len(tree_flatten(list(args))))
        return real_eval(*args)

    monkeypatch.setattr(weights_mod.mx, "eval", counting_eval)
    tensors = {f"w{i}": mx.ones((3, 3), dtype=dtype) for i in range(150)}
    tensors["w7"] = mx.array([1.0, float("nan")], dtype=dtype)
    tensors["w99"] = mx.array([float("inf"), -float("inf"), 0.0], dtype=dtype)
    tensors["ids"] = mx.array([1, 2], dtype=mx.int32)  # not floating: skipped
    assert weights_mod.non_finite(tensors) == {"w7": 1, "w99": 2}
    batch, floating = weights_mod.FINITE_BATCH, 150
    assert evaluated == [min(batch, floating - i) for i in range(0, floating, batch)]


# ---------------------------------------------------------------------------- the CLI


def test_source_is_positional_or_hf_path(tmp_path):
    parser = convert.build_parser()
    a = parser.parse_args(["ResembleAI/chatterbox-turbo", "-o", "out", "-q", "--q-bits", "8"])
    b = parser.parse_args(["--hf-path", "ResembleAI/chatterbox-turbo", "--mlx-path", "out"])
    assert (a.source or a.hf_path) == (b.source or b.hf_path) == "ResembleAI/chatterbox-turbo"
    assert a.mlx_path == b.mlx_path == "out" and a.quantize and a.q_bits == 8


def all_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _nan_ve(source: Path) -> None:
    def poison(key, value):
        if key == "proj.bias":
            value = value.copy()
            value[:2] = [np.nan, np.inf]
        return value

    write_checkpoint("ve", source, transform=poison)


def _hostile_conds(source: Path) -> None:
    from tests.helpers.torch_zip import StridedTensor

    obj = conds_object("english")
    obj["gen"]["prompt_feat"] = StridedTensor(np.ones(1, np.float32), (10**6, 10**6), (0, 0))
    write_torch_zip(source / "conds.pt", obj)


def _unsafe_conds(source: Path) -> None:
    write_conds(source / "conds.pt", extra_global=("os", "system"), extra_args=("true",))


def _blocker(tmp_path: Path) -> Path:
    (tmp_path / "a_file").write_text("not a directory")
    return tmp_path / "a_file" / "out"


def _existing(tmp_path: Path) -> Path:
    (tmp_path / "existing").mkdir()
    return tmp_path / "existing"


# id, damage to the source, output (default tmp/out), arguments ({src}, {out}), exit code,
# the first line printed (regex), a detail line printed below it (regex) or None
CLI_CASES = [
    ("no source", None, None, ["-o", "{out}"], 2, r"usage: convert\.py", None),
    ("two sources", None, None, ["{src}", "--hf-path", "{src}"], 2, r"usage:", None),
    ("bad dtype", None, None, ["{src}", "-o", "{out}", "--dtype", "float8"], 2, r"usage:", None),
    ("bad q-bits", None, None, ["{src}", "-o", "{out}", "-q", "--q-bits", "3"], 2, "usage:", None),
    (
        "nowhere", None, None, ["{src}/no/such/dir", "-o", "{out}"], 1,
        r"error: .*/no/such/dir is neither a checkpoint directory nor a hub repo id$", None,
    ),
    (
        "bad group size", None, None, ["{src}", "-o", "{out}", "-q", "--q-group-size", "100"], 1,
        r"error: --q-group-size must be 32, 64 or 128, got 100$", None,
    ),
    (
        "unknown variant", None, None, ["{src}", "-o", "{out}", "--variant", "klingon"], 1,
        r"error: unknown variant 'klingon'; choose one of: english", None,
    ),
    (
        "output exists", None, _existing, ["{src}", "-o", "{out}"], 1,
        r"error: cannot save to .*existing: it already exists\.", None,
    ),
    (
        "unwritable output", None, _blocker, ["{src}", "--mlx-path", "{out}"], 1,
        r"error: cannot write to .*a_file: .*\. Choose a writable --mlx-path\.$", None,
    ),
    (
        "missing files", lambda s: (s / "tokenizer.json").unlink(), None, ["{src}", "-o", "{out}"],
        1, r"error: .*source lacks 1 file\(s\) of the english checkpoint: tokenizer\.json\.$",
        r"^  Get them with: huggingface-cli download ResembleAI/chatterbox tokenizer\.json",
    ),
    (
        "variant files absent", None, None, ["{src}", "-o", "{out}", "--variant", "turbo"], 1,
        r"error: .* of the turbo checkpoint: t3_turbo_v1\.safetensors, s3gen_meanflow",
        r"^  Get them with: huggingface-cli download ResembleAI/chatterbox-turbo",
    ),
    (
        "truncated tensor file",
        lambda s: (s / "ve.safetensors").write_bytes((s / "ve.safetensors").read_bytes()[:4096]),
        None, ["{src}", "-o", "{out}"], 1, r"error: cannot read .*ve\.safetensors: .*truncated",
        None,
    ),
    (
        "wrong shape",
        lambda s: write_checkpoint(
            "ve", s, transform=lambda k, v: v[:, :-1] if k == "proj.weight" else v
        ),
        None, ["{src}", "-o", "{out}"], 1,
        r"error: VE \(ve\.safetensors\): checkpoint does not match the model \(1 problem\):$",
        r"^  wrong shape proj\.weight: \(256, 255\), expected \(256, 256\)$",
    ),
    (
        "non-finite tensor", _nan_ve, None, ["{src}", "-o", "{out}"], 1,
        r"error: VE \(ve\.safetensors\): 1 tensor with NaN or infinite values",
        r"^  non-finite proj\.bias: 2 NaN or infinite of 256 values$",
    ),
    (
        "unsafe pickle", _unsafe_conds, None, ["{src}", "-o", "{out}"], 1,
        r"error: .*conds\.pt: refusing to load global 'os\.system'", None,
    ),
    (
        "tensor past its storage", _hostile_conds, None, ["{src}", "-o", "{out}"], 1,
        r"error: .*conds\.pt: tensor gen\.prompt_feat .* spans 1000000000000 elements .* "
        r"holds 1 elements", None,
    ),
    (
        "not a voice", lambda s: write_torch_zip(s / "conds.pt", {"x": 1}), None,
        ["{src}", "-o", "{out}"], 1, r"error: .*conds\.pt: not a Chatterbox built-in voice", None,
    ),
    (
        "offline repo", None, None, ["ResembleAI/chatterbox-nano", "-o", "{out}"], 1,
        r"error: cannot get ResembleAI/chatterbox-nano: offline \(HF_HUB_OFFLINE is set\)\. "
        r"Files needed: ve\.safetensors t3_nano_v1\.safetensors",
        r"^  Download them while online \(unset HF_HUB_OFFLINE\): huggingface-cli download "
        r"ResembleAI/chatterbox-nano ve\.safetensors",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    "damage,output,args,code,first,detail",
    [c[1:] for c in CLI_CASES],
    ids=[c[0] for c in CLI_CASES],
)
def test_cli_bad_input(
    small_source, hf_cache, tmp_path, capsys, damage, output, args, code, first, detail
):
    """Each bad input: its exit code, the first line printed, the detail lines below it,
    no traceback, and no file or temporary left anywhere."""
    import re

    if damage is not None:
        damage(small_source)
    out = output(tmp_path) if output else tmp_path / "out"
    before = all_files(tmp_path)
    argv = [a.format(src=small_source, out=out) for a in args]
    try:
        exit_code = convert.main(argv)
    except SystemExit as stop:  # argparse's usage errors
        exit_code = stop.code
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert exit_code == code, captured.err
    assert captured.out == "" and "Traceback" not in captured.err
    first_line = lines[0] if code == 1 else captured.err
    assert re.search(first, first_line), captured.err
    if code == 1:
        assert lines[0].startswith("error: ")
        assert all(line.startswith("  ") for line in lines[1:]), captured.err
    if detail is not None:
        assert any(re.search(detail, line) for line in lines[1:]), captured.err
    assert all_files(tmp_path) == before  # nothing written, no temporary left


@pytest.mark.parametrize(
    "signum,code,said",
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")],
    ids=["ctrl-c", "sigterm"],
)
def test_signal_mid_conversion_removes_the_temporary(tmp_path, signum, code, said):
    """The real script, signalled once the first network is written: no traceback, the
    exit code of the signal, a line saying so, and nothing left beside the output."""
    source = make_source(tmp_path / "source", "nano")
    out = tmp_path / "out"
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, HF_HUB_OFFLINE="1", CHATTERBOX_MLX_CACHE=str(tmp_path / "cache"))
    proc = subprocess.Popen(
        [sys.executable, str(root / "convert.py"), str(source), "-o", str(out)],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # a shell's background job ignores SIGINT; the user's terminal does not
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        for _ in range(12_000):  # at most ~4 minutes
            if list(tmp_path.glob(".out.*.tmp/voice_encoder.safetensors")):
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        else:
            pytest.fail("the conversion never wrote its first network")
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and stdout == ""
    assert stderr.splitlines()[-1] == (
        f"{said}: the unfinished conversion was removed; nothing was written to {out}"
    )
    assert not out.exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]

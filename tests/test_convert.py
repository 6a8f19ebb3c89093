"""The converter (checkpoints.convert): original checkpoints to the MLX layout.

Full-size, real-layout random checkpoints (tests/helpers/checkpoints.py) of every
variant are converted once per module; each network's converted parameters are compared
exactly with the source tensors after the documented transforms. Then quantization,
dtypes, bad input (nothing written, no temporary left), the upload to the hub, and the
direction of the imports inside chatterbox_mlx.checkpoints.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from chatterbox_mlx.checkpoints import convert, hub, originals
from chatterbox_mlx.checkpoints import layout as checkpoint
from chatterbox_mlx.models.weights import CheckpointError, fold_weight_norm, strip_prefix
from chatterbox_mlx.variants import UnknownVariantError, get_variant

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from tests.helpers.checkpoints import cached_checkpoint, write_checkpoint
from tests.helpers.conversions import assert_no_output, leftovers
from tests.helpers.sources import make_source
from tests.helpers.torch_zip import conds_object

pytestmark = pytest.mark.usefixtures("offline_env")

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


def source_of(directory: Path, variant: str, name: str) -> dict[str, mx.array]:
    var = get_variant(variant)
    files = {"t3": var.t3_file, "s3gen": var.s3gen_file, "ve": var.ve_file}
    return mx.load(str(directory / files[name]))


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_parameters_match_source(converted):
    variant, source, out = converted
    for name in CHECKED_SOURCES[variant]:
        weights = source_of(source, variant, name)
        for net in checkpoint.NETWORKS:
            if net.source == name:
                check_network(net, weights, out)
        del weights


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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

"""S3Gen flow (conformer encoder + CFM U-Net + Euler/CFG and meanflow solvers) against
the PyTorch reference (goldens from tests/reference/gen_flow.py).

Tolerance: 1e-4 of the reference signal's max abs value (float32 parity, DEVELOPING.md).
The solves feed the estimator's output back 10 (or 2) times; float32 rounding differences
between torch and MLX (matmul order, erf, softmax) stay well below that.
"""

from __future__ import annotations

from dataclasses import replace

from chatterbox_mlx import cpu
from chatterbox_mlx.models.flow import (
    MIXER_KEY,
    CausalMaskedDiffWithXvec,
    FlowConfig,
    load_flow,
    sanitize,
)
from chatterbox_mlx.models.flow_decoder import DecoderConfig
from chatterbox_mlx.models.flow_encoder import EncoderConfig
from chatterbox_mlx.models.weights import CheckpointError, load_strict

import mlx.core as mx
import numpy as np
import pytest

from tests.helpers.checkpoints import cached_checkpoint, random_tensor
from tests.helpers.golden import assert_close, load_golden

RTOL = 1e-4
SEED = 11  # gen_flow.py
ENCODER = EncoderConfig(linear_units=256, num_blocks=2)
DECODER = DecoderConfig(
    channels=(64,), attention_head_dim=32, n_blocks=1, num_mid_blocks=2, num_heads=2
)
FLOW_CONFIGS = {
    "cfg": (FlowConfig(encoder=ENCODER, decoder=DECODER), SEED),
    "mf": (
        FlowConfig(
            encoder=ENCODER,
            decoder=replace(DECODER, meanflow=True),
            meanflow=True,
            n_timesteps=2,
        ),
        SEED + 1,
    ),
    "ml": (
        FlowConfig(
            encoder=ENCODER,
            decoder=replace(DECODER, channels=(32, 48), num_mid_blocks=1),
        ),
        SEED + 2,
    ),
}


@pytest.fixture(scope="module")
def golden():
    return load_golden("flow")


def reference_weights(golden, name: str) -> dict[str, mx.array]:
    """The reduced reference's state_dict, rebuilt from its keys and shapes."""
    seed = FLOW_CONFIGS[name][1]
    out = {}
    for key, shape in zip(golden[f"{name}__keys"], golden[f"{name}__shapes"], strict=True):
        shape = tuple(int(s) for s in str(shape).split(",") if s)
        out[str(key)] = mx.array(random_tensor(str(key), shape, "float32", seed))
    return out


@pytest.fixture(scope="module")
def models(golden):
    built = {}
    for name, (config, _) in FLOW_CONFIGS.items():
        model = CausalMaskedDiffWithXvec(config)
        load_strict(model, sanitize(reference_weights(golden, name)), f"flow {name}")
        built[name] = model
    return built


def run_case(model, golden, name):
    return model(
        golden[f"{name}__tokens"],
        golden[f"{name}__prompt_tokens"],
        golden[f"{name}__prompt_feat"],
        golden[f"{name}__embedding"],
        noise=mx.array(golden[f"{name}__noise"]),
    )


def estimator_out(model, g, name, meanflow=False):
    est = model.decoder.estimator
    r = mx.array(g[f"{name}__r"]) if meanflow else None
    args = [mx.array(g[f"{name}__{k}"]) for k in ("x", "mu", "t", "spks", "cond")]
    return est(*args, r=r)


@pytest.mark.golden
def test_encoder_reduced(models, golden):
    model = models["cfg"]
    h = model.encoder(model.input_embedding(mx.array(golden["cfg_encoder__tokens"])[None]))
    assert_close(h, golden["cfg_encoder__h"], RTOL, "encoder")


@pytest.mark.golden
@pytest.mark.parametrize("name", ["cfg", "mf", "ml"])
def test_estimator_reduced(models, golden, name):
    out = estimator_out(models[name], golden, f"{name}_estimator", meanflow=name == "mf")
    assert_close(out, golden[f"{name}_estimator__out"], RTOL, f"{name} estimator")


@pytest.mark.golden
def test_estimator_first_call_of_cfg_solve(models, golden):
    # the CFG batch the reference's solver built: unconditional rows have zero mu/spks/cond
    g = "cfg_prompt_first"
    assert np.all(golden[f"{g}__mu"][1] == 0) and np.all(golden[f"{g}__cond"][1] == 0)
    out = estimator_out(models["cfg"], golden, g)
    assert_close(out, golden[f"{g}__out"], RTOL, "first estimator call")


@pytest.mark.golden
@pytest.mark.parametrize(
    "name",
    [
        "cfg_prompt",
        "cfg_noprompt_1",
        "cfg_prompt_1",
        "cfg_oddmel",
        pytest.param("cfg_long", marks=pytest.mark.slow),
    ],
)
def test_cfg_solve_reduced(models, golden, name):
    mel = run_case(models["cfg"], golden, name)
    assert_close(mel, golden[f"{name}__mel"], RTOL, name)


@pytest.mark.golden
@pytest.mark.parametrize("name", ["mf_prompt", "mf_noprompt"])
def test_meanflow_solve_reduced(models, golden, name):
    mel = run_case(models["mf"], golden, name)
    assert_close(mel, golden[f"{name}__mel"], RTOL, name)


@pytest.mark.golden
def test_prompt_mel_longer_than_tokens_trims_tokens_like_embed_ref(models, golden):
    # embed_ref keeps len(prompt_feat) // 2 prompt tokens; extra tokens must not change a thing
    g = "cfg_prompt"
    extra = np.concatenate([golden[f"{g}__prompt_tokens"], [5, 6, 7]])
    mel = models["cfg"](
        golden[f"{g}__tokens"],
        extra,
        golden[f"{g}__prompt_feat"],
        golden[f"{g}__embedding"],
        noise=mx.array(golden[f"{g}__noise"]),
    )
    assert_close(mel, golden[f"{g}__mel"], RTOL, "trimmed prompt")


@pytest.mark.golden
def test_special_tokens_are_dropped(models, golden):
    g = "cfg_prompt"
    tokens = golden[f"{g}__tokens"]
    with_specials = np.concatenate([[6561], tokens[:4], [6562], tokens[4:], [6561 + 100]])
    mel = models["cfg"](
        with_specials,
        golden[f"{g}__prompt_tokens"],
        golden[f"{g}__prompt_feat"],
        golden[f"{g}__embedding"],
        noise=mx.array(golden[f"{g}__noise"]),
    )
    assert_close(mel, golden[f"{g}__mel"], RTOL, "dropped specials")


@pytest.mark.golden
def test_bad_inputs(models, golden):
    model = models["cfg"]
    g = "cfg_prompt"
    pt, pf, emb = (golden[f"{g}__{k}"] for k in ("prompt_tokens", "prompt_feat", "embedding"))
    with pytest.raises(ValueError, match="tokens is empty"):
        model(np.zeros(0, np.int64), pt, pf, emb)
    with pytest.raises(ValueError, match="tokens is empty"):
        model(np.array([6561, 6562]), pt, pf, emb)
    with pytest.raises(ValueError, match="2 frames per token"):
        model(np.array([1, 2]), pt, np.zeros((2 * len(pt) + 2, 80), np.float32), emb)
    with pytest.raises(ValueError, match="prompt_feat must be"):
        model(np.array([1, 2]), pt, pf.T, emb)
    with pytest.raises(ValueError, match="embedding must be"):
        model(np.array([1, 2]), pt, pf, emb[:80])
    with pytest.raises(ValueError, match="noise has shape"):
        model(np.array([1, 2]), pt, pf, emb, noise=mx.zeros((1, 3, 80)))
    with pytest.raises(ValueError, match="batch"):
        model(np.array([[1, 6561], [2, 3]]), pt, pf, emb)
    with pytest.raises(TypeError, match="integer"):
        model(np.array([1.5]), pt, pf, emb)


@pytest.mark.golden
def test_random_noise_by_key(models, golden):
    g = "mf_prompt"
    args = [golden[f"{g}__{k}"] for k in ("tokens", "prompt_tokens", "prompt_feat", "embedding")]
    a = models["mf"](*args, key=mx.random.key(3))
    b = models["mf"](*args, key=mx.random.key(3))
    c = models["mf"](*args, key=mx.random.key(4))
    assert a.shape == (1, 18, 80)
    assert np.array_equal(np.array(a), np.array(b))
    assert not np.allclose(np.array(a), np.array(c))


@pytest.mark.golden
def test_sanitize_names_missing_and_misshaped_tensors(golden):
    weights = reference_weights(golden, "cfg")
    config = FLOW_CONFIGS["cfg"][0]
    missing = dict(weights)
    del missing["encoder.encoders.1.self_attn.linear_pos.weight"]
    with pytest.raises(CheckpointError, match=r"missing encoder\.encoders\.1\.self_attn"):
        load_strict(CausalMaskedDiffWithXvec(config), sanitize(missing), "flow")
    bad = dict(weights)
    key = "decoder.estimator.mid_blocks.1.1.0.attn1.to_q.weight"
    bad[key] = bad[key][:, :10]
    with pytest.raises(CheckpointError, match=r"wrong shape .*mid_blocks\.1\.transformer_blocks"):
        load_strict(CausalMaskedDiffWithXvec(config), sanitize(bad), "flow")
    extra = dict(weights)
    extra["encoder.encoders.9.norm_ff.weight"] = mx.zeros((512,))
    with pytest.raises(CheckpointError, match=r"unexpected encoder\.encoders\.9"):
        load_strict(CausalMaskedDiffWithXvec(config), sanitize(extra), "flow")


# ---------------------------------------------------------------- full size


@pytest.fixture(scope="module")
def golden_full():
    return load_golden("flow_full")


@pytest.fixture(scope="module")
def full_models():
    return {
        "cfg": load_flow(cached_checkpoint("s3gen")),
        "mf": load_flow(cached_checkpoint("s3gen_meanflow")),
    }


def test_full_variant_detection(full_models):
    assert not full_models["cfg"].config.meanflow
    assert full_models["mf"].config.meanflow
    assert "time_embed_mixer" in full_models["mf"].decoder.estimator


@pytest.mark.golden
def test_full_encoder(full_models, golden_full):
    model = full_models["cfg"]
    h = model.encoder(model.input_embedding(mx.array(golden_full["cfg_encoder__tokens"])[None]))
    assert_close(h, golden_full["cfg_encoder__h"], RTOL, "full encoder")


@pytest.mark.golden
@pytest.mark.parametrize("name", ["cfg", "mf"])
def test_full_estimator_call(full_models, golden_full, name):
    out = estimator_out(full_models[name], golden_full, f"{name}_first", meanflow=name == "mf")
    assert_close(out, golden_full[f"{name}_first__out"], RTOL, f"full {name} estimator")


@pytest.mark.golden
@pytest.mark.parametrize("name", [pytest.param("cfg", marks=pytest.mark.slow), "mf"])
def test_full_solve(full_models, golden_full, name):
    mel = run_case(full_models[name], golden_full, f"{name}_solve")
    assert_close(mel, golden_full[f"{name}_solve__mel"], RTOL, f"full {name} solve")


def test_meanflow_file_needs_meanflow_config():
    from chatterbox_mlx.models.weights import load_safetensors, strip_prefix

    weights = strip_prefix(load_safetensors(cached_checkpoint("s3gen_meanflow")), "flow.")
    assert MIXER_KEY in weights
    with pytest.raises(CheckpointError, match="unexpected decoder.estimator.time_embed_mixer"):
        load_strict(CausalMaskedDiffWithXvec(FlowConfig.english()), sanitize(weights), "flow")


def test_config_variant_mismatch_is_an_error():
    config = replace(FLOW_CONFIGS["cfg"][0], meanflow=True)
    with pytest.raises(ValueError, match="FlowConfig.meanflow"):
        CausalMaskedDiffWithXvec(config)


def test_config_round_trips_and_refuses_unknown_fields():
    import dataclasses
    import json

    for config, _ in FLOW_CONFIGS.values():
        stored = json.loads(json.dumps(dataclasses.asdict(config)))  # as config.json holds it
        assert FlowConfig.from_dict(stored) == config
    stored = dataclasses.asdict(FlowConfig.meanflow_config())
    with pytest.raises(ValueError, match="FlowConfig.decoder: unknown fields \\['heads'\\]"):
        FlowConfig.from_dict({**stored, "decoder": {**stored["decoder"], "heads": 4}})
    with pytest.raises(ValueError, match="FlowConfig.n_timesteps: expected int"):
        FlowConfig.from_dict({"n_timesteps": "2"})


@pytest.mark.golden
def test_euler_step_is_compiled_only_where_layers_are_compilable(models):
    """On the CPU with the CPU kernels on, attention leaves MLX's graph, so the step runs
    uncompiled; with them off (what a GPU runs) the whole step is compiled, once."""
    cfm = models["cfg"].decoder
    with cpu.switch(True):
        assert cfm._step("cfg") == cfm._cfg_step_impl
    with cpu.switch(False):
        compiled = cfm._step("cfg")
        assert compiled != cfm._cfg_step_impl and cfm._step("cfg") is compiled

"""T3 parity with the PyTorch reference (goldens from tests/reference/gen_t3.py).

Tolerances: 1e-4 relative (the project's float32 target) for embeddings, logits and
processed probabilities; the measured errors are ~1e-6 at reduced size. Processors on
fixed logits are elementwise float32 ops, so they must match to 1e-6 with identical -inf
masks. Tokens must be identical.
"""

from __future__ import annotations

import json
from dataclasses import replace

import chatterbox_mlx  # noqa: F401  (BLAS before mlx.core)
from chatterbox_mlx.models.t3 import (
    T3,
    Sampler,
    T3Cond,
    T3Config,
    load_t3,
    quantize_t3,
    sanitize,
)
from chatterbox_mlx.models.t3 import sampling as smp
from chatterbox_mlx.models.weights import CheckpointError, load_safetensors, load_strict

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from tests.helpers.checkpoints import cached_checkpoint, layout, random_tensor
from tests.helpers.golden import assert_close, load_golden

RTOL = 1e-4

SMALL = {
    "llama": T3Config(
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        intermediate_size=128,
        speech_vocab_size=512,
        start_speech_token=510,
        stop_speech_token=511,
        max_text_tokens=62,
        max_speech_tokens=124,
        perceiver_queries=8,
        perceiver_heads=4,
    ),
    "gpt2": replace(
        T3Config.turbo(),
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=4,
        head_dim=16,
        intermediate_size=256,
        max_position_embeddings=256,
        text_vocab_size=1000,
        speech_vocab_size=512,
        start_speech_token=510,
        stop_speech_token=511,
    ),
}

# the generation runs of gen_t3.py, same arguments
RUNS = {
    "llama": {
        "gen_default": dict(max_new_tokens=24),
        "gen_custom": dict(
            max_new_tokens=16,
            temperature=1.3,
            top_p=0.8,
            min_p=0.02,
            repetition_penalty=2.0,
            cfg_weight=1.0,
        ),
    },
    "gpt2": {
        "gen_default": dict(max_gen_len=20),
        "gen_custom": dict(
            max_gen_len=15, temperature=1.0, top_k=40, top_p=1.0, repetition_penalty=1.5
        ),
    },
}


@pytest.fixture(scope="module")
def golden():
    return load_golden("t3")


def build_small(golden, variant: str) -> T3:
    shapes = json.loads(str(golden[f"{variant}_layout"]))
    weights = {k: mx.array(random_tensor(k, tuple(s), "float32", 0)) for k, s in shapes.items()}
    return load_t3(T3(SMALL[variant]), weights)


@pytest.fixture(scope="module")
def small_models(golden):
    return {v: build_small(golden, v) for v in SMALL}


def cond_from(g, prefix: str) -> T3Cond:
    emotion = g.get(f"{prefix}_emotion")
    return T3Cond(
        speaker_emb=mx.array(g[f"{prefix}_speaker"]),
        cond_prompt_speech_tokens=mx.array(g[f"{prefix}_prompt"]),
        emotion_adv=None if emotion is None else float(emotion),
    )


def steps_of(model: T3, cond, text, noise, **kwargs):
    """The one decode loop with the variant's sampler; ``max_gen_len`` as upstream's
    Turbo loop counts it (one token more)."""
    if model.config.is_gpt2:
        count = kwargs.pop("max_gen_len", 1000) + 1
        sampler = Sampler.turbo(**kwargs)
    else:
        count = kwargs.pop("max_new_tokens", 1000)
        sampler = Sampler.cfg(**kwargs)
    return list(model.generate_steps(cond, text, sampler, max_new_tokens=count, noise=noise))


def check_generation(model, g, prefix, run, kwargs):
    """The port's loop fed the reference's Exp(1) draws: every step's processed
    probabilities match and every sampled token is the reference's."""
    text = mx.array(g[f"{prefix}_text"])
    ref_probs = g[f"{prefix}_{run}_probs"]
    ref_sampled = g[f"{prefix}_{run}_sampled"]
    steps = steps_of(
        model, cond_from(g, prefix), text, mx.array(g[f"{prefix}_{run}_noise"]), **kwargs
    )
    assert [s.token for s in steps] == ref_sampled.tolist()
    for step in steps:
        assert_close(step.probs[0], ref_probs[step.index], RTOL, f"{run} step {step.index} probs")


def assert_same_with_inf(actual, expected, rtol, name):
    actual, expected = np.asarray(actual), np.asarray(expected)
    np.testing.assert_array_equal(np.isneginf(actual), np.isneginf(expected), err_msg=name)
    finite = np.isfinite(expected)
    assert_close(actual[finite], expected[finite], rtol, name)


# ----------------------------------------------------------------------------- reduced size


@pytest.mark.golden
@pytest.mark.parametrize("variant", ["llama", "gpt2"])
def test_conditioning(small_models, golden, variant):
    cond = small_models[variant].prepare_conditioning(cond_from(golden, variant))
    assert_close(cond, golden[f"{variant}_cond_emb"], RTOL, "cond_emb")


@pytest.mark.golden
def test_conditioning_without_prompt_and_cfg_embeds(small_models, golden):
    model = small_models["llama"]
    cond = T3Cond(mx.array(golden["llama_speaker"]), None, 0.3)
    assert_close(model.prepare_conditioning(cond), golden["llama_cond_emb_noprompt"], RTOL, "cond")
    text = mx.array(np.concatenate([golden["llama_text"]] * 2))
    embeds, _ = model.prepare_input_embeds(
        cond_from(golden, "llama"), text, mx.full((2, 1), 510), cfg_weight=0.5
    )
    assert_close(embeds, golden["llama_cfg_embeds"], RTOL, "cfg embeds")


@pytest.mark.golden
@pytest.mark.parametrize("variant", ["llama", "gpt2"])
def test_teacher_forced_logits(small_models, golden, variant):
    text_logits, speech_logits = small_models[variant](
        cond_from(golden, variant),
        mx.array(golden[f"{variant}_text"]),
        mx.array(golden[f"{variant}_speech"]),
    )
    assert_close(text_logits, golden[f"{variant}_text_logits"], RTOL, "text logits")
    assert_close(speech_logits, golden[f"{variant}_speech_logits"], RTOL, "speech logits")


def incremental_speech_logits(model: T3, cond, text, speech) -> mx.array:
    """Speech logits by KV-cached decoding: prefill up to the first speech token, then
    a chunk of 3 (causal mask at an offset), then one token at a time."""
    embeds, _ = model.prepare_input_embeds(cond, text, speech)
    n_speech = speech.shape[1]
    prefix = embeds.shape[1] - n_speech + 1
    cache = model.make_cache(1, embeds.shape[1])
    chunks = [embeds[:, :prefix], embeds[:, prefix : prefix + 3]]
    chunks += [embeds[:, i : i + 1] for i in range(prefix + 3, embeds.shape[1])]
    hidden = [model.tfmr(chunk, cache) for chunk in chunks]
    hidden = mx.concatenate(hidden, axis=1)[:, -n_speech:]
    assert cache[0].offset == embeds.shape[1]
    return model.speech_head(hidden)


@pytest.mark.golden
@pytest.mark.parametrize("variant", ["llama", "gpt2"])
def test_kv_cache_matches_full_forward(small_models, golden, variant):
    model = small_models[variant]
    cond, text = cond_from(golden, variant), mx.array(golden[f"{variant}_text"])
    speech = mx.array(golden[f"{variant}_speech"])
    incremental = incremental_speech_logits(model, cond, text, speech)
    _, full = model(cond, text, speech)
    assert_close(incremental, full, 1e-5, "cached vs full")
    assert_close(incremental, golden[f"{variant}_speech_logits"], RTOL, "cached vs reference")


PROCESSORS = {
    "rep_1.3": lambda x, seen: smp.apply_repetition_penalty(x, seen, 1.3),
    "rep_0.7": lambda x, seen: smp.apply_repetition_penalty(x, seen, 0.7),
    "temp_0.7": lambda x, seen: smp.apply_temperature(x, 0.7),
    "topk_50": lambda x, seen: smp.apply_top_k(x, 50),
    "topk_1": lambda x, seen: smp.apply_top_k(x, 1),
    "topk_1000": lambda x, seen: smp.apply_top_k(x, 1000),
    "topp_0.9": lambda x, seen: smp.apply_top_p(x, 0.9),
    "topp_1.0": lambda x, seen: smp.apply_top_p(x, 1.0),
    "topp_0.0": lambda x, seen: smp.apply_top_p(x, 0.0),
    "minp_0.1": lambda x, seen: smp.apply_min_p(x, 0.1),
    "minp_0.0": lambda x, seen: smp.apply_min_p(x, 0.0),
    "minp_1.0": lambda x, seen: smp.apply_min_p(x, 1.0),
}


@pytest.mark.golden
@pytest.mark.parametrize("name", list(PROCESSORS))
def test_logits_processor(golden, name):
    logits = mx.array(golden["proc_logits"])
    seen = smp.seen_mask(mx.array(golden["proc_ids"]), logits.shape[-1])
    out = PROCESSORS[name](logits, seen)
    assert_same_with_inf(out, golden[f"proc_{name}"], 1e-6, name)


@pytest.mark.golden
def test_sampler_matches_torch_multinomial(golden):
    for prefix in ("llama", "gpt2"):
        for run in ("gen_default", "gen_custom", "gen_stop"):
            probs = mx.array(golden[f"{prefix}_{run}_probs"])
            noise = mx.array(golden[f"{prefix}_{run}_noise"])
            picked = smp.sample_from_probs(probs, noise)[:, 0]
            assert picked.tolist() == golden[f"{prefix}_{run}_sampled"].tolist()


def test_sampler_draws_follow_the_distribution():
    probs = mx.array([[0.0, 0.2, 0.5, 0.3]])
    tokens = smp.sample_from_probs(
        mx.broadcast_to(probs, (20000, 4)), smp.exponential_noise((20000, 4), mx.random.key(0))
    )
    freq = np.bincount(np.array(tokens[:, 0]), minlength=4) / 20000
    np.testing.assert_allclose(freq, [0.0, 0.2, 0.5, 0.3], atol=0.015)


@pytest.mark.golden
@pytest.mark.parametrize("variant", ["llama", "gpt2"])
@pytest.mark.parametrize("run", ["gen_default", "gen_custom"])
def test_generation_matches_reference(small_models, golden, variant, run):
    check_generation(small_models[variant], golden, variant, run, RUNS[variant][run])


@pytest.mark.golden
@pytest.mark.parametrize("variant", ["llama", "gpt2"])
def test_generation_stops_at_stop_token(golden, variant):
    model = build_small(golden, variant)
    model.config = replace(model.config, stop_speech_token=int(golden[f"{variant}_gen_stop_token"]))
    check_generation(model, golden, variant, "gen_stop", RUNS[variant]["gen_default"])
    cond, text = cond_from(golden, variant), mx.array(golden[f"{variant}_text"])
    noise = mx.array(golden[f"{variant}_gen_stop_noise"])
    seen = []
    if variant == "llama":
        tokens = model.inference(
            cond, text, noise=noise, callback=lambda i, t: seen.append((i, t)), max_new_tokens=24
        )
    else:
        tokens = model.inference_turbo(
            cond, text, noise=noise, callback=lambda i, t: seen.append((i, t)), max_gen_len=20
        )
    assert tokens.tolist() == golden[f"{variant}_gen_stop_tokens"].tolist()
    assert [t for _, t in seen] == golden[f"{variant}_gen_stop_sampled"].tolist()
    assert [i for i, _ in seen] == list(range(len(seen)))


@pytest.mark.golden
@pytest.mark.parametrize("variant", ["llama", "gpt2"])
def test_key_makes_sampling_reproducible(small_models, golden, variant):
    model = small_models[variant]
    cond, text = cond_from(golden, variant), mx.array(golden[f"{variant}_text"])
    run = (
        model.inference_turbo
        if variant == "gpt2"
        else lambda *a, **k: model.inference(*a, max_new_tokens=12, **k)
    )
    kwargs = {"max_gen_len": 11} if variant == "gpt2" else {}
    a = run(cond, text, key=mx.random.key(7), **kwargs)
    b = run(cond, text, key=mx.random.key(7), **kwargs)
    c = run(cond, text, key=mx.random.key(8), **kwargs)
    assert a.shape == (1, 12) and a.tolist() == b.tolist() and a.tolist() != c.tolist()


@pytest.mark.golden
def test_english_without_cfg_uses_the_conditional_row(small_models, golden):
    """cfg_weight=0 runs a batch of one; the reference's CFG pair gives cond + 0*(...)."""
    model = small_models["llama"]
    cond, text = cond_from(golden, "llama"), mx.array(golden["llama_text"])
    noise = mx.array(golden["llama_gen_default_noise"])
    one = model.inference(cond, text, cfg_weight=0.0, noise=noise, max_new_tokens=8)
    pair = model.inference(cond, mx.concatenate([text, text]), cfg_weight=1e-30, noise=noise,
                           max_new_tokens=8)  # fmt: skip
    assert one.tolist() == pair.tolist()


# ----------------------------------------------------------------------------- bad input


@pytest.mark.golden
def test_bad_input_errors(small_models, golden):
    llama, gpt2 = small_models["llama"], small_models["gpt2"]
    cond, text = cond_from(golden, "llama"), mx.array(golden["llama_text"])
    with pytest.raises(ValueError, match="empty"):
        llama.inference(cond, mx.zeros((1, 0), dtype=mx.int32))
    with pytest.raises(ValueError, match="out of range"):
        llama.inference(cond, mx.array([[255, 704, 0]]))
    with pytest.raises(ValueError, match="out of range"):
        llama.inference(cond, mx.array([[255, -1, 0]]))
    with pytest.raises(ValueError, match="start_text_token"):
        llama.inference(cond, mx.array([[5, 6, 7]]))
    with pytest.raises(ValueError, match="max_new_tokens"):
        llama.inference(cond, text, max_new_tokens=0)
    with pytest.raises(ValueError, match="max_gen_len"):
        gpt2.inference_turbo(cond_from(golden, "gpt2"), mx.array([[1, 2]]), max_gen_len=-3)
    with pytest.raises(ValueError, match="missing conditioning"):
        llama.inference(None, text)
    with pytest.raises(ValueError, match="missing conditioning"):
        llama.inference(T3Cond(mx.array(golden["llama_speaker"]), None, None), text)
    with pytest.raises(ValueError, match="missing conditioning"):
        gpt2.inference_turbo(T3Cond(None), mx.array([[1, 2]]))
    with pytest.raises(ValueError, match="out of range"):
        bad = T3Cond(mx.array(golden["llama_speaker"]), mx.array([[600]]), 0.5)
        llama.prepare_conditioning(bad)
    with pytest.raises(ValueError, match="temperature"):
        llama.inference(cond, text, temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        gpt2.inference_turbo(cond_from(golden, "gpt2"), mx.array([[1, 2]]), top_p=1.5)
    with pytest.raises(ValueError, match="inference_turbo"):
        gpt2.inference(cond, text)
    with pytest.raises(ValueError, match="noise"):
        llama.inference(cond, text, noise=mx.ones((2, 7)), max_new_tokens=4)
    with pytest.raises(ValueError, match="lower max_new_tokens"):
        llama.inference(cond, text, max_new_tokens=1000)  # tiny config: 128 speech positions


@pytest.mark.golden
def test_sanitize_rejects_mismatched_checkpoint(golden):
    shapes = json.loads(str(golden["gpt2_layout"]))
    weights = {k: mx.zeros(tuple(s)) for k, s in shapes.items()}
    weights.pop("tfmr.h.1.mlp.c_fc.bias")
    weights["tfmr.h.0.attn.c_attn.weight"] = mx.zeros((64, 64))
    weights["extra.weight"] = mx.zeros((3,))
    with pytest.raises(CheckpointError) as err:
        load_t3(T3(SMALL["gpt2"]), weights)
    message = str(err.value)
    for key in ("tfmr.h.1.mlp.c_fc.bias", "tfmr.h.0.attn.c_attn.weight", "extra.weight"):
        assert key in message


@pytest.mark.parametrize("name", ["t3_cfg", "t3_mtl", "t3_turbo", "t3_nano"])
def test_real_layouts_match_configs(name):
    """Every hub file's keys and shapes map onto the named config (lazy, nothing computed)."""
    config = {
        "t3_cfg": T3Config.english(),
        "t3_mtl": T3Config.multilingual(),
        "t3_turbo": T3Config.turbo(),
        "t3_nano": T3Config.nano(),
    }[name]
    weights = sanitize({k: mx.zeros(shape) for k, (shape, _) in layout(name).items()})
    expected = {k: v.shape for k, v in tree_flatten(T3(config).parameters())}
    assert {k: tuple(v.shape) for k, v in weights.items()} == {
        k: tuple(v) for k, v in expected.items()
    }


def test_config_from_dict():
    assert T3Config.from_dict({"backbone": "gpt2", "num_layers": 3}).num_layers == 3
    with pytest.raises(ValueError, match="unknown fields"):
        T3Config.from_dict({"n_layer": 3})


# ----------------------------------------------------------------------------- quantization


def quantized_copy(golden, variant, bits):
    model = build_small(golden, variant)
    return quantize_t3(model, bits=bits, group_size=64)


@pytest.mark.golden
@pytest.mark.parametrize("variant", ["llama", "gpt2"])
def test_quantized_logits_drift(golden, variant):
    """Drift of quantized logits from the reference's float32 logits (relative max error),
    group size 64. Measured at this reduced size: 8-bit 2.0e-2 (Llama) / 1.1e-2 (GPT-2),
    4-bit 0.50 / 0.19. Random Gaussian weights in 64-wide layers are a worst case for
    quantization; the bounds leave ~2x margin and still catch a broken quantizer."""
    cond, text = cond_from(golden, variant), mx.array(golden[f"{variant}_text"])
    speech = mx.array(golden[f"{variant}_speech"])
    expected = golden[f"{variant}_speech_logits"]
    drift = {}
    for bits, bound in ((8, 4e-2), (4, 0.9)):
        model = quantized_copy(golden, variant, bits)
        linears = [m for _, m in model.tfmr.named_modules() if isinstance(m, nn.QuantizedLinear)]
        assert len(linears) == (7 if variant == "llama" else 4) * 2
        drift[bits] = assert_close(model(cond, text, speech)[1], expected, bound, f"{bits}-bit")
        if variant == "llama":
            tokens = model.inference(cond, text, max_new_tokens=3, key=mx.random.key(1))
        else:
            tokens = model.inference_turbo(cond, text, max_gen_len=2, key=mx.random.key(1))
        assert tokens.shape[0] == 1 and 1 <= tokens.shape[1] <= 3
    assert drift[8] < drift[4] / 5


@pytest.mark.golden
def test_quantize_before_loading_quantized_weights(golden):
    source = quantized_copy(golden, "llama", 4)
    target = quantize_t3(T3(SMALL["llama"]), bits=4, group_size=64)
    load_strict(target, dict(tree_flatten(source.parameters())), "quantized T3")
    cond, text = cond_from(golden, "llama"), mx.array(golden["llama_text"])
    speech = mx.array(golden["llama_speech"])
    np.testing.assert_array_equal(
        np.array(target(cond, text, speech)[1]), np.array(source(cond, text, speech)[1])
    )
    with pytest.raises(ValueError, match="bits"):
        quantize_t3(T3(SMALL["llama"]), bits=7)


@pytest.mark.golden
def test_float16_runs_close_to_float32(golden):
    model = build_small(golden, "llama")
    model.set_dtype(mx.float16)
    cond, text = cond_from(golden, "llama"), mx.array(golden["llama_text"])
    _, logits = model(cond, text, mx.array(golden["llama_speech"]))
    assert logits.dtype == mx.float16
    assert_close(logits, golden["llama_speech_logits"], 1e-2, "float16 logits")
    tokens = model.inference(cond, text, max_new_tokens=5, key=mx.random.key(0))
    assert tokens.shape == (1, 5)


# ----------------------------------------------------------------------------- full size

FULL = {"cfg": T3Config.english, "turbo": T3Config.turbo, "nano": T3Config.nano}


def full_model(name: str) -> T3:
    path = cached_checkpoint(f"t3_{name}")
    return load_t3(T3(FULL[name]()), load_safetensors(path), f"t3_{name}")


@pytest.fixture(scope="module", params=list(FULL))
def full(request):
    golden = load_golden(f"t3_full_{request.param}")
    model = full_model(request.param)
    yield request.param, model, golden
    del model


@pytest.mark.slow
@pytest.mark.golden
def test_full_size_parity(full):
    name, model, g = full
    cond = T3Cond(mx.array(g["speaker"]), mx.array(g["prompt"]), 0.5 if name == "cfg" else None)
    cond_emb = model.prepare_conditioning(cond)[..., :256]  # the golden keeps 256 channels
    assert_close(cond_emb, g["cond_emb"], RTOL, f"{name} cond")
    text, speech = mx.array(g["text"]), mx.array(g["speech"])
    text_logits, speech_logits = model(cond, text, speech)
    assert_close(text_logits[..., :1024], g["text_logits"], RTOL, f"{name} text logits")
    assert_close(speech_logits, g["speech_logits"], RTOL, f"{name} speech logits")

    incremental = incremental_speech_logits(model, cond, text, speech)
    assert_close(incremental, g["speech_logits"], RTOL, f"{name} cached logits")

    noise = mx.array(g["gen_noise"])
    if name == "cfg":
        steps = steps_of(model, cond, text, noise, max_new_tokens=4)
    else:
        steps = steps_of(model, cond, text, noise, max_gen_len=3)
    assert [s.token for s in steps] == g["gen_sampled"].tolist()
    for step in steps:
        assert_close(step.probs[0], g["gen_probs"][step.index], RTOL, f"{name} step probs")

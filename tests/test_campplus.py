"""CAMPPlus speaker x-vector against the PyTorch reference (tests/reference/gen_campplus.py).

Tolerance 1e-4 relative (the project target): the network is float32 matmuls and
elementwise ops end to end, measured errors are ~1e-6.
"""

import json

from chatterbox_mlx.models.campplus import (
    CAMLayer,
    CAMPPlus,
    CAMPPlusConfig,
    expand_segments,
    sanitize,
    segment_means,
)
from chatterbox_mlx.models.weights import (
    CheckpointError,
    load_safetensors,
    load_strict,
    strip_prefix,
)

import mlx.core as mx
import numpy as np
import pytest

from tests.helpers.checkpoints import cached_checkpoint, random_tensor
from tests.helpers.golden import assert_close, load_golden

RTOL = 1e-4


def reduced_state(golden) -> dict[str, mx.array]:
    """The reduced reference state_dict, rebuilt from its keys, shapes and seed."""
    shapes = json.loads(str(golden["state_shapes"]))
    seed = int(golden["seed"])
    return {
        str(key): mx.array(random_tensor(str(key), tuple(shape), "float32", seed))
        for key, shape in zip(golden["state_keys"], shapes, strict=True)
    }


@pytest.fixture(scope="module")
def golden():
    return load_golden("campplus")


@pytest.fixture(scope="module")
def reduced(golden):
    keys = [str(k) for k in golden["config_keys"]]
    config = CAMPPlusConfig.from_dict(dict(zip(keys, golden["config"].tolist(), strict=True)))
    model = CAMPPlus(config)
    load_strict(model, sanitize(reduced_state(golden)), "reduced CAMPPlus")
    return model


@pytest.fixture(scope="module")
def full():
    weights = strip_prefix(load_safetensors(cached_checkpoint("s3gen")), "speaker_encoder.")
    model = CAMPPlus()
    load_strict(model, sanitize(weights), "CAMPPlus (speaker_encoder.)")
    return model


@pytest.mark.golden
@pytest.mark.parametrize("case", ["a", "b"])
def test_reduced_network(reduced, golden, case):
    # a: 250 frames (a partial CAM segment after the TDNN); b: 7 frames.
    out = reduced(mx.array(golden[f"features_{case}"]))
    assert_close(out, golden[f"xvec_{case}"], RTOL, f"xvec_{case}")


@pytest.mark.golden
def test_reduced_network_padded_batch(reduced, golden):
    out = reduced(mx.array(golden["batch_features"]))
    assert_close(out, golden["xvec_batch"], RTOL, "xvec_batch")


@pytest.mark.golden
def test_reduced_inference_from_audio(reduced, golden):
    clips = [golden["wav_long"], golden["wav_short"]]
    features = reduced.features(mx.array(clips[1]))
    frames = features.shape[0]
    assert_close(features, golden["batch_features"][1, :frames], RTOL, "mean-normalised fbank")
    assert np.all(golden["batch_features"][1, frames:] == 0)  # the reference's zero padding
    out = reduced.inference(clips)
    assert_close(out, golden["xvec_batch"], RTOL, "inference([long, short])")


@pytest.mark.golden
def test_full_size_network(full):
    golden = load_golden("campplus_full")
    out = full(mx.array(golden["features"]))
    assert out.shape == (1, 192)
    assert_close(out, golden["xvec"], RTOL, "full-size xvec from features")


@pytest.mark.golden
def test_full_size_inference_from_audio(full):
    golden = load_golden("campplus_full")
    out = full.inference(mx.array(golden["wav"]))  # [1, samples], as embed_ref passes it
    assert_close(out, golden["xvec"], RTOL, "full-size xvec from audio")


@pytest.mark.golden
def test_cam_layer(golden):
    # 250 frames whose level drifts across the 100-frame segments (the last one has 50), so
    # the segment pooling's context visibly changes the gate.
    layer = CAMLayer(8, 4, kernel_size=3, dilation=2, segment_length=100)
    state = {
        key: mx.array(random_tensor(key, shape, "float32", int(golden["seed"])))
        for key, shape in [
            ("linear_local.weight", (4, 8, 3)),
            ("linear1.weight", (4, 8, 1)),
            ("linear1.bias", (4,)),
            ("linear2.weight", (4, 4, 1)),
            ("linear2.bias", (4,)),
        ]
    }
    load_strict(layer, sanitize(state), "CAMLayer")
    out = layer(mx.array(golden["cam_x"]).transpose(0, 2, 1))
    assert_close(out.transpose(0, 2, 1), golden["cam_y"], RTOL, "CAMLayer")


@pytest.mark.parametrize("time", [1, 99, 100, 101, 250])
def test_segment_pooling(time):
    # The reference's avg_pool1d(ceil_mode=True) averages a short last segment over its own
    # frames; expanded back to frames, every frame gets its segment's mean.
    x = np.random.default_rng(time).standard_normal((2, time, 3)).astype(np.float32)
    expected = np.empty_like(x)
    for start in range(0, time, 100):
        expected[:, start : start + 100] = x[:, start : start + 100].mean(axis=1, keepdims=True)
    pooled = expand_segments(segment_means(mx.array(x), 100), 100, time)
    assert_close(pooled, expected, 1e-6, f"segments of {time}")


@pytest.mark.golden
def test_strict_loading_names_the_problems(golden):
    weights = sanitize(reduced_state(golden))
    del weights["xvector.blocks.1.layers.3.cam_layer.linear1.bias"]
    weights["head.conv1.weight"] = mx.zeros((32, 3, 3, 2))
    weights["xvector.extra.weight"] = mx.zeros((4,))
    model = CAMPPlus(CAMPPlusConfig(embedding_size=24, growth_rate=8, bn_size=2, init_channels=16))
    with pytest.raises(CheckpointError) as err:
        load_strict(model, weights, "CAMPPlus")
    message = str(err.value)
    assert "missing xvector.blocks.1.layers.3.cam_layer.linear1.bias" in message
    assert "wrong shape head.conv1.weight" in message
    assert "unexpected xvector.extra.weight" in message


def test_sanitize_maps_reference_names():
    weights = {
        "xvector.block2.tdnnd11.linear1.weight": mx.zeros((128, 768, 1)),
        "xvector.transit3.linear.weight": mx.zeros((512, 1024, 1)),
        "head.layer1.0.shortcut.0.weight": mx.zeros((32, 16, 1, 1)),
        "head.conv2.weight": mx.zeros((32, 16, 3, 5)),
        "head.bn1.num_batches_tracked": mx.zeros((), dtype=mx.int64),
    }
    out = sanitize(weights)
    assert {k: v.shape for k, v in out.items()} == {
        "xvector.blocks.1.layers.10.linear1.weight": (128, 1, 768),
        "xvector.transits.2.linear.weight": (512, 1, 1024),
        "head.layer1.0.shortcut.0.weight": (32, 1, 1, 16),
        "head.conv2.weight": (32, 5, 3, 16),  # [out, k_time, k_freq, in]
    }


@pytest.mark.golden
def test_bad_input(reduced):
    with pytest.raises(ValueError, match=r"features \[batch, frames, 80\]"):
        reduced(mx.zeros((1, 50, 40)))
    with pytest.raises(ValueError, match="at least 3 feature frames"):
        reduced(mx.zeros((1, 2, 80)))
    with pytest.raises(ValueError, match="too short"):
        reduced.inference(np.zeros(700, dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        reduced.inference(np.full(16000, np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="float audio"):
        reduced.inference(np.zeros(16000, dtype=np.int16))
    with pytest.raises(ValueError, match="mono"):
        reduced.inference(np.zeros((1, 2, 16000), dtype=np.float32))
    with pytest.raises(ValueError, match="multiple of 8"):
        CAMPPlus(CAMPPlusConfig(feat_dim=36))


def test_config_from_dict_is_strict():
    import dataclasses
    import json

    config = CAMPPlusConfig(block_layers=(2, 3, 4))
    assert CAMPPlusConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(config)))) == config
    with pytest.raises(ValueError, match="unknown fields \\['pooling'\\]"):
        CAMPPlusConfig.from_dict({"pooling": "stats"})
    with pytest.raises(ValueError, match="CAMPPlusConfig.feat_dim: expected int"):
        CAMPPlusConfig.from_dict({"feat_dim": 80.0})

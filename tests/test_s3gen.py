"""S3Gen composition (upstream ``S3Token2Wav.inference``) at full size: with the same
weights, tokens, prompt and random draws, the waveform equals the reference's.

Golden: tests/reference/gen_s3gen.py (HiFT's output gain scaled so the waveform is not
clamped; the source stays unvoiced, so no phase drift: the voiced path is in test_hift).
Tolerance 1e-4 relative, the project's float32 target."""

from chatterbox_mlx.models import hift as hift_mod
from chatterbox_mlx.models.flow import load_flow
from chatterbox_mlx.pipeline.s3gen import S3Gen, drop_invalid_tokens
from chatterbox_mlx.voice.conditionals import GenCond

import mlx.core as mx
import numpy as np
import pytest

from tests.helpers.checkpoints import cached_checkpoint
from tests.helpers.golden import assert_close, load_golden
from tests.helpers.hift_scaling import POST_ONLY_TAG, post_only_transform


@pytest.fixture(scope="module")
def golden():
    return load_golden("s3gen")


@pytest.fixture(scope="module")
def s3gen():
    path = cached_checkpoint("s3gen", tag=POST_ONLY_TAG, transform=post_only_transform)
    return S3Gen(load_flow(path), hift_mod.load(path), meanflow=False)


@pytest.mark.slow
@pytest.mark.golden
def test_inference_matches_reference(golden, s3gen):
    gen = GenCond(
        prompt_token=mx.array(golden["prompt_token"].astype(np.int32)),
        prompt_token_len=mx.array([golden["prompt_token"].shape[1]], dtype=mx.int32),
        prompt_feat=mx.array(golden["prompt_feat"]),
        embedding=mx.array(golden["embedding"]),
    )
    wav, source = s3gen.inference(
        golden["tokens"],
        gen,
        noise=mx.array(golden["flow_noise"].transpose(0, 2, 1)),
        phase=mx.array(golden["phase"][:, :, 0]),
        source_noise=mx.array(golden["sine_noise"].transpose(0, 2, 1)),
    )
    expected = golden["wav"]
    assert wav.shape == expected.shape == (1, 960 * golden["tokens"].shape[1])
    err = assert_close(np.asarray(wav), expected, 1e-4, "waveform")
    print(f"waveform relative error {err:.2e}")
    assert_close(np.asarray(source), golden["source"].reshape(1, -1), 1e-4, "source")


def test_drop_invalid_tokens():
    out = drop_invalid_tokens(np.array([[1, 6560, 6561, 6562, 8000, 5]]))
    assert out.tolist() == [1, 6560, 5]


@pytest.mark.golden
def test_all_invalid_tokens_is_an_error(s3gen, golden):
    gen = GenCond(
        prompt_token=mx.array(golden["prompt_token"].astype(np.int32)),
        prompt_token_len=mx.array([golden["prompt_token"].shape[1]], dtype=mx.int32),
        prompt_feat=mx.array(golden["prompt_feat"]),
        embedding=mx.array(golden["embedding"]),
    )
    with pytest.raises(ValueError, match="no speech tokens"):
        s3gen.inference([6561, 6562], gen)

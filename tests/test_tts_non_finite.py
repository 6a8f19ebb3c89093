"""Issue 15, library side: non-finite output is refused naming the stage that made it
(T3 logits, the flow's mel, HiFT; chatterbox_mlx.pipeline.checks), in every entry point,
with the watermark on or off.

The shared short-voice Nano of tests/conftest.py, one parameter poisoned per test and put
back after it."""

from __future__ import annotations

import contextlib
import re

from chatterbox_mlx.pipeline.checks import NonFiniteError
from chatterbox_mlx.tts import ChatterboxVC

import mlx.core as mx
import numpy as np
import pytest

from tests.helpers.clips import SR, espeak_array
from tests.helpers.entry_points import TEXT, call

pytestmark = pytest.mark.pipeline


@contextlib.contextmanager
def nan_in(layer, name: str):
    """One NaN in ``layer.<name>`` for the duration; the original array is put back."""
    original = getattr(layer, name)
    poisoned = np.array(original)
    poisoned.reshape(-1)[0] = np.nan
    setattr(layer, name, mx.array(poisoned))
    try:
        yield
    finally:
        setattr(layer, name, original)
        assert getattr(layer, name) is original  # the other tests use this model


STAGES = {  # stage -> (layer, parameter, what the message names)
    "hift": (lambda m: m.s3gen.mel2wav.conv_post, "bias", "HiFT"),
    "flow": (lambda m: m.s3gen.flow.decoder.estimator.final_proj, "weight", "flow's mel"),
    "t3": (lambda m: m.t3.speech_head, "weight", "T3 logits"),
}
INTEGRITY = [
    ("hift", "generate", True),  # the watermark used to blame the user's audio
    ("hift", "generate", False),
    ("hift", "generate_stream", False),
    ("hift", "generate_batch", True),
    pytest.param("hift", "vc", True, marks=pytest.mark.slow),
    ("flow", "generate", True),
    ("flow", "generate_stream", True),
    ("flow", "generate_batch", False),
    ("flow", "vc", False),
    ("t3", "generate", True),
    ("t3", "generate_stream", False),
    ("t3", "generate_batch", True),
]


@pytest.fixture(scope="module")
def vc_source(tmp_path_factory):
    return espeak_array(tmp_path_factory.mktemp("vc"), "Convert me.")


@pytest.mark.parametrize("stage,entry,watermark", INTEGRITY)
def test_non_finite_output_names_its_stage(nano, vc_source, stage, entry, watermark):
    layer, name, named = STAGES[stage]
    with nan_in(layer(nano), name):
        with pytest.raises(NonFiniteError, match=re.escape(named)):
            if entry == "vc":
                vc = ChatterboxVC(nano.s3gen, ref_dict=nano.conds.gen)
                vc.generate(vc_source, sr=SR, watermark=watermark, seed=0)
            elif entry == "generate_stream":
                for _ in nano.generate_stream(TEXT, max_new_tokens=3, seed=0,
                                              watermark=watermark):  # fmt: skip
                    pass
            else:
                call(nano, entry, max_new_tokens=2, seed=0, watermark=watermark)

"""Reading the original checkpoint files (checkpoints.originals): PyTorch pickles stand in
for absent .safetensors, read without torch."""

from __future__ import annotations

from chatterbox_mlx.checkpoints import convert, originals
from chatterbox_mlx.variants import get_variant

import numpy as np
import pytest

from tests.helpers.checkpoints import random_weights
from tests.helpers.torch_zip import write_torch_zip

pytestmark = pytest.mark.usefixtures("offline_env")


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

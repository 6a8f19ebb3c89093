"""Edits to random HiFT weights that make vocoder tests meaningful (shared by the golden
scripts and the tests, which must build byte-identical checkpoints).

Random weights give F0 below SineGen's voiced threshold (the sine path would be multiplied
by zero) and log-magnitudes so large that ~80% of the waveform sits at the +-0.99 clamp."""

from __future__ import annotations

import numpy as np

F0_SCALE = 300.0  # F0 classifier gain: most frames voiced (10-300 Hz)
POST_SCALE = 0.2  # conv_post weight-norm gain: ~0.5% of samples clamped
CLASSIFIER = "f0_predictor.classifier."
POST_G = "conv_post.parametrizations.weight.original0"
FULL_TAG = "hift-f0x300-postx0.2"
POST_ONLY_TAG = "postx0.2"


def scale(key: str, value: np.ndarray, f0: bool = True) -> np.ndarray:
    """Scale one vocoder tensor (key without the ``mel2wav.`` prefix)."""
    if f0 and key.startswith(CLASSIFIER):
        return value * np.float32(F0_SCALE)
    if key == POST_G:
        return value * np.float32(POST_SCALE)
    return value


def full_transform(key: str, value: np.ndarray) -> np.ndarray:
    """For ``checkpoints.cached_checkpoint(..., transform=)`` on the s3gen layout."""
    return scale(key[len("mel2wav.") :], value) if key.startswith("mel2wav.") else value


def post_only_transform(key: str, value: np.ndarray) -> np.ndarray:
    """Only the output gain: unvoiced source, unclamped waveform."""
    if key.startswith("mel2wav."):
        return scale(key[len("mel2wav.") :], value, f0=False)
    return value

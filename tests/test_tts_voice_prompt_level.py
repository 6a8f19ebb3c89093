"""Issue 15, library side: a near-silent voice prompt is refused and a very quiet one
warned about, each naming its level (chatterbox_mlx.voice.prepare).

The shared short-voice English of tests/conftest.py."""

from __future__ import annotations

import re
import warnings

from chatterbox_mlx.audio import AudioError

import numpy as np
import pytest
import soundfile as sf

from tests.helpers.clips import SR, at_level, espeak_array
from tests.helpers.entry_points import TEXT

pytestmark = pytest.mark.pipeline


def test_near_silent_prompt_refused_naming_its_level(english, tmp_path, stop_at_t3):
    stop_at_t3(english)
    noise = at_level(np.random.default_rng(0).standard_normal(2 * SR), -80.0)
    path = tmp_path / "dither.wav"
    sf.write(path, noise, SR, subtype="FLOAT")
    builtin = english.conds
    with pytest.raises(AudioError, match=re.escape("near-silent (-80 dBFS RMS")):
        english.generate(TEXT, audio_prompt_path=str(path))
    assert english.conds is builtin
    with pytest.raises(AudioError, match=re.escape("(-80 dBFS RMS")):
        english.prepare_voice(noise, sr=SR)


@pytest.mark.slow
def test_quiet_prompt_warns_naming_its_level_normal_prompt_does_not(english, tmp_path):
    speech = espeak_array(tmp_path, "Hello there, how are you?")
    with pytest.warns(UserWarning, match=re.escape("very quiet (-55 dBFS RMS)")):
        voice = english.prepare_voice(at_level(speech, -55.0), sr=SR)
    assert voice.t3 is not None  # accepted
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        english.prepare_voice(speech, sr=SR)

"""Issue 15, library side: with the same seed a stream speaks the same T3 tokens as the
one-shot call, whatever flow and HiFT renders it runs between its steps.

Shared short-voice models of tests/conftest.py, capped with ``max_new_tokens``."""

from __future__ import annotations

import pytest

from tests.helpers.entry_points import LANGUAGE, TEXT, T3Finished

pytestmark = [pytest.mark.pipeline, pytest.mark.slow]


def spoken_tokens(model, monkeypatch, run) -> tuple[list[int], int]:
    """T3's tokens in ``run()``, and how many HiFT renders ran before the last draw."""
    original_steps, original_hift = model.t3.generate_steps, model.s3gen.hift_inference
    tokens, renders, renders_before_last = [], [0], [0]

    def recording(*args, **kwargs):
        for step in original_steps(*args, **kwargs):
            tokens.append(step.token)
            renders_before_last[0] = renders[0]
            yield step
        raise T3Finished

    def counting_hift(*args, **kwargs):
        renders[0] += 1
        return original_hift(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(model.t3, "generate_steps", recording)
        patch.setattr(model.s3gen, "hift_inference", counting_hift)
        with pytest.raises(T3Finished):
            run()
    return tokens, renders_before_last[0]


MAX_NEW_TOKENS = 8  # seed 3: enough speech tokens that chunk_tokens=2 renders before the end
# (variant, chunk_tokens): 25 (no render before T3 ends) only where T3 is cheap
TOKEN_CASES = [("english", 2), ("multilingual", 2), ("turbo", 2), ("turbo", 25), ("nano", 2),
               ("nano", 25)]  # fmt: skip
ONE_SHOT: dict[str, list[int]] = {}


@pytest.mark.parametrize("variant,chunk_tokens", TOKEN_CASES)
def test_same_seed_same_tokens_one_shot_and_streamed(request, monkeypatch, variant,
                                                     chunk_tokens):  # fmt: skip
    """Seed 3: the tokens T3 speaks do not depend on the flow and HiFT that a stream
    runs between its steps (chunk_tokens 2: renders before the last draw)."""
    model = request.getfixturevalue(variant)
    kwargs = dict(seed=3, max_new_tokens=MAX_NEW_TOKENS, watermark=False,
                  **LANGUAGE.get(variant, {}))  # fmt: skip
    if variant not in ONE_SHOT:
        ONE_SHOT[variant], _ = spoken_tokens(model, monkeypatch,
                                             lambda: model.generate(TEXT, **kwargs))  # fmt: skip
    streamed, renders = spoken_tokens(
        model,
        monkeypatch,
        lambda: list(model.generate_stream(TEXT, chunk_tokens=chunk_tokens, **kwargs)),
    )
    assert len(ONE_SHOT[variant]) == MAX_NEW_TOKENS
    assert streamed == ONE_SHOT[variant]
    assert (renders >= 1) == (chunk_tokens == 2), renders  # the case is what it claims

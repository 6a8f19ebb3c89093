"""Pipelines on the random-weight checkpoints (``sources.converted_dir``), as
``tests/conftest.py`` shares them.

Each variant is loaded once (``shared``) and kept while consecutive test modules use it;
conftest ``release``s the others between modules, so a whole run holds only what the
next module needs (the four variants together hold 10 GB of weights). A fixture that
wants another voice gets its own pipeline on the same networks (``with_voice``), so no
test sees another's voice."""

from __future__ import annotations

import gc
from dataclasses import replace

from chatterbox_mlx.voice.conditionals import Conditionals

import mlx.core as mx

from tests.helpers.sources import converted_dir

VARIANTS = ("english", "turbo", "nano", "multilingual")  # the ones conftest shares
T3_PROMPT, GEN_PROMPT = 10, 10  # tokens kept of each voice prompt (speed only)


def shorten(conds: Conditionals) -> Conditionals:
    """The same voice with short prompts (a copy; the argument is left as it is)."""
    t3 = replace(
        conds.t3, cond_prompt_speech_tokens=conds.t3.cond_prompt_speech_tokens[:, :T3_PROMPT]
    )
    gen = conds.gen
    n = min(GEN_PROMPT, gen.prompt_token.shape[1])
    gen = replace(
        gen,
        prompt_token=gen.prompt_token[:, :n],
        prompt_token_len=mx.array([n], dtype=mx.int32),
        prompt_feat=gen.prompt_feat[:, : 2 * n],
    )
    # evaluated here, so that these new arrays can be used from any thread (an MLX array
    # left unevaluated can only be evaluated by the thread that made it)
    mx.eval([v for part in (t3, gen) for v in vars(part).values() if isinstance(v, mx.array)])
    return Conditionals(t3, gen)


def load(variant: str):
    """``variant``'s pipeline as its class's ``from_local`` loads it (the built-in voice)."""
    from chatterbox_mlx.tts import ChatterboxMultilingualTTS, ChatterboxTTS, ChatterboxTurboTTS

    if variant == "english":
        return ChatterboxTTS.from_local(converted_dir("english"))
    if variant == "multilingual":
        return ChatterboxMultilingualTTS.from_local(converted_dir("multilingual"))
    return ChatterboxTurboTTS.from_local(converted_dir(variant), nano=variant == "nano")


def with_voice(model, conds: Conditionals):
    """A second pipeline on ``model``'s networks whose voice is ``conds``: setting one's
    ``conds`` leaves the other's alone; the networks (and their weights) are shared."""
    return type(model)(model.t3, model.s3gen, model.ve, model.tokenizer, conds=conds,
                       variant=model.variant)  # fmt: skip


_LOADED: dict[str, object] = {}  # variant -> its pipeline, while a module may use it


def shared(variant: str):
    """``variant``'s pipeline, loaded on first use and then shared (see the docstring)."""
    if variant not in _LOADED:
        _LOADED[variant] = load(variant)
    return _LOADED[variant]


def release(keep: set[str]) -> None:
    """Drop the shared pipelines of the variants not in ``keep``, and MLX's freed buffers."""
    dropped = [variant for variant in _LOADED if variant not in keep]
    for variant in dropped:
        del _LOADED[variant]
    if dropped:
        gc.collect()
        mx.clear_cache()

"""Calling the pipelines' entry points (``generate``, ``generate_stream``,
``generate_pieces``, ``generate_batch``) only as far as T3: with the ``stop_at_t3``
fixture (tests/conftest.py) T3 raises ``ReachedT3`` instead of generating, so a test sees
whether a call was refused before any work began.

Random weights never emit the stop token, so every generation is capped with
``max_new_tokens``."""

from __future__ import annotations

import pytest

TEXT = "Hello there."
VARIANTS = ("english", "turbo", "nano", "multilingual")
LANGUAGE = {"multilingual": {"language_id": "fr"}}
ENTRIES = ("generate", "generate_stream", "generate_pieces", "generate_batch")


class ReachedT3(Exception):
    """Raised in place of T3: the call got past every check to where the work starts."""

    def __init__(self, kwargs):
        super().__init__(
            "T3 was asked to generate, so the input was NOT refused before the work began"
        )
        self.kwargs = kwargs


class T3Finished(Exception):
    """Raised by a T3 wrapper once the steps a test needs were taken."""


def call(model, entry: str, text: str = TEXT, **kwargs):
    """Run one entry point far enough to reach T3 (a stream: its first chunk)."""
    if entry == "generate":
        return model.generate(text, **kwargs)
    if entry in ("generate_stream", "generate_pieces"):
        stream = getattr(model, entry)(text, **kwargs)  # refusals come here, eagerly
        return next(iter(stream))
    if entry == "generate_batch":
        return model.generate_batch([text, text], **kwargs)
    raise AssertionError(entry)


def assert_refused(model, entry: str, error, fragment: str, text: str = TEXT, note: str = "",
                   **kwargs):  # fmt: skip
    """``entry`` raises ``error`` naming ``fragment`` before any work (T3 stopped by
    ``stop_at_t3``); a stream (or pieces) when it is made, before its first chunk."""
    what = f"{entry}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
    try:
        if entry in ("generate_stream", "generate_pieces"):
            stream = getattr(model, entry)(text, **kwargs)
            try:
                next(iter(stream))
            except error:
                pytest.fail(f"{what} was refused at its first chunk, not when it was made")
        else:
            call(model, entry, text, **kwargs)
    except ReachedT3:
        pytest.fail(f"{what} was accepted (T3 started); expected {error.__name__} "
                    f"'{fragment}' before any work{note}")  # fmt: skip
    except error as err:
        assert fragment in str(err), f"{what}: the message {str(err)!r} lacks {fragment!r}"
        return
    except Exception as err:
        pytest.fail(f"{what} raised {type(err).__name__}: {err}; expected {error.__name__} "
                    f"'{fragment}'")  # fmt: skip
    pytest.fail(f"{what} raised nothing; expected {error.__name__} '{fragment}'")

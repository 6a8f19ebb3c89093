"""``POST /v1/audio/speech``: the request as OpenAI's clients send it, checked field by
field (and its plan and budgets, ``synthesis``) before it waits for the model.

Fields: ``input`` (required), ``model``, ``voice`` (a string or ``{"id": ...}``),
``response_format``, ``speed``, ``stream_format``, ``instructions`` (accepted, ignored),
and Chatterbox's own: ``exaggeration``, ``cfg_weight``, ``temperature``, ``top_p``,
``min_p``, ``top_k``, ``repetition_penalty``, ``max_new_tokens`` (the speech tokens of
the whole request, at most the server's ``--max-new-tokens``), ``seed``, ``language``.
Unknown fields are ignored, as OpenAI's clients send fields of newer API versions. A
parameter the chosen model does not use (Turbo's ``exaggeration``, ``cfg_weight``,
``min_p``; ``language`` off the multilingual model; ``instructions``) is still checked,
then left out and named in the ``X-Ignored-Parameters`` response header.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

from .. import params as params_mod
from .. import text as text_mod
from ..audio import speed as speed_mod
from ..audio.encoder import ALIASES as FORMAT_ALIASES
from ..constants import SAMPLES_PER_TOKEN
from .errors import APIError, shown
from .synthesis import SpeechPlan, check_length, plan_speech
from .voices import BUILTIN_ID, VoiceEntry

OPENAI_VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)
OPENAI_SPEED = (0.25, 4.0)
GENERATION_FIELDS = (
    "exaggeration",
    "cfg_weight",
    "temperature",
    "top_p",
    "min_p",
    "top_k",
    "repetition_penalty",
    "max_new_tokens",
)
FORMATS = ("mp3", "opus", "flac", "wav", "pcm")  # the library's formats, OpenAI's order
CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
STREAM_FORMATS = ("audio", "sse")
MAX_SEED = 2**63 - 1


@dataclass
class SpeechRequest:
    """A checked speech request (see the module docstring)."""

    text: str
    model: object  # app.ServedModel
    voice: VoiceEntry | None  # None: the model's built-in voice
    response_format: str
    stream_format: str
    speed: float
    seed: int | None
    language: str | None
    params: dict
    plan: SpeechPlan
    token_budget: int  # speech tokens for the whole request (--max-new-tokens)
    ignored: list[str] = field(default_factory=list)

    @property
    def content_type(self) -> str:
        return (
            "text/event-stream"
            if self.stream_format == "sse"
            else CONTENT_TYPES[self.response_format]
        )


def _bad(message: str, param: str, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def _string(body: dict, name: str, default=None, *, lower: bool = False):
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _bad(
            f"{name} must be a string, got {type(value).__name__} {shown(value)}",
            name,
            "invalid_type",
        )
    return value.strip().lower() if lower else value


def _choice(body: dict, name: str, default: str, choices, aliases=None) -> str:
    value = _string(body, name, default, lower=True) or default
    value = (aliases or {}).get(value, value)
    if value not in choices:
        raise _bad(
            f"{name} {shown(body.get(name))} is not supported; supported: {', '.join(choices)}",
            name,
            f"unsupported_{name}",
        )
    return value


def _speed(body: dict) -> float:
    value = body.get("speed")
    if value is None:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise _bad(f"speed must be a number, got {shown(value)}", "speed", "invalid_type")
    low, high = OPENAI_SPEED
    if not low <= value <= high:
        raise _bad(f"speed must be from {low} to {high} (OpenAI's range), got {value:g}", "speed")
    try:
        return speed_mod.check_speed(value)
    except ValueError:
        raise _bad(
            f"speed {value:g} is outside what this server supports: {speed_mod.MIN_SPEED} to "
            f"{speed_mod.MAX_SPEED} (a pitch-preserving time stretch); use a speed in that range",
            "speed",
            "unsupported_speed",
        ) from None


def _seed(body: dict) -> int | None:
    value = body.get("seed")
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise _bad(f"seed must be an integer from 0 to 2**63-1, got {shown(value)}", "seed")
    return value


def _text(body: dict, max_chars: int) -> str:
    if "input" not in body:
        raise _bad("input is required: the text to speak", "input", "missing_input")
    try:
        text = text_mod.check_text(body["input"], "input")
    except text_mod.TextError as err:
        raise _bad(str(err), "input") from None
    if len(text) > max_chars:
        raise _bad(
            f"input has {len(text):,} characters; this server's limit is {max_chars:,} "
            "(--max-chars): split the text into several requests",
            "input",
            "input_too_long",
        )
    return text


def voice_reference(body: dict) -> str | None:
    """The ``voice`` field as a string: ``"alice"`` or ``{"id": "alice"}``; None if absent."""
    value = body.get("voice")
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("id")
        if not isinstance(value, str):
            raise _bad(
                'voice as an object needs a string "id", e.g. {"id": "alice"}',
                "voice",
                "invalid_type",
            )
    if not isinstance(value, str):
        raise _bad(
            f'voice must be a string or {{"id": ...}}, got {shown(value)}', "voice", "invalid_type"
        )
    return value.strip()


def resolve_voice(ref: str | None, library, model) -> VoiceEntry | None:
    """A saved voice (by id, else by name), or None for the built-in voice (no voice,
    ``default``, or one of OpenAI's voice names that no saved voice takes)."""
    if ref:
        entry = library.find(ref)
        if entry is not None:
            return entry
    if not ref or ref.casefold() == BUILTIN_ID or ref.casefold() in OPENAI_VOICES:
        if model.builtin is None:
            raise _bad(
                f"the model {model.name!r} has no built-in voice; upload one "
                "(POST /v1/audio/voices) and pass its id as voice",
                "voice",
                "voice_not_found",
            )
        return None
    saved = ", ".join(f"{e.id} ({e.name})" for e in library.list()) or "none yet"
    raise _bad(
        f"unknown voice {shown(ref)}; saved voices: {saved}; {BUILTIN_ID!r} and OpenAI's voice "
        f"names ({', '.join(OPENAI_VOICES)}) use the built-in voice. GET /v1/audio/voices "
        "lists them; POST /v1/audio/voices adds one",
        "voice",
        "voice_not_found",
    )


class _Echo:
    """A value that is not a number, shown short in the parameter check's message."""

    def __init__(self, value):
        self.value = value

    def __repr__(self) -> str:
        return shown(self.value)


def _generation(body: dict, model, cap: int) -> tuple[dict, list[str], int]:
    """The generation parameters the model uses, those it ignores, and the request's
    speech-token budget (its ``max_new_tokens``, at most the server's cap)."""
    variant = model.model.variant
    chosen, ignored = {}, []
    for name in GENERATION_FIELDS:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, bool | int | float):
            value = _Echo(value)
        try:
            value = params_mod.check_value(name, value)
        except params_mod.ParameterError as err:
            raise _bad(str(err), name) from None
        if name in variant.generation:
            chosen[name] = value
        else:
            ignored.append(name)
    budget = min(chosen.pop("max_new_tokens", cap), cap)
    return chosen, ignored, budget


def _language(body: dict, model) -> tuple[str | None, bool]:
    """The language id (multilingual model) and whether one was given and ignored."""
    language = _string(body, "language")
    if not model.model.variant.needs_language:
        return None, language is not None
    if not language:
        raise _bad(
            f"language is required for the {model.name} model; one of: "
            f"{', '.join(text_mod.SUPPORTED_LANGUAGES)}",
            "language",
            "missing_language",
        )
    try:
        return text_mod.check_language(language), False
    except text_mod.TextError as err:
        raise _bad(
            str(err).replace("language_id", "language"), "language", "unsupported_language"
        ) from None


def parse_speech(body, state) -> SpeechRequest:
    """Check every field of a speech request (``state``: the app's ``ServerState``)."""
    if not isinstance(body, dict):
        raise _bad(
            "the request body must be a JSON object, e.g. "
            '{"model": "tts-1", "input": "Hello.", "voice": "alloy"}',
            "body",
        )
    settings = state.settings
    text = _text(body, settings.max_chars)
    model = state.model_for(_string(body, "model"))
    _string(body, "instructions")  # accepted (a string), ignored
    fmt = _choice(body, "response_format", "mp3", FORMATS, FORMAT_ALIASES)
    stream_format = _choice(body, "stream_format", "audio", STREAM_FORMATS)
    speed = _speed(body)
    seed = _seed(body)
    language, language_ignored = _language(body, model)
    params, ignored, budget = _generation(body, model, settings.max_new_tokens)
    plan = _plan(text)
    check_length(plan, speed, budget, settings.max_audio_seconds)
    voice = resolve_voice(voice_reference(body), state.library, model)
    if language_ignored:
        ignored.append("language")
    if body.get("instructions") is not None:
        ignored.append("instructions")
    return SpeechRequest(
        text, model, voice, fmt, stream_format, speed, seed, language, params, plan, budget, ignored
    )


def _plan(text: str) -> SpeechPlan:
    try:
        return plan_speech(text)
    except text_mod.TextError as err:
        raise _bad(str(err), "input") from None


def usage(request: SpeechRequest, samples: int) -> dict:
    """OpenAI's ``usage`` of a speech response: characters of input (what tts-1 counts)
    and speech tokens of output (25 a second of audio before any speed change)."""
    output = round(samples * request.speed / SAMPLES_PER_TOKEN)
    return {
        "input_tokens": len(request.text),
        "output_tokens": output,
        "total_tokens": len(request.text) + output,
    }

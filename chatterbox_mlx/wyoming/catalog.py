"""The voices this server offers (the ``info`` event) and how a request's ``voice``
picks a model, a voice and a language.

Every voice is offered for every served model: the model's built-in voice (id
``default``) and each saved voice of the library (the HTTP server's, so a voice uploaded
through the web page is offered too). Voice names (what Home Assistant sends back):

=============================  =======================================================
``alice``                      voice ``alice`` on the first served model (English)
``alice:fr``                   ... on a model that needs a language: one voice per
                               language, since Home Assistant sends the voice's name
                               and not the pipeline's language
``multilingual/alice:fr``      ... on a served model other than the first
=============================  =======================================================

A request may also name a voice by its name as saved (``Alice``, any case) and give the
language as ``voice.language``; with a language and no model prefix, the first served
model that speaks the language is used. A model that needs a language and gets none
uses the server's default language (``--language``, default ``en``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import __version__
from ..server.voices import BUILTIN_ID, VoiceEntry, VoiceLibrary
from ..text import SUPPORTED_LANGUAGES, TextError, check_language

PROGRAM = "chatterbox-mlx"
ENGLISH = "en"
ATTRIBUTION = ("Resemble AI", "https://github.com/resemble-ai/chatterbox")
BUILTIN_NAME = "Built-in voice"


class RequestError(ValueError):
    """A request this server refuses; ``code`` goes into the ``error`` event."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Offered:
    """One served model as the catalogue sees it: its name, variant and whether it has
    a built-in voice."""

    name: str
    variant: object  # chatterbox_mlx.variants.Variant
    has_builtin: bool

    @property
    def languages(self) -> list[str]:
        return list(SUPPORTED_LANGUAGES) if self.variant.needs_language else [ENGLISH]

    def speaks(self, language: str) -> bool:
        return _base_language(language) in self.languages


@dataclass(frozen=True)
class Choice:
    """What a request gets: the served model's name, the saved voice (None: the model's
    built-in voice) and the language id for a model that needs one."""

    model: str
    voice: VoiceEntry | None
    language: str | None


def _base_language(language: str) -> str:
    """``en-US``, ``en_GB``, ``EN`` -> ``en`` (Home Assistant's languages carry regions)."""
    return language.strip().replace("_", "-").split("-")[0].lower()


def voice_name(model: Offered, default: Offered, voice_id: str, language: str | None) -> str:
    prefix = "" if model is default else f"{model.name}/"
    suffix = f":{language}" if model.variant.needs_language else ""
    return f"{prefix}{voice_id}{suffix}"


def _description(model: Offered, several: bool, shown: str, language: str | None) -> str:
    """What Home Assistant shows: the voice's name, its language and model when needed."""
    notes = [SUPPORTED_LANGUAGES[language]] if language else []
    if several:
        notes.append(model.name)
    return f"{shown} ({', '.join(notes)})" if notes else shown


def tts_program(models: list[Offered], library: VoiceLibrary):
    """The one ``TtsProgram`` of this server's ``info``: every voice of every model."""
    from wyoming.info import Attribution, TtsProgram, TtsVoice

    attribution = Attribution(*ATTRIBUTION)
    saved = library.list()
    voices = []
    for model in models:
        choices = [(BUILTIN_ID, BUILTIN_NAME)] if model.has_builtin else []
        choices += [(entry.id, entry.name) for entry in saved]
        for voice_id, shown in choices:
            for language in model.languages:
                language_id = language if model.variant.needs_language else None
                voices.append(
                    TtsVoice(
                        name=voice_name(model, models[0], voice_id, language_id),
                        attribution=attribution,
                        installed=True,
                        description=_description(model, len(models) > 1, shown, language_id),
                        version=None,
                        languages=[language],
                    )
                )
    served = ", ".join(m.name for m in models)
    return TtsProgram(
        name=PROGRAM,
        attribution=attribution,
        installed=True,
        description=f"Chatterbox text to speech on Apple MLX ({served})",
        version=__version__,
        voices=voices,
        supports_synthesize_streaming=True,
    )


def _split_name(name: str, models: list[Offered]) -> tuple[Offered | None, str, str | None]:
    """``[model/]voice[:language]`` -> (the model named, the voice, the language)."""
    model = None
    prefix, slash, rest = name.partition("/")
    if slash:
        model = next((m for m in models if m.name.casefold() == prefix.casefold()), None)
        if model is None:
            served = ", ".join(m.name for m in models)
            raise RequestError(
                f"unknown model {prefix!r} in voice {name!r}; this server serves {served}",
                "unknown_voice",
            )
        name = rest
    voice, colon, language = name.rpartition(":")
    if colon and _base_language(language) in SUPPORTED_LANGUAGES:
        return model, voice, language
    return model, name, None


def _pick_model(models: list[Offered], named: Offered | None, language: str | None) -> Offered:
    if named is not None:
        return named
    if language is not None:
        for model in models:
            if model.speaks(language):
                return model
    return models[0]


def _check_language(model: Offered, language: str | None, default: str) -> str | None:
    if not model.variant.needs_language:
        if language is None or _base_language(language) == ENGLISH:
            return None
        raise RequestError(
            f"unknown language {language!r}: the {model.name} model speaks English only "
            f"(en); serve a multilingual model (--model multilingual) for other languages",
            "unknown_language",
        )
    try:
        return check_language(_base_language(language or default))
    except TextError:
        raise RequestError(
            f"unknown language {language or default!r}; the {model.name} model speaks "
            f"{', '.join(SUPPORTED_LANGUAGES)}",
            "unknown_language",
        ) from None


def _find_voice(ref: str, model: Offered, library: VoiceLibrary) -> VoiceEntry | None:
    ref = ref.strip()
    if ref and ref.casefold() not in (BUILTIN_ID, BUILTIN_NAME.casefold()):
        entry = library.find(ref)
        if entry is not None:
            return entry
    elif model.has_builtin:
        return None
    else:
        raise RequestError(
            f"the {model.name} model has no built-in voice; pick a saved voice "
            "(describe lists them)",
            "unknown_voice",
        )
    saved = ", ".join(f"{e.id} ({e.name})" for e in library.list()) or "none yet"
    raise RequestError(
        f"unknown voice {ref!r}; voices: {BUILTIN_ID} (built-in), saved: {saved}. Save one "
        "on the HTTP server's web page (chatterbox-mlx serve) or POST /v1/audio/voices",
        "unknown_voice",
    )


def choose(
    voice, models: list[Offered], library: VoiceLibrary, default_language: str = ENGLISH
) -> Choice:
    """The model, voice and language a request's ``voice`` (a wyoming
    ``SynthesizeVoice`` or None) picks; RequestError naming the problem otherwise."""
    name = getattr(voice, "name", None)
    language = getattr(voice, "language", None)
    if name is not None and not isinstance(name, str) or not isinstance(language, str | None):
        raise RequestError("voice.name and voice.language must be strings", "invalid_request")
    named, ref = None, BUILTIN_ID
    if name is not None and name.strip():
        named, ref, from_name = _split_name(name.strip(), models)
        language = from_name or language
    model = _pick_model(models, named, language)
    language_id = _check_language(model, language, default_language)
    return Choice(model.name, _find_voice(ref, model, library), language_id)

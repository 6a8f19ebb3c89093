"""A speech request's budgets and its generation in the model's thread.

A request is planned whole before it waits for the model (``plan_speech``): the text
pieces the pipeline speaks one call each (``text.plan_text``: sentence-sized chunks,
never across a pause tag) and the silences between them (pause tags exactly; the join
between chunks). Two budgets hold for the whole request however its text is split:

- speech tokens (``--max-new-tokens``): each piece may use what the pieces before it
  left, counted from the audio it made (25 tokens a second before the speed change);
- audio length (``--max-audio-seconds``): estimated before any work (pauses exactly,
  speech from the text at a fast speaker's rate, both through the speed) and refused
  with a 400 when over; then counted sample by sample as the audio comes, the stream
  cut at the limit.

A streamed response holds one chunk at a time; a whole-file response (FLAC) holds at
most the limit.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass

import numpy as np

from .. import text as text_mod
from ..audio import formats
from ..constants import SAMPLES_PER_TOKEN, TOKENS_PER_SECOND
from ..pipeline.pipeline import JOIN_PAUSE_S, MAX_CHUNK_CHARS
from .errors import APIError
from .jobs import DATA, Job, ShuttingDown
from .scheduler import WAIT

# A fast speaker's rate: the estimate of speech length stays below what the text takes.
FAST_CHARS_PER_SECOND = 30.0
SILENCE_BLOCK_S = 1.0  # silence is encoded a second at a time
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class SpeechPlan:
    """What a request speaks, in order: text pieces (str) and silences (float seconds,
    before the speed change)."""

    items: tuple[str | float, ...]

    @property
    def pause_seconds(self) -> float:
        return sum(item for item in self.items if isinstance(item, float))

    @property
    def speech_chars(self) -> int:
        return sum(len(item) for item in self.items if isinstance(item, str))

    def estimated_seconds(self, speed: float, token_budget: int) -> float:
        """A low estimate of the audio's length: pauses exactly, speech at a fast rate
        (and never more than the token budget allows), both through ``speed``."""
        speech = min(self.speech_chars / FAST_CHARS_PER_SECOND, token_budget / TOKENS_PER_SECOND)
        return (self.pause_seconds + speech) / speed


def speakable(text: str) -> bool:
    """Whether ``text`` holds something to say: a letter, a digit or a symbol."""
    return any(unicodedata.category(c)[0] in "LNS" for c in text)


def plan_speech(text: str) -> SpeechPlan:
    """The plan of ``text`` (TextError for malformed pause tags or nothing to speak).
    Pieces with nothing speakable (only punctuation or control characters between two
    pauses) are left out; their silences stay."""
    items: list[str | float] = []
    for item in text_mod.plan_text(text, MAX_CHUNK_CHARS):
        if isinstance(item, text_mod.Pause):
            if items and isinstance(items[-1], float):
                items[-1] += item.seconds
            else:
                items.append(float(item.seconds))
        elif speakable(item):
            if items and isinstance(items[-1], str):
                items.append(JOIN_PAUSE_S)
            items.append(item)
    if not any(isinstance(item, str) for item in items):
        raise text_mod.TextError(
            "input has nothing to speak (no letters or digits, only punctuation, control "
            "characters or pause tags); give some words"
        )
    return SpeechPlan(tuple(items))


def check_length(plan: SpeechPlan, speed: float, token_budget: int, limit: float) -> None:
    """400 when the request would make more than ``limit`` seconds of audio."""
    estimate = plan.estimated_seconds(speed, token_budget)
    if estimate > limit:
        pauses = plan.pause_seconds / speed
        raise APIError(
            400,
            f"the request would make at least {estimate:,.0f} s of audio ({pauses:,.0f} s of "
            f"it pauses, at speed {speed:g}); the limit is {limit:g} s a request "
            "(--max-audio-seconds): shorten the pauses or split the text",
            param="input",
            code="audio_too_long",
        )


def piece_seed(seed: int | None, index: int) -> int | None:
    """Piece ``index``'s seed: the request's for the first piece, then the next ones."""
    return None if seed is None else (seed + index) % (MAX_SEED + 1)


class AudioOut:
    """The response's audio as it is made: encoded at once (stream formats) or kept for
    one file (FLAC); at most ``limit`` samples, then ``full``."""

    def __init__(self, job: Job, fmt: str, sr: int, limit: int):
        self.job, self.fmt, self.sr, self.limit = job, fmt, sr, limit
        self.encoder = formats.StreamEncoder(fmt, sr) if fmt in formats.STREAM_FORMATS else None
        self.pieces: list[np.ndarray] = []
        self.samples = 0

    @property
    def full(self) -> bool:
        return self.samples >= self.limit

    def push(self, wav: np.ndarray) -> None:
        wav = wav[: max(0, self.limit - self.samples)]
        self.samples += wav.size
        self.job.chunks += 1
        if self.encoder is not None:
            self.job.emit(DATA, self.encoder.push(wav))
        else:
            self.pieces.append(wav)
            self.job.emit(DATA, b"")  # progress: the response starts with the whole file

    def silence(self, samples: int) -> int:
        """Up to ``samples`` of silence, a second at a time while the client keeps up;
        returns how many are left to push."""
        block = int(SILENCE_BLOCK_S * self.sr)
        while samples > 0 and not (self.full or self.job.cancelled or self.job.stopping):
            if self.job.backlogged:
                return samples
            self.push(np.zeros(min(samples, block), np.float32))
            samples -= block
        return 0

    def finish(self) -> None:
        if self.encoder is not None:
            self.job.emit(DATA, self.encoder.finish())
        else:
            wav = np.concatenate(self.pieces) if self.pieces else np.zeros(0, np.float32)
            self.job.emit(DATA, formats.encode_audio(wav, self.sr, format=self.fmt))


def tokens_made(samples: int, speed: float, variant) -> int:
    """The speech tokens behind ``samples`` of one piece's audio (its tail left out)."""
    tokens = math.ceil(samples * speed / SAMPLES_PER_TOKEN - 0.5)
    return max(0, tokens - len(variant.tail_tokens) + int(variant.drop_last_token_audio))


class SpeechSession:
    """One speech request in its model's batch (``scheduler``): the plan's items in order,
    each text piece a ``StreamRows`` whose rows the scheduler decodes with other requests'
    rows, within the request's budgets; the audio is encoded as it comes and ``emit`` ted
    chunk by chunk (possibly empty: codecs work on whole frames). ``job.result``: the
    number of samples made."""

    def __init__(self, job: Job, request, state):
        served = request.model
        self.job, self.request, self.settings = job, request, state.settings
        self.model = served.model
        if request.voice is None:
            self.voice = served.builtin
        else:
            prepare = self.model.prepare_voice
            self.voice = state.library.conditionals(
                request.voice, self.model.variant.family, lambda clip: prepare(str(clip))
            )
        limit = int(self.settings.max_audio_seconds * self.model.sr)
        self.out = AudioOut(job, request.response_format, self.model.sr, limit)
        generation = self.model.variant.generation
        self.per_piece = request.params.get("max_new_tokens", generation["max_new_tokens"])
        self.params = {k: v for k, v in request.params.items() if k != "max_new_tokens"}
        self.left = request.token_budget
        items = request.plan.items
        self.last_text = max(i for i, item in enumerate(items) if isinstance(item, str))
        self.index = -1
        self.rows = None  # the text piece being spoken (StreamRows)
        self.made = 0  # samples of that piece
        self.silence = 0  # samples of a pause still to push

    @property
    def t3(self):
        return self.model.t3

    @property
    def stopped(self) -> bool:
        """Nothing more to make: the client left, the server stops, or the audio is full."""
        return self.job.cancelled or self.job.stopping or self.out.full

    def next_row(self):
        """The request's next T3 row (``BatchRow``), its silences pushed on the way; None
        when it has nothing more to say; ``WAIT`` while its client has audio unread (the
        session goes on at a later step, so a slow client's audio is not held here)."""
        while not self.stopped:
            if self.job.backlogged:
                return WAIT
            if self.silence:
                self.silence = self.out.silence(self.silence)
                continue
            if self.rows is not None:
                if (row := self.rows.next_row()) is not None:
                    return row
                self.left -= tokens_made(self.made, self.request.speed, self.model.variant)
                self.rows = None
            self.index += 1
            items = self.request.plan.items
            if self.index >= len(items):
                return None
            if self.left <= 0 and self.index <= self.last_text:  # cut; trailing pauses stay
                return None
            item = items[self.index]
            if isinstance(item, float):
                self.silence = int(round(item * self.model.sr) / self.request.speed + 0.5)
            else:
                self.rows = self._piece(item)
                self._push(self.rows.lead_in())
        return None

    def _piece(self, text: str):
        request, settings = self.request, self.settings
        self.made = 0
        return self.model.stream_rows(
            text,
            voice=self.voice,
            chunk_tokens=settings.chunk_tokens,
            flow_prompt_tokens=settings.flow_prompt_tokens,
            seed=piece_seed(request.seed, self.index),
            watermark=settings.watermark,
            language_id=request.language,
            speed=request.speed,
            max_new_tokens=min(self.left, self.per_piece),
            **self.params,
        )

    def push(self, token: int) -> None:
        """One token of the current row."""
        self._push(self.rows.push(token))

    def end_row(self) -> None:
        """The current row ended (its stop token or its token limit)."""
        self._push(self.rows.end_row())

    def _push(self, pieces) -> None:
        for piece in pieces:
            if self.stopped:
                return
            wav = np.asarray(piece, dtype=np.float32).reshape(-1)
            self.made += wav.size
            self.out.push(wav)

    def finish(self) -> None:
        """The response's end: the stream closed properly (also when the server stops it
        early); a whole file the server stopped, or a response it stopped before any
        audio, is not made (the client retries)."""
        if self.job.cancelled:
            return
        if self.job.stopping and (self.out.encoder is None or not self.out.samples):
            raise ShuttingDown
        self.out.finish()
        self.job.result = self.out.samples

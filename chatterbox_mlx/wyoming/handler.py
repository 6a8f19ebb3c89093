"""One client connection: wyoming's ``AsyncEventHandler`` reading events, and a reply
task answering them in order, so that reading goes on while audio is made (the text of
a stream keeps arriving; a client that leaves is seen at once and its generation
cancelled at the next chunk).

Events (anything else is dropped, as the protocol asks):

- ``describe`` -> ``info`` (read afresh: voices saved meanwhile are offered).
- ``synthesize`` -> ``audio-start`` (24 kHz, 16-bit, mono), ``audio-chunk`` s as the
  model makes them, ``audio-stop``. Inside a stream it is the compatibility copy of the
  stream's text, and ignored.
- ``synthesize-start`` -> ``synthesize-chunk`` * -> ``synthesize-stop``: each complete
  sentence is spoken as soon as it has arrived (``sentences.SentenceBuffer``), all in one
  ``audio-start`` ... ``audio-stop``, then ``synthesize-stopped``.

A refused request (unknown voice or language, empty text, text over ``--max-chars``, a
full queue, a failed generation) gets an ``error`` event with the problem and the fix;
the connection stays open. Audio that started is always closed by ``audio-stop``, and a
stream always ends with ``synthesize-stopped`` (Home Assistant waits for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe
from wyoming.server import AsyncEventHandler
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
)

from .. import text as text_mod
from ..server.jobs import DATA, ERROR, Job, QueueFull
from . import synthesis
from .catalog import Choice, RequestError, choose
from .sentences import SentenceBuffer
from .service import Service

logger = logging.getLogger("chatterbox_mlx.wyoming")

SAMPLES_PER_CHUNK = 1024  # audio-chunk size (43 ms at 24 kHz), as wyoming's servers send


class AudioOut:
    """One ``audio-start`` ... ``audio-stop``: started by the first audio, chunked and
    time-stamped."""

    def __init__(self, write: Callable[[Event], Awaitable[None]], rate: int):
        self._write = write
        self.rate = rate
        self.started = False
        self.samples = 0

    def _ms(self) -> int:
        return self.samples * 1000 // self.rate

    async def start(self) -> None:
        if not self.started:
            self.started = True
            start = AudioStart(self.rate, synthesis.WIDTH, synthesis.CHANNELS, timestamp=0)
            await self._write(start.event())

    async def push(self, pcm: bytes) -> None:
        await self.start()
        step = SAMPLES_PER_CHUNK * synthesis.WIDTH
        for offset in range(0, len(pcm), step):
            piece = pcm[offset : offset + step]
            chunk = AudioChunk(
                self.rate, synthesis.WIDTH, synthesis.CHANNELS, piece, timestamp=self._ms()
            )
            await self._write(chunk.event())
            self.samples += len(piece) // synthesis.WIDTH

    async def stop(self) -> None:
        await self.start()
        await self._write(AudioStop(timestamp=self._ms()).event())


@dataclass
class _Stream:
    """A ``synthesize-start`` ... ``synthesize-stop`` in progress."""

    choice: Choice | None
    out: AudioOut
    text: SentenceBuffer = field(default_factory=SentenceBuffer)
    chars: int = 0
    spoken: int = 0  # pieces of text sent to be spoken
    accepting: bool = True  # read side: more text is taken
    failed: bool = False  # reply side: an error was sent; the rest is dropped


def _failure(err: BaseException) -> RequestError:
    """What a failed generation answers: the library's own message for bad input (a
    ValueError: text, parameters, voice files), else a logged internal error."""
    if isinstance(err, RequestError):
        return err
    if isinstance(err, ValueError):
        return RequestError(str(err), "invalid_text")
    logger.error("generation failed", exc_info=(type(err), err, err.__traceback__))
    return RequestError(
        f"generation failed ({type(err).__name__}: {err}); the server log has the details",
        "generation_failed",
    )


class Handler(AsyncEventHandler):
    """The events of one connection (see the module docstring)."""

    def __init__(self, service: Service, reader, writer):
        super().__init__(reader, writer)
        self.service = service
        self._replies: asyncio.Queue = asyncio.Queue()
        self._replier: asyncio.Task | None = None
        self._stream: _Stream | None = None

    # ---- reading (wyoming's loop) ----------------------------------------------------

    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            self._later(self._send_info)
        elif Synthesize.is_type(event.type):
            if self._stream is None:  # inside a stream: the compatibility copy
                self._synthesize(event)
        elif SynthesizeStart.is_type(event.type):
            self._start_stream(event)
        elif SynthesizeChunk.is_type(event.type):
            self._stream_text(event)
        elif SynthesizeStop.is_type(event.type):
            self._stop_stream()
        return True

    def _later(self, reply: Callable[[], Awaitable[None]]) -> None:
        if self._replier is None:
            self._replier = asyncio.create_task(self._reply_in_order(), name="wyoming replies")
        self._replies.put_nowait(reply)

    def _refuse(self, err: RequestError) -> None:
        self._later(partial(self._send_error, err))

    def _checked_text(self, text) -> str:
        if not isinstance(text, str):
            raise RequestError("synthesize needs data.text, a string", "invalid_request")
        if not text.strip():
            raise RequestError("the text is empty: give some words to speak", "empty_text")
        try:
            text = text_mod.check_text(text, "text")
        except text_mod.TextError as err:
            raise RequestError(str(err), "invalid_text") from None
        limit = self.service.settings.max_chars
        if len(text) > limit:
            raise RequestError(
                f"the text has {len(text):,} characters; this server's limit is {limit:,} "
                "(--max-chars): split it into several requests",
                "text_too_long",
            )
        return text

    def _choose(self, voice) -> Choice:
        service = self.service
        return choose(voice, service.offered(), service.library, service.settings.language)

    def _synthesize(self, event: Event) -> None:
        try:
            request = Synthesize.from_event(event)
            utterance = synthesis.Utterance(
                self._checked_text(request.text), self._choose(request.voice)
            )
        except RequestError as err:
            return self._refuse(err)
        except (KeyError, TypeError, AttributeError):
            return self._refuse(
                RequestError(
                    "synthesize needs data.text (a string) and, optionally, data.voice (an "
                    'object such as {"name": "alice"})',
                    "invalid_request",
                )
            )
        self._later(partial(self._speak_whole, utterance))

    def _start_stream(self, event: Event) -> None:
        if self._stream is not None:
            return self._refuse(
                RequestError(
                    "synthesize-start while a stream is open: send synthesize-stop first",
                    "invalid_request",
                )
            )
        refusal = None
        try:
            choice = self._choose(SynthesizeStart.from_event(event).voice)
        except RequestError as err:
            choice, refusal = None, err
        except (KeyError, TypeError, AttributeError):
            choice = None
            refusal = RequestError("synthesize-start has a malformed voice", "invalid_request")
        self._stream = _Stream(choice, self._audio_out())
        if refusal is not None:
            self._stream.accepting = False
            self._later(partial(self._fail, self._stream, refusal))

    def _stream_text(self, event: Event) -> None:
        stream = self._stream
        if stream is None:
            return self._refuse(
                RequestError(
                    "synthesize-chunk without synthesize-start: start a stream first",
                    "invalid_request",
                )
            )
        if not stream.accepting:
            return
        piece = event.data.get("text")
        if not isinstance(piece, str):
            stream.accepting = False
            error = RequestError("synthesize-chunk needs data.text", "invalid_request")
            return self._later(partial(self._fail, stream, error))
        stream.chars += len(piece)
        limit = self.service.settings.max_chars
        if stream.chars > limit:
            stream.accepting = False
            error = RequestError(
                f"the streamed text passed this server's limit of {limit:,} characters "
                "(--max-chars); the rest was not spoken",
                "text_too_long",
            )
            return self._later(partial(self._fail, stream, error))
        ready = stream.text.add(piece)
        if ready:
            self._speak_later(stream, ready)

    def _speak_later(self, stream: _Stream, text: str) -> None:
        stream.spoken += 1
        self._later(partial(self._speak_part, stream, text))

    def _stop_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return self._refuse(
                RequestError(
                    "synthesize-stop without synthesize-start: start a stream first",
                    "invalid_request",
                )
            )
        if stream.accepting and (rest := stream.text.finish()):
            self._speak_later(stream, rest)
        empty = stream.accepting and not stream.spoken
        self._later(partial(self._end_stream, stream, empty))

    async def disconnect(self) -> None:
        """The client left (or the server stops): cancel the reply, hence its generation."""
        if self._replier is not None:
            self._replier.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replier

    # ---- replying (one task, in order) ------------------------------------------------

    async def _reply_in_order(self) -> None:
        while True:
            reply = await self._replies.get()
            try:
                await reply()
            except ConnectionError:  # the client is gone: end the connection
                self.writer.close()
                self.reader.feed_eof()
                return
            except Exception as err:  # a bug: say so, keep the connection
                logger.exception("a reply failed")
                with contextlib.suppress(ConnectionError):
                    await self._send_error(
                        RequestError(f"internal error ({type(err).__name__}: {err})", "internal")
                    )

    def _audio_out(self) -> AudioOut:
        return AudioOut(self.write_event, self.service.sample_rate)

    async def _send_info(self) -> None:
        await self.write_event(self.service.info().event())

    async def _send_error(self, err: RequestError) -> None:
        logger.info("refused: %s", err)
        await self.write_event(Error(text=str(err), code=err.code).event())

    async def _generate(self, utterance: synthesis.Utterance, out: AudioOut) -> bool:
        """Speak ``utterance`` into ``out``: True once all of it was sent, False after an
        error event."""
        served = self.service.served[utterance.choice.model]
        job = Job(lambda j: synthesis.run(j, self.service, utterance), asyncio.get_running_loop())
        try:
            served.worker.submit(job)
        except QueueFull as full:
            await self._send_error(
                RequestError(
                    f"the {served.name} model is busy: {full.waiting} requests are already "
                    f"waiting (--max-queue {served.worker.max_queue}); retry in about "
                    f"{full.retry_after} s",
                    "queue_full",
                )
            )
            return False
        done, failed = False, False
        try:
            while not done:
                kind, value = await job.next()
                if kind == DATA:
                    if value:
                        await out.push(value)
                elif kind == ERROR:
                    failed = True
                    await self._send_error(_failure(value))
                else:
                    done = True
        finally:
            if not done:
                served.worker.cancel(job)
        return not failed

    async def _speak_whole(self, utterance: synthesis.Utterance) -> None:
        out = self._audio_out()
        if await self._generate(utterance, out) or out.started:
            await out.stop()

    async def _speak_part(self, stream: _Stream, text: str) -> None:
        if stream.failed:
            return
        try:
            text = text_mod.check_text(text, "text")
        except text_mod.TextError as err:
            return await self._fail(stream, RequestError(str(err), "invalid_text"))
        if not await self._generate(synthesis.Utterance(text, stream.choice), stream.out):
            stream.failed = True

    async def _fail(self, stream: _Stream, err: RequestError) -> None:
        if not stream.failed:
            stream.failed = True
            await self._send_error(err)

    async def _end_stream(self, stream: _Stream, empty: bool) -> None:
        if empty:
            await self._fail(
                stream, RequestError("the text is empty: give some words to speak", "empty_text")
            )
        if stream.out.started:
            await stream.out.stop()
        await self.write_event(SynthesizeStopped().event())

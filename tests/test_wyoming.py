"""The Wyoming server as Home Assistant meets it: the real ``wyoming`` client
(``AsyncTcpClient``) against the real server on 127.0.0.1 (a free port), a Turbo
random-weight model with a short built-in voice (``tests.helpers.server``), the real
voice library; the command lines in subprocesses.

Random weights never emit the stop token, so a request for ``n`` speech tokens gives
``n`` tokens plus Turbo's 3 silence tokens, 960 samples each at 24 kHz. Every request
has the server's seed, so the same text gives the same audio.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from functools import partial

from chatterbox_mlx.audio import formats
from chatterbox_mlx.server.voices import VoiceLibrary, evaluated
from chatterbox_mlx.text import SUPPORTED_LANGUAGES
from chatterbox_mlx.tts import load_pipeline
from chatterbox_mlx.variants import get_variant
from chatterbox_mlx.wyoming import catalog
from chatterbox_mlx.wyoming.handler import Handler
from chatterbox_mlx.wyoming.sentences import SentenceBuffer
from chatterbox_mlx.wyoming.server import open_server
from chatterbox_mlx.wyoming.service import Service, Settings

import numpy as np
import pytest
from wyoming.audio import AudioChunk, AudioStart
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.info import Describe, Info
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeVoice,
)

from tests.helpers.server import ROOT, short_voice_dir, wait_healthy, write_clip

SR = 24000
PER_TOKEN = 960
TAIL = 3  # Turbo's silence tokens after the speech
TOKENS = 3
SEED = 11
HELLO = "Hello there."
QUICK = Settings(max_new_tokens=TOKENS, chunk_tokens=2, max_chars=100, watermark=False, seed=SEED)
LONG = replace(QUICK, max_new_tokens=60)  # 30 chunks of 2 tokens


def samples(tokens: int = TOKENS) -> int:
    return (tokens + TAIL) * PER_TOKEN


# ---- a server in a thread, clients ---------------------------------------------------


class WyomingThread:
    """The Wyoming server for ``service`` on 127.0.0.1 (a free port), in its own event
    loop in a thread."""

    def __init__(self, service: Service):
        self.service = service
        self.server = open_server("tcp://127.0.0.1:0")
        self.port = self.server.address[1]
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.start(partial(Handler, self.service)))
        self._started.set()
        self.loop.run_forever()

    def __enter__(self) -> WyomingThread:
        self.thread.start()
        assert self._started.wait(60), "the Wyoming server did not start"
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(60)


def connect(port: int) -> AsyncTcpClient:
    return AsyncTcpClient("127.0.0.1", port, connect_timeout=30, read_timeout=300)


async def read_until(client: AsyncTcpClient, *types: str) -> list:
    """Events up to and including the first of ``types``."""
    events = []
    while True:
        event = await client.read_event()
        assert event is not None, f"the server closed the connection; got {events}"
        events.append(event)
        if event.type in types:
            return events


async def ask(port: int, *events, until: str = "audio-stop") -> list:
    async with connect(port) as client:
        for event in events:
            await client.write_event(event.event())
        return await read_until(client, until, "error")


def audio_of(events: list) -> np.ndarray:
    """The int16 samples of a reply, checking the format of every audio event."""
    pcm = bytearray()
    for event in events:
        if event.type in ("audio-start", "audio-chunk"):
            fmt = (AudioStart if event.type == "audio-start" else AudioChunk).from_event(event)
            assert (fmt.rate, fmt.width, fmt.channels) == (SR, 2, 1)
        if event.type == "audio-chunk":
            pcm += AudioChunk.from_event(event).audio
    return np.frombuffer(bytes(pcm), "<i2")


def types(events: list) -> list[str]:
    return [e.type for e in events if e.type != "audio-chunk"]


def error_of(events: list) -> Error:
    assert events[-1].type == "error", types(events)
    return Error.from_event(events[-1])


# ---- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def turbo():
    return load_pipeline(str(short_voice_dir("turbo")))


@pytest.fixture(scope="module")
def library(turbo, tmp_path_factory):
    """A library with one saved voice, Alice: the built-in voice saved as a voice."""
    library = VoiceLibrary(tmp_path_factory.mktemp("voices"))
    staging = library.staging()
    write_clip(staging / "source.wav", 1.0)
    library.add("Alice", staging, "source.wav", turbo.variant.family, evaluated(turbo.conds))
    return library


@pytest.fixture(scope="module")
def quick(turbo, library):
    service = Service.create({"turbo": turbo}, library, QUICK, max_queue=4)
    with WyomingThread(service) as server:
        yield server
    service.close()


@pytest.fixture(scope="module")
def slow(quick):
    """Long generations on the same model and worker as ``quick``."""
    service = Service(quick.service.served, quick.service.library, LONG)
    with WyomingThread(service) as server:
        yield server


@pytest.fixture(scope="module")
def hello(quick) -> tuple[list, np.ndarray]:
    """The events and samples the server answers HELLO with (checked in
    ``test_synthesize_sends_what_the_model_makes``)."""
    events = asyncio.run(ask(quick.port, Synthesize(text=HELLO)))
    return events, audio_of(events)


def status(server: WyomingThread) -> dict:
    return server.service.served["turbo"].worker.status()


def wait_for(server: WyomingThread, check, what: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while not check(state := status(server)):
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {state}"
        time.sleep(0.05)
    return state


def settled(server: WyomingThread, done: int) -> dict:
    """The counters once ``done`` jobs are counted and none runs (the worker counts a
    job just after its last item, which the client may already have read)."""
    return wait_for(server, lambda s: s["done"] >= done and not s["busy"], f"{done} done")


# ---- the text of a stream ------------------------------------------------------------


def test_streamed_text_is_cut_at_decided_sentence_ends():
    buffer = SentenceBuffer()
    assert buffer.add("Hello there") is None
    assert buffer.add(". How") == "Hello there."
    assert buffer.add(" are you?") is None  # "?" then nothing yet: it may go on
    assert buffer.add(" Fine, thanks. It costs 3.") == "How are you? Fine, thanks."
    assert buffer.add("5 euros, e.g. this.") is None  # "3.5" and "e.g. this" are not cut
    assert buffer.finish() == "It costs 3.5 euros, e.g. this."
    assert buffer.finish() is None
    long = SentenceBuffer(max_chars=20)
    assert long.add("one two three four") is None
    assert long.add(" five six seven") == "one two three four"  # no sentence end: whitespace
    assert long.finish() == "five six seven"


# ---- the catalogue -------------------------------------------------------------------


def test_multilingual_voices_are_offered_in_each_of_its_23_languages(library):
    models = [
        catalog.Offered("turbo", get_variant("turbo"), True),
        catalog.Offered("multilingual", get_variant("multilingual"), True),
    ]
    program = catalog.tts_program(models, library)
    names = {v.name: v for v in program.voices}
    assert len(SUPPORTED_LANGUAGES) == 23
    assert len(names) == len(program.voices) == 2 + 2 * 23  # 2 voices on turbo, 2 x 23
    assert names["default"].languages == ["en"] and names["alice"].languages == ["en"]
    for language in SUPPORTED_LANGUAGES:
        assert names[f"multilingual/alice:{language}"].languages == [language]
        assert names[f"multilingual/default:{language}"].description.startswith("Built-in")
    assert names["multilingual/alice:fr"].description == "Alice (French, multilingual)"
    assert program.supports_synthesize_streaming and program.attribution.name == "Resemble AI"

    def choose(**voice):
        choice = catalog.choose(SynthesizeVoice(**voice) if voice else None, models, library)
        return choice.model, choice.voice and choice.voice.id, choice.language

    assert choose() == ("turbo", None, None)
    assert choose(name="Alice") == ("turbo", "alice", None)
    assert choose(language="fr") == ("multilingual", None, "fr")  # the first that speaks it
    assert choose(name="alice:de") == ("multilingual", "alice", "de")
    assert choose(name="multilingual/default") == ("multilingual", None, "en")  # --language
    assert choose(name="multilingual/alice:pt-BR") == ("multilingual", "alice", "pt")
    assert choose(language="en-US") == ("turbo", None, None)
    for voice, code, words in (
        ({"name": "bob"}, "unknown_voice", "unknown voice 'bob'; voices: default (built-in), "
         "saved: alice (Alice)"),
        ({"name": "nano/alice"}, "unknown_voice", "this server serves turbo, multilingual"),
        ({"language": "xx"}, "unknown_language", "the turbo model speaks English only"),
        ({"name": "multilingual/alice", "language": "xx"}, "unknown_language", "fr"),
    ):  # fmt: skip
        with pytest.raises(catalog.RequestError) as caught:
            choose(**voice)
        assert caught.value.code == code and words in str(caught.value), caught.value


# ---- over the protocol ---------------------------------------------------------------


def test_describe_lists_the_builtin_and_saved_voices(quick, library):
    events = asyncio.run(ask(quick.port, Describe(), until="info"))
    info = Info.from_event(events[-1])
    (program,) = info.tts
    assert program.name == "chatterbox-mlx" and program.version
    assert program.supports_synthesize_streaming
    assert program.attribution.name == "Resemble AI"
    assert {(v.name, v.description, tuple(v.languages)) for v in program.voices} == {
        ("default", "Built-in voice", ("en",)),
        ("alice", "Alice", ("en",)),
    }
    staging = library.staging()  # a voice saved now is offered at the next describe
    write_clip(staging / "source.wav", 1.0)
    entry = library.add(
        "Bob", staging, "source.wav", "turbo", quick.service.served["turbo"].builtin
    )
    try:
        events = asyncio.run(ask(quick.port, Describe(), until="info"))
        assert "bob" in {v.name for v in Info.from_event(events[-1]).tts[0].voices}
    finally:
        library.delete(entry.id)


def test_a_unix_socket_uri_serves_too(quick, tmp_path):
    """``--uri unix://PATH``: wyoming's own Unix server with this handler; the socket
    file is gone after it stops."""
    from wyoming.client import AsyncUnixClient

    path = tmp_path / "wyoming.sock"
    server = open_server(f"unix://{path}")

    async def describe() -> Info:
        await server.start(partial(Handler, quick.service))
        try:
            async with AsyncUnixClient(path) as client:
                await client.write_event(Describe().event())
                return Info.from_event((await read_until(client, "info"))[-1])
        finally:
            await server.stop()

    assert [v.name for v in asyncio.run(describe()).tts[0].voices] == ["default", "alice"]
    assert not path.exists()


def test_synthesize_sends_what_the_model_makes(quick, turbo, hello):
    """audio-start, the chunks, audio-stop: 16-bit mono at 24 kHz, the very samples of
    the model's own stream for the same seed."""
    events, audio = hello
    assert types(events) == ["audio-start", "audio-stop"]
    expected = [
        np.asarray(c).reshape(-1)
        for c in turbo.generate_stream(
            HELLO, seed=SEED, watermark=False, chunk_tokens=2, max_new_tokens=TOKENS
        )
    ]
    pcm = formats.encode_audio(np.concatenate(expected), SR, format="pcm")
    assert len(audio) == samples() and audio.tobytes() == pcm
    saved = audio_of(
        asyncio.run(ask(quick.port, Synthesize(text=HELLO, voice=SynthesizeVoice("alice"))))
    )
    assert np.array_equal(saved, audio)  # Alice is the built-in voice saved


def test_first_audio_arrives_while_generating_and_a_client_that_leaves_stops_it(slow):
    """60 tokens at 2 a chunk: the first chunk comes while the model still generates;
    the client leaves; the generation stops within a chunk or two; the server goes on."""
    before = wait_for(slow, lambda s: not s["busy"], "an idle model")

    async def leave_after_the_first_chunk() -> dict:
        async with connect(slow.port) as client:
            await client.write_event(Synthesize(text=HELLO).event())
            events = await read_until(client, "audio-chunk")
            assert types(events) == ["audio-start"]
            return status(slow)

    during = asyncio.run(leave_after_the_first_chunk())
    assert during["busy"] and during["done"] == before["done"], during
    after = wait_for(slow, lambda s: s["cancelled"] == before["cancelled"] + 1, "the cancel")
    assert not after["busy"] and after["done"] == before["done"]
    seen, made = during["chunks"] - before["chunks"], after["chunks"] - before["chunks"]
    assert made <= seen + 3 < 30, (seen, made)
    info = asyncio.run(ask(slow.port, Describe(), until="info"))
    assert info[-1].type == "info"


def test_streamed_text_is_spoken_sentence_by_sentence(quick, hello):
    """The first sentence is spoken before the rest of the text is sent; the
    compatibility ``synthesize`` inside the stream is not spoken again; one audio-start
    ... audio-stop, then synthesize-stopped."""
    before = wait_for(quick, lambda s: not s["busy"], "an idle model")

    async def stream() -> tuple[list, list]:
        async with connect(quick.port) as client:
            await client.write_event(SynthesizeStart().event())
            await client.write_event(SynthesizeChunk(text="Hello ").event())
            await client.write_event(SynthesizeChunk(text="there. How").event())
            first = await read_until(client, "audio-chunk")
            for event in (
                SynthesizeChunk(text=" are you?"),
                Synthesize(text="Hello there. How are you?"),
                SynthesizeStop(),
            ):
                await client.write_event(event.event())
            return first, await read_until(client, "synthesize-stopped")

    first, rest = asyncio.run(stream())
    events = first + rest
    assert types(events) == ["audio-start", "audio-stop", "synthesize-stopped"]
    audio = audio_of(events)
    assert len(audio) == 2 * samples()
    assert np.array_equal(audio[: samples()], hello[1])  # "Hello there." alone, same seed
    after = settled(quick, before["done"] + 2)
    assert after["done"] == before["done"] + 2  # two sentences, the copy not spoken


def test_refusals_are_error_events_and_the_connection_goes_on(quick, hello):
    async def session() -> list:
        replies = []
        async with connect(quick.port) as client:

            async def send(*events, until="error"):
                for event in events:
                    await client.write_event(event.event())
                ends = (until,) if until == "synthesize-stopped" else (until, "error")
                replies.append(await read_until(client, *ends))

            await send(Synthesize(text="Hi.", voice=SynthesizeVoice(name="nobody")))
            await send(Synthesize(text="   "))
            await send(Synthesize(text="x" * 101))
            await send(Synthesize(text="Salut.", voice=SynthesizeVoice(language="fr")))
            await send(Synthesize(text="[pause:abc] Hi."))
            await send(SynthesizeChunk(text="Hi."))
            await send(Synthesize(text=5))
            await send(SynthesizeStart(voice=SynthesizeVoice(name="nobody")),
                       SynthesizeChunk(text="Hi. There."), SynthesizeStop(),
                       until="synthesize-stopped")  # fmt: skip
            await send(SynthesizeStart(), SynthesizeStop(), until="synthesize-stopped")
            await send(Describe(), until="info")
            await send(Synthesize(text=HELLO), until="audio-stop")
        return replies

    replies = asyncio.run(session())
    expected = [
        ("unknown_voice", "unknown voice 'nobody'; voices: default (built-in), saved: alice"),
        ("empty_text", "the text is empty"),
        ("text_too_long", "101 characters; this server's limit is 100 (--max-chars)"),
        ("unknown_language", "unknown language 'fr': the turbo model speaks English only"),
        ("invalid_text", "pause"),
        ("invalid_request", "synthesize-chunk without synthesize-start"),
        ("invalid_request", "synthesize needs data.text, a string"),
    ]
    for events, (code, words) in zip(replies, expected, strict=False):  # the first 7
        error = error_of(events)
        assert error.code == code and words in error.text, error
    for events, code in zip(replies[7:9], ("unknown_voice", "empty_text"), strict=True):
        assert types(events) == ["error", "synthesize-stopped"]  # no audio; the stream ends
        assert Error.from_event(events[0]).code == code
    assert types(replies[9]) == ["info"]
    assert np.array_equal(audio_of(replies[10]), hello[1])


def test_two_clients_at_once_share_the_queue(quick, hello):
    before = wait_for(quick, lambda s: not s["busy"], "an idle model")

    async def both():
        return await asyncio.gather(
            ask(quick.port, Synthesize(text=HELLO)), ask(quick.port, Synthesize(text=HELLO))
        )

    for events in asyncio.run(both()):
        assert types(events) == ["audio-start", "audio-stop"]
        assert np.array_equal(audio_of(events), hello[1])
    assert settled(quick, before["done"] + 2)["done"] == before["done"] + 2


def test_zeroconf_record_names_the_wyoming_service():
    from chatterbox_mlx.wyoming.discovery import SERVICE_TYPE, default_name, service_info

    info = service_info("kitchen-tts", "127.0.0.1", 10200)
    assert SERVICE_TYPE == "_wyoming._tcp.local."
    assert info.type == SERVICE_TYPE and info.name == "kitchen-tts._wyoming._tcp.local."
    assert info.port == 10200 and info.parsed_addresses() == ["127.0.0.1"]
    assert info.server == "kitchen-tts.local."
    assert default_name().startswith("chatterbox-mlx-")
    for bad in ("", "a.b", "x" * 64):
        with pytest.raises(ValueError, match="--zeroconf name"):
            service_info(bad, "127.0.0.1", 10200)


async def look_up(name: str, wait_ms: int):
    """The ``_wyoming._tcp`` record ``name`` as a fresh zeroconf on 127.0.0.1 finds it."""
    from chatterbox_mlx.wyoming.discovery import SERVICE_TYPE

    from zeroconf.asyncio import AsyncZeroconf

    browser = AsyncZeroconf(interfaces=["127.0.0.1"])
    try:
        return await browser.async_get_service_info(SERVICE_TYPE, name, wait_ms)
    finally:
        await browser.async_close()


def test_zeroconf_advertises_on_loopback_and_withdraws():
    """The record registered on 127.0.0.1 only (mDNS never leaves the machine) is found
    by a second zeroconf instance there; after ``close`` a fresh one no longer finds it."""
    from chatterbox_mlx.wyoming.discovery import Advertiser, service_info

    info = service_info("chatterbox-mlx-test", "127.0.0.1", 10299)

    async def advertise():
        advertiser = Advertiser(info, interfaces=["127.0.0.1"])
        try:
            await advertiser.start()
        except OSError as err:
            pytest.skip(f"no multicast on the loopback interface here: {err}")
        try:
            found = await look_up(info.name, 5000)
        finally:
            await advertiser.close()
        return found, await look_up(info.name, 1500)

    found, after = asyncio.run(advertise())
    assert found is not None, "the advertised record was not found on 127.0.0.1"
    assert (found.port, found.parsed_addresses()) == (10299, ["127.0.0.1"])
    assert after is None


# ---- the command lines ---------------------------------------------------------------


@contextmanager
def command(*args: str, pattern: str, timeout: float = 300):
    """A command of this package in a subprocess; yields (process, log lines, the first
    match of ``pattern`` in its standard error)."""
    proc = subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)},
    )
    log: list[str] = []
    found: list[re.Match] = []
    ready = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            log.append(line)
            if not found and (match := re.search(pattern, line)):
                found.append(match)
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(timeout) and found, "".join(log)
        yield proc, log, found[0]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_wyoming_command_serves_and_stops_on_sigterm(tmp_path):
    args = ("-m", "chatterbox_mlx.wyoming", "--uri", "tcp://127.0.0.1:0",
            "--model", str(short_voice_dir("turbo")), "--voices", str(tmp_path / "v"),
            "--max-new-tokens", "2", "--chunk-tokens", "2", "--no-watermark",
            "--zeroconf", "chatterbox-mlx-cli-test")  # fmt: skip
    pattern = r"serving turbo on tcp://127\.0\.0\.1:(\d+) \(voices in "
    with command(*args, pattern=pattern) as (proc, log, match):
        port = int(match.group(1))
        assert "advertised as chatterbox-mlx-cli-test._wyoming._tcp.local." in match.string
        found = asyncio.run(look_up("chatterbox-mlx-cli-test._wyoming._tcp.local.", 5000))
        assert found is not None and found.port == port  # bound to 127.0.0.1: announced there
        info = asyncio.run(ask(port, Describe(), until="info"))
        assert [v.name for v in Info.from_event(info[-1]).tts[0].voices] == ["default"]
        events = asyncio.run(ask(port, Synthesize(text=HELLO)))
        assert len(audio_of(events)) == samples(2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    assert "stopped" in log[-1]


def test_wyoming_command_errors_are_one_line(tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "chatterbox_mlx.cli.main", "wyoming", *args],
            capture_output=True, text=True, timeout=120, cwd=ROOT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )  # fmt: skip

    r = run("--uri", "http://127.0.0.1:10200", "--voices", str(tmp_path))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (
        "chatterbox-mlx wyoming: error: --uri 'http://127.0.0.1:10200': use tcp://HOST:PORT "
        "(e.g. tcp://127.0.0.1:10200), unix://PATH or stdio://"
    )
    with socket.create_server(("127.0.0.1", 0)) as busy:  # a port in use
        r = run("--uri", f"tcp://127.0.0.1:{busy.getsockname()[1]}", "--voices", str(tmp_path))
    assert r.returncode == 1 and "cannot listen on 127.0.0.1" in r.stderr, r.stderr
    r = run("--language", "xx", "--voices", str(tmp_path))
    assert r.returncode == 1 and "--language" in r.stderr and "Traceback" not in r.stderr
    assert run("--max-chars", "0").returncode == 2


def test_serve_wyoming_shares_one_model_with_the_http_server(tmp_path):
    """``serve --wyoming``: a voice uploaded over HTTP is offered over Wyoming, and a
    Wyoming request runs on the HTTP server's model and queue (its /health counts it)."""
    import httpx

    args = ("-m", "chatterbox_mlx.server", "--port", "0", "--wyoming", "tcp://127.0.0.1:0",
            "--model", str(short_voice_dir("turbo")), "--voices", str(tmp_path / "v"),
            "--max-new-tokens", "2", "--chunk-tokens", "2", "--no-watermark")  # fmt: skip
    with command(*args, pattern=r"Wyoming protocol on tcp://127\.0\.0\.1:(\d+)") as found:
        proc, log, match = found
        port = int(match.group(1))
        url = re.search(r"on (http://\S+?:\d+)", "".join(log)).group(1)
        wait_healthy(url)
        with open(write_clip(tmp_path / "clip.wav", 6.0), "rb") as clip:
            upload = {"file": ("clip.wav", clip, "audio/wav")}
            r = httpx.post(url + "/v1/audio/voices", data={"name": "Carol"}, files=upload,
                           timeout=300)  # fmt: skip
        assert r.status_code == 200, r.text
        info = asyncio.run(ask(port, Describe(), until="info"))
        names = [v.name for v in Info.from_event(info[-1]).tts[0].voices]
        assert names == ["default", "carol"]
        before = httpx.get(url + "/health").json()["models"][0]
        events = asyncio.run(ask(port, Synthesize(text=HELLO, voice=SynthesizeVoice("carol"))))
        assert len(audio_of(events)) == samples(2)
        after = httpx.get(url + "/health").json()["models"][0]
        assert after["done"] == before["done"] + 1
        assert "loading" in "".join(log) and "".join(log).count("loading") == 1

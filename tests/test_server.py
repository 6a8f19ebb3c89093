"""The OpenAI-compatible server as its clients meet it: uvicorn on 127.0.0.1 (real HTTP),
the real ``openai`` package as the client (plain ``httpx`` and raw sockets for what a
client library would not send), a Nano random-weight model with a short built-in voice
(``tests.helpers.server``) so that each request costs a second or two.

Random weights never emit the stop token, so a request for ``n`` speech tokens gives
exactly ``n`` tokens plus Turbo/Nano's 3 silence tokens, 960 samples each at 24 kHz.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

from chatterbox_mlx.server.app import Settings, create_app
from chatterbox_mlx.server.cli import build_parser, settings_from
from chatterbox_mlx.tts import load_pipeline

import httpx
import numpy as np
import openai
import pytest
import soundfile

from tests.helpers.server import CliServer, ThreadServer, short_voice_dir, write_clip

pytestmark = pytest.mark.server

KEY = "test-key"
PER_TOKEN = 960
SR = 24000
TAIL = 3  # Nano's silence tokens after the speech
TEXT = "Hello there."


def samples(tokens: int) -> int:
    return (tokens + TAIL) * PER_TOKEN


@pytest.fixture(scope="module")
def nano():
    return load_pipeline(str(short_voice_dir("nano")))


@contextmanager
def serving(nano, voices_dir, **changes):
    settings = Settings(
        **{
            "api_key": KEY,
            "watermark": False,
            "max_new_tokens": 3,
            "chunk_tokens": 2,
            "max_chars": 300,
            "max_upload_bytes": 1 << 20,
            "max_voice_seconds": 12.0,
            **changes,
        }
    )
    with ThreadServer(create_app({"nano": nano}, settings=settings, voices_dir=voices_dir)) as s:
        yield s


@pytest.fixture(scope="module")
def voices_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("voices")


@pytest.fixture(scope="module")
def server(nano, voices_dir):
    with serving(nano, voices_dir) as s:
        yield s


@pytest.fixture(scope="module")
def long_server(nano, tmp_path_factory):
    """Long generations (60 tokens, 2 a chunk), one at a time, one waiting at most."""
    voices = tmp_path_factory.mktemp("voices-long")
    with serving(nano, voices, max_new_tokens=60, max_queue=1, max_batch=1) as s:
        yield s


def client(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=300)


def auth(key: str = KEY) -> dict:
    return {"Authorization": f"Bearer {key}"}


def post(url: str, path: str, body, key: str = KEY, **kwargs) -> httpx.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        url + path,
        content=data,
        timeout=300,
        headers={**auth(key), "Content-Type": "application/json"},
        **kwargs,
    )


def health(url: str) -> dict:
    return httpx.get(url + "/health", timeout=30).json()["models"][0]


def wait_for(url: str, check, what: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = health(url)
        if check(state):
            return state
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {state}"
        time.sleep(0.05)


def assert_error(
    response: httpx.Response, status: int, param=None, code=None, contains: str = ""
) -> dict:
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and contains in error["message"], error
    if param is not None:
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return error


def decode(data: bytes, fmt: str) -> tuple[np.ndarray, int]:
    if fmt == "pcm":
        return np.frombuffer(data, "<i2").astype(np.float32) / 32768, SR
    return soundfile.read(io.BytesIO(data), dtype="float32")


def raw_request(url: str, body: dict) -> socket.socket:
    """A speech request over a plain socket (closing it is a client that leaves)."""
    host, port = url.removeprefix("http://").split(":")
    data = json.dumps(body).encode()
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        f"POST /v1/audio/speech HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    return sock


def read_until_body(sock: socket.socket) -> bytes:
    """The response's head and its first body bytes (blocks until they come)."""
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) == 0:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed: {data!r}"
        data += chunk
    return data


# ---- speech ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["mp3", "opus", "flac", "wav", "pcm"])
def test_every_format_decodes_to_its_rate_and_duration(server, fmt):
    response = client(server.url).audio.speech.with_raw_response.create(
        model="tts-1",
        voice="alloy",
        input=TEXT,
        response_format=fmt,
        extra_body={"max_new_tokens": 2, "seed": 0},
    )
    assert response.headers["content-type"].startswith(
        {
            "mp3": "audio/mpeg",
            "opus": "audio/ogg",
            "flac": "audio/flac",
            "wav": "audio/wav",
            "pcm": "audio/pcm",
        }[fmt]
    )
    assert response.headers["x-model"] == "nano"
    wav, rate = decode(response.content, fmt)
    assert rate == SR
    if fmt in ("wav", "flac", "pcm"):
        assert len(wav) == samples(2)
    else:  # an MP3 stream keeps LAME's delay and padding (formats.py: 50-80 ms)
        assert 0 <= len(wav) - samples(2) <= 0.1 * SR, len(wav)
    assert np.abs(wav).max() > 0


def test_aac_is_refused_listing_the_supported_formats(server):
    with pytest.raises(openai.BadRequestError) as caught:
        client(server.url).audio.speech.create(
            model="tts-1", voice="alloy", input=TEXT, response_format="aac"
        )
    error = caught.value.body
    assert error["param"] == "response_format"
    assert "'aac' is not supported" in error["message"]
    assert "mp3, opus, flac, wav, pcm" in error["message"]


@pytest.mark.slow
def test_stream_is_one_container_sent_in_chunks(server):
    """3 tokens, 2 a chunk: two chunks and the tail, each sent as it is made, in ONE
    WAV stream (one header, unknown length) that decodes whole; PCM likewise."""
    speech = client(server.url).audio.speech.with_streaming_response
    with speech.create(
        model="nano", voice="alloy", input=TEXT, response_format="wav", extra_body={"seed": 3}
    ) as response:
        assert response.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in response.headers
        parts = [p for p in response.iter_bytes() if p]
    data = b"".join(parts)
    assert data[:4] == b"RIFF" and data.count(b"RIFF") == 1 and data.count(b"WAVEfmt") == 1
    assert data[4:8] == b"\xff\xff\xff\xff"  # a streaming header: length unknown
    wav, rate = decode(data, "wav")
    assert rate == SR and len(wav) == samples(3)
    with speech.create(
        model="nano", voice="alloy", input=TEXT, response_format="pcm", extra_body={"seed": 3}
    ) as response:
        pcm = response.read()
    assert pcm == data[44:]  # the same audio, raw


@pytest.mark.slow
def test_sse_stream_has_delta_and_done_events(server):
    speech = client(server.url).audio.speech.with_streaming_response
    with speech.create(
        model="tts-1",
        voice="alloy",
        input=TEXT,
        response_format="pcm",
        stream_format="sse",
        extra_body={"seed": 3},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    events = [json.loads(line.removeprefix("data: ")) for line in lines]
    assert all(line.startswith("data: ") for line in lines)
    *deltas, done = events
    assert deltas and all(e["type"] == "speech.audio.delta" for e in deltas)
    audio = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    assert len(audio) == 2 * samples(3)
    assert done["type"] == "speech.audio.done"
    assert done["usage"] == {
        "input_tokens": len(TEXT),
        "output_tokens": 3 + TAIL,
        "total_tokens": len(TEXT) + 3 + TAIL,
    }


@pytest.mark.slow
def test_speed_and_ignored_parameters(server):
    """speed 2 halves the duration; Turbo/Nano's unused fields are checked, left out and
    named in X-Ignored-Parameters; instructions are accepted and ignored."""
    r = post(
        server.url,
        "/v1/audio/speech",
        {
            "model": "tts-1",
            "input": TEXT,
            "voice": "alloy",
            "response_format": "wav",
            "speed": 2.0,
            "max_new_tokens": 2,
            "seed": 0,
            "exaggeration": 0.7,
            "cfg_weight": 0.3,
            "instructions": "Speak cheerfully.",
            "temperature": 0.7,
            "top_k": 50,
            "some_future_field": True,
        },
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-ignored-parameters"] == "exaggeration, cfg_weight, instructions"
    wav, _ = decode(r.content, "wav")
    # each streamed chunk is stretched alone: within a sample of half per chunk
    assert abs(len(wav) - samples(2) / 2) <= 3, len(wav)


@pytest.mark.slow
def test_client_disconnect_stops_generation_at_the_next_chunk(long_server):
    """60 tokens at 2 a chunk would be 30 chunks: the client reads the first bytes while
    the generation runs (the stream starts before it ends), leaves, and the generation
    stops within a chunk or two."""
    url = long_server.url
    before = wait_for(url, lambda s: not s["busy"], "an idle model")
    speech = client(url).audio.speech.with_streaming_response
    with speech.create(
        model="nano", voice="alloy", input=TEXT, response_format="pcm", extra_body={"seed": 1}
    ) as response:
        parts = response.iter_bytes()  # kept: a dropped iterator closes the connection
        first = next(parts)
        assert first
        during = health(url)
    assert during["busy"] and during["done"] == before["done"], during
    after = wait_for(url, lambda s: s["cancelled"] == before["cancelled"] + 1, "the cancel")
    assert not after["busy"]
    assert after["done"] == before["done"]
    made = after["chunks"] - before["chunks"]
    seen = during["chunks"] - before["chunks"]
    assert made <= seen + 3 < 30, (seen, made)


@pytest.mark.slow
def test_queue_bounded_429_and_waiting_clients_that_leave_are_dropped(long_server):
    """max_queue 1: A generates, B waits, C gets 429 (Retry-After, OpenAI's JSON); B's
    client leaves: B is dropped without running and its place is free again."""
    url = long_server.url
    before = wait_for(url, lambda s: not s["busy"] and s["waiting"] == 0, "an idle model")
    a = raw_request(url, {"input": TEXT, "response_format": "pcm", "seed": 1})
    read_until_body(a)
    b = raw_request(url, {"input": TEXT, "response_format": "pcm", "max_new_tokens": 1})
    wait_for(url, lambda s: s["waiting"] == 1, "B waiting")
    with pytest.raises(openai.RateLimitError) as caught:
        client(url).audio.speech.create(model="nano", voice="alloy", input=TEXT)
    response = caught.value.response
    assert int(response.headers["retry-after"]) >= 1
    assert (
        caught.value.body["code"] == "queue_full"
        and "--max-queue 1" in caught.value.body["message"]
    )
    b.close()
    state = wait_for(url, lambda s: s["waiting"] == 0, "B dropped")
    assert state["dropped"] == before["dropped"] + 1 and state["busy"]
    c = raw_request(url, {"input": TEXT, "response_format": "pcm", "max_new_tokens": 1})
    wait_for(url, lambda s: s["waiting"] == 1, "C waiting in B's place")
    a.close()
    c_data = read_until_body(c)
    assert c_data.startswith(b"HTTP/1.1 200")
    c.close()
    after = wait_for(url, lambda s: not s["busy"] and s["waiting"] == 0, "the end")
    assert after["rejected"] == before["rejected"] + 1
    assert after["cancelled"] + after["done"] == before["cancelled"] + before["done"] + 2


@pytest.mark.slow
def test_eight_concurrent_clients_all_answered_or_429(nano, tmp_path):
    """8 clients x 3 requests at once, 2 may wait: every request gets its audio or a 429
    (with Retry-After), none is lost, and the counters agree."""
    with serving(nano, tmp_path, max_queue=2, max_new_tokens=1) as server:
        results: list[tuple[int, int, str | None]] = []
        lock = threading.Lock()

        def one_client(seed: int) -> None:
            for i in range(3):
                r = post(
                    server.url,
                    "/v1/audio/speech",
                    {"input": TEXT, "response_format": "pcm", "seed": seed + i},
                )
                with lock:
                    results.append((r.status_code, len(r.content), r.headers.get("retry-after")))

        threads = [threading.Thread(target=one_client, args=(10 * n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        state = wait_for(server.url, lambda s: not s["busy"], "the end")
    assert len(results) == 24
    ok = [r for r in results if r[0] == 200]
    limited = [r for r in results if r[0] == 429]
    assert len(ok) + len(limited) == 24, results
    assert all(n == 2 * samples(1) for _, n, _ in ok)
    assert all(retry is not None and int(retry) >= 1 for _, _, retry in limited)
    assert ok and limited  # 8 clients at once overflow 1 + 2 places
    assert state["done"] == len(ok) and state["rejected"] == len(limited)
    assert state["failed"] == state["cancelled"] == state["dropped"] == 0


# ---- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, param, code, contains",
    [
        ({"voice": "alloy"}, "input", "missing_input", "input is required"),
        ({"input": "   "}, "input", None, "empty"),
        ({"input": 5}, "input", None, "expected text"),
        ({"input": "x" * 301}, "input", "input_too_long", "limit is 300 (--max-chars)"),
        ({"input": TEXT, "response_format": "ogg-vorbis"}, "response_format", None, "supported"),
        ({"input": TEXT, "stream_format": "websocket"}, "stream_format", None, "audio, sse"),
        ({"input": TEXT, "speed": 3.0}, "speed", "unsupported_speed", "0.5 to 2.0"),
        ({"input": TEXT, "speed": 5}, "speed", None, "0.25 to 4.0"),
        ({"input": TEXT, "speed": "fast"}, "speed", None, "number"),
        ({"input": TEXT, "temperature": -1}, "temperature", None, "temperature must be > 0"),
        ({"input": TEXT, "top_k": "many"}, "top_k", None, "integer"),
        ({"input": TEXT, "max_new_tokens": 0}, "max_new_tokens", None, ">= 1"),
        ({"input": TEXT, "exaggeration": 9}, "exaggeration", None, "[0.25, 2]"),
        ({"input": TEXT, "seed": -1}, "seed", None, "seed must be an integer"),
        ({"input": TEXT, "voice": 7}, "voice", None, "string"),
        ({"input": TEXT, "voice": {"name": "x"}}, "voice", None, '"id"'),
        ({"input": TEXT, "voice": "nobody"}, "voice", "voice_not_found", "unknown voice"),
        ({"input": TEXT, "voice": "../../etc/passwd"}, "voice", "voice_not_found", "unknown"),
        ({"input": TEXT, "voice": "/etc/passwd"}, "voice", "voice_not_found", "unknown"),
        ({"input": TEXT, "voice": "a\x00b"}, "voice", "voice_not_found", "unknown"),
        ({"input": TEXT, "model": 3}, "model", None, "string"),
        ([1, 2], "body", None, "JSON object"),
    ],
)
def test_bad_speech_requests_are_400s_naming_the_field(server, body, param, code, contains):
    assert_error(post(server.url, "/v1/audio/speech", body), 400, param, code, contains)


def test_malformed_and_oversized_bodies(server):
    assert_error(post(server.url, "/v1/audio/speech", b"{not json"), 400, "body", "invalid_json")
    big = json.dumps({"input": "x" * (2 << 20)}).encode()
    assert_error(post(server.url, "/v1/audio/speech", big), 413, code="payload_too_large")


def test_api_key_is_required_on_v1_only(server):
    url = server.url
    for headers, problem in (
        ({}, "no API key"),
        (auth("wrong"), "wrong"),
        ({"Authorization": f"Basic {KEY}"}, "Basic"),
    ):
        r = httpx.get(url + "/v1/models", headers=headers)
        assert_error(r, 401, code="invalid_api_key", contains=problem)
        assert r.headers["www-authenticate"] == "Bearer"
    with pytest.raises(openai.AuthenticationError):
        client(url, "wrong").models.list()
    assert httpx.get(url + "/health").json()["status"] == "ok"  # no key needed
    page = httpx.get(url + "/")
    assert page.status_code == 200 and "<title>Chatterbox MLX</title>" in page.text


def test_unknown_endpoints_and_methods_are_openai_shaped(server):
    assert_error(httpx.get(server.url + "/v1/nothing", headers=auth()), 404, code="not_found")
    assert_error(httpx.get(server.url + "/nothing"), 404, code="not_found")
    r = httpx.get(server.url + "/v1/audio/speech", headers=auth())
    assert_error(r, 405, code="method_not_allowed")


def test_models_endpoints(server):
    c = client(server.url)
    assert [m.id for m in c.models.list()] == ["nano"]
    assert c.models.retrieve("nano").id == "nano"
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("tts-2")
    models = httpx.get(server.url + "/v1/audio/models", headers=auth()).json()["models"]
    assert [m["id"] for m in models] == ["nano"]
    (nano,) = models
    assert nano["default"] and nano["variant"] == "nano" and nano["family"] == "turbo"
    assert nano["defaults"] == {
        "temperature": 0.8,
        "top_k": 1000,
        "top_p": 0.95,
        "repetition_penalty": 1.2,
        "max_new_tokens": 1000,
    }
    assert nano["max_new_tokens"] == 3 and nano["languages"] is None
    assert "exaggeration" not in nano["parameters"]


def test_health_reports_each_model(server):
    state = httpx.get(server.url + "/health").json()
    assert state["status"] == "ok" and [m["id"] for m in state["models"]] == ["nano"]
    assert {"busy", "waiting", "max_queue", "done", "rejected"} <= set(state["models"][0])


# ---- voices ---------------------------------------------------------------------------


def upload(url: str, name, data: bytes, field: str = "file", key: str = KEY, **extra):
    return httpx.post(
        url + "/v1/audio/voices",
        headers=auth(key),
        timeout=300,
        data={"name": name, **extra} if name is not None else extra,
        files={field: ("clip.wav", data, "audio/wav")},
    )


@pytest.mark.slow
def test_voice_upload_use_and_delete(server, voices_dir, tmp_path):
    """Upload with the openai package (``audio_sample``), list, speak by name and by
    ``{"id": ...}``, refuse the same name again, delete; then the voice is unknown."""
    c = client(server.url)
    clip = write_clip(tmp_path / "clip.wav", 5.5)
    with clip.open("rb") as f:
        voice = c.audio.voices.create(name="Test Voice", audio_sample=f, consent="cons_local")
    assert voice.id == "test-voice" and voice.name == "Test Voice"
    assert voice.object == "audio.voice" and voice.type == "audio_sample"
    listed = httpx.get(server.url + "/v1/audio/voices", headers=auth()).json()["voices"]
    assert [(v["id"], v["name"]) for v in listed] == [
        ("default", "Built-in voice"),
        ("test-voice", "Test Voice"),
    ]
    assert sorted(p.name for p in (voices_dir / "test-voice").iterdir()) == [
        "source.wav",
        "turbo.voice",
        "voice.json",
    ]

    for ref in ("test voice", {"id": "test-voice"}):
        r = post(
            server.url,
            "/v1/audio/speech",
            {"input": TEXT, "voice": ref, "response_format": "pcm", "max_new_tokens": 1, "seed": 0},
        )
        assert r.status_code == 200, r.text
        assert len(r.content) == 2 * samples(1)
        if isinstance(ref, str):
            by_name = r.content
    assert r.content == by_name  # the same voice, found by name and by id

    again = upload(server.url, "TEST VOICE", clip.read_bytes())
    assert_error(again, 409, "name", "voice_exists", "already exists")

    # a voice whose files were lost is a 500 that says so, not a traceback
    (voices_dir / "test-voice" / "turbo.voice").unlink()
    (voices_dir / "test-voice" / "source.wav").unlink()
    r = post(server.url, "/v1/audio/speech", {"input": TEXT, "voice": "test-voice"})
    assert_error(r, 500, code="voice_damaged", contains="upload it again")

    assert c.audio.voices.delete("test-voice").deleted is True
    with pytest.raises(openai.NotFoundError):
        c.audio.voices.delete("test-voice")
    assert not (voices_dir / "test-voice").exists()
    r = post(server.url, "/v1/audio/speech", {"input": TEXT, "voice": "test-voice"})
    assert_error(r, 400, "voice", "voice_not_found")


@pytest.mark.parametrize(
    "name",
    ["../evil", "/etc/passwd", "a/b", "a\\b", "..", "a\x00b", "tab\there", "default", "", "x" * 65],
)
def test_voice_names_that_could_name_a_path_are_refused(server, voices_dir, tmp_path, name):
    before = sorted(p.name for p in voices_dir.iterdir())
    clip = write_clip(tmp_path / "clip.wav", 5.5).read_bytes()
    assert_error(upload(server.url, name, clip), 400, "name", "invalid_name")
    assert sorted(p.name for p in voices_dir.iterdir()) == before
    assert not (voices_dir.parent / "evil").exists()


def test_voice_ids_in_paths_stay_inside_the_library(server, voices_dir):
    victim = voices_dir.parent / "victim"
    victim.mkdir(exist_ok=True)
    (victim / "voice.json").write_text('{"name": "victim", "created_at": 0, "source": "x"}')
    for path in ("..%2Fvictim", "..", "%2E%2E%2Fvictim", "victim%00", "/etc/passwd"):
        r = httpx.delete(server.url + "/v1/audio/voices/" + path, headers=auth())
        assert_error(r, 404)
        r = httpx.get(server.url + "/v1/audio/voices/" + path, headers=auth())
        assert_error(r, 404)
    assert (victim / "voice.json").exists()
    r = httpx.delete(server.url + "/v1/audio/voices/default", headers=auth())
    assert_error(r, 400, "voice_id", "builtin_voice")


def test_bad_uploads(server, voices_dir, tmp_path):
    """Not audio, over the size limit (413), over the duration limit, too short for
    Turbo/Nano's prompt, no file, a prompt-made voice, not multipart: clear refusals,
    and nothing is left in the library."""
    url = server.url
    assert_error(upload(url, "junk", b"this is not audio " * 100), 400, "file", "invalid_audio")
    assert_error(
        upload(url, "big", b"\0" * (2 << 20)),
        413,
        code="payload_too_large",
        contains="1 MiB (--max-upload-mb)",
    )
    long_clip = write_clip(tmp_path / "long.wav", 13.0, sr=8000).read_bytes()
    assert_error(upload(url, "long", long_clip), 400, "file", "clip_too_long", "13.0 s")
    short = write_clip(tmp_path / "short.wav", 3.0).read_bytes()
    assert_error(upload(url, "short", short), 400, "file", contains="more than 5 s")
    assert_error(upload(url, "none", b"", field="other"), 400, "file", "missing_file")
    r = upload(url, "prompt", short, type="prompt")
    assert_error(r, 400, "type", "unsupported_type")
    r = httpx.post(url + "/v1/audio/voices", headers=auth(), json={"name": "x"})
    assert_error(r, 400, code="invalid_content_type", contains="multipart/form-data")
    assert [p.name for p in voices_dir.iterdir() if not p.name.startswith("test-")] == []


# ---- the command line -----------------------------------------------------------------


def test_settings_from_the_command_line_and_environment(monkeypatch):
    parse = build_parser().parse_args
    monkeypatch.delenv("CHATTERBOX_MLX_API_KEY", raising=False)
    args = parse([])
    assert args.host == "127.0.0.1" and args.port == 8000 and args.model is None
    defaults = settings_from(args)
    assert defaults == Settings()  # the same defaults in both places
    assert defaults.api_key is None and defaults.max_chars == 4096 and defaults.watermark
    monkeypatch.setenv("CHATTERBOX_MLX_API_KEY", "from-env")
    assert settings_from(parse([])).api_key == "from-env"
    assert settings_from(parse(["--api-key", "from-flag"])).api_key == "from-flag"
    s = settings_from(
        parse(
            [
                "--max-chars",
                "100",
                "--max-queue",
                "0",
                "--no-watermark",
                "--max-upload-mb",
                "0.5",
                "--max-new-tokens",
                "7",
            ]
        )
    )
    assert (s.max_chars, s.max_queue, s.watermark, s.max_upload_bytes, s.max_new_tokens) == (
        100,
        0,
        False,
        1 << 19,
        7,
    )
    for bad in (["--max-chars", "0"], ["--max-queue", "-1"], ["--port", "x"]):
        with pytest.raises(SystemExit) as exited:
            parse(bad)
        assert exited.value.code == 2


@pytest.mark.slow
def test_command_line_server_with_env_key_and_watermark(server, tmp_path):
    """``python -m chatterbox_mlx.server``: the key from $CHATTERBOX_MLX_API_KEY, the
    watermark on (the default): the same request as the in-process server without the
    watermark gives the same length and different samples; SIGTERM exits cleanly."""
    body = {
        "input": TEXT,
        "voice": "alloy",
        "response_format": "pcm",
        "max_new_tokens": 2,
        "seed": 5,
    }
    plain = post(server.url, "/v1/audio/speech", body)
    assert plain.status_code == 200
    args = (
        "--model",
        str(short_voice_dir("nano")),
        "--voices",
        str(tmp_path / "v"),
        "--max-new-tokens",
        "4",
        "--max-chars",
        "50",
        "--max-queue",
        "0",
    )
    with CliServer(*args, env={"CHATTERBOX_MLX_API_KEY": "env-key"}) as cli:
        assert "serving nano on http://127.0.0.1:" in "".join(cli.log)
        assert "API key required" in "".join(cli.log)
        assert_error(post(cli.url, "/v1/audio/speech", body, key=KEY), 401)
        marked = post(cli.url, "/v1/audio/speech", body, key="env-key")
        assert marked.status_code == 200, marked.text
        r = post(cli.url, "/v1/audio/speech", {**body, "input": "x" * 51}, key="env-key")
        assert_error(r, 400, "input", "input_too_long", "limit is 50")
        state = httpx.get(cli.url + "/health").json()["models"][0]
        assert state["max_queue"] == 0 and state["done"] == 1
        assert cli.stop() == -signal.SIGTERM  # after a graceful shutdown, as uvicorn does
        assert "Application shutdown complete." in "".join(cli.log)
    assert (tmp_path / "v").is_dir()
    assert len(marked.content) == len(plain.content) == 2 * samples(2)
    assert marked.content != plain.content


def run_server_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chatterbox_mlx.server", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def test_command_line_errors_are_one_line(tmp_path):
    r = run_server_command(
        "--model", str(tmp_path / "missing"), "--port", "0", "--voices", str(tmp_path)
    )
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("chatterbox-mlx serve: error: ")
    assert "Traceback" not in r.stderr
    busy = socket.create_server(("127.0.0.1", 0))
    r = run_server_command("--port", str(busy.getsockname()[1]), "--voices", str(tmp_path))
    busy.close()
    assert r.returncode == 1 and "cannot listen on 127.0.0.1" in r.stderr, r.stderr

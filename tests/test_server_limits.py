"""The server against careful users and hostile web pages (chatterbox-mlx issue 30):
per-request budgets, malformed bodies, cross-site requests, ambiguous voice names, and
each client's real request shape. uvicorn on 127.0.0.1 (the server's own
``serving.make_server``), a Nano random-weight model with a short built-in voice.

Random weights never emit the stop token: a piece given ``n`` speech tokens makes
exactly ``n`` plus Nano's 3 silence tokens, 960 samples each at 24 kHz.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
from contextlib import contextmanager

from chatterbox_mlx.server.app import Settings, create_app
from chatterbox_mlx.tts import load_pipeline

import httpx
import numpy as np
import pytest
import soundfile

from tests.helpers.server import ThreadServer, short_voice_dir, write_clip

KEY = "limits-key"
SR = 24000
PER_TOKEN = 960
TAIL = 3
TEXT = "Hello there."
CORS_SITE = "http://localhost:3000"


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
            "max_new_tokens": 4,
            "chunk_tokens": 2,
            "max_upload_bytes": 1 << 20,
            "max_voice_seconds": 12.0,
            "max_audio_seconds": 30.0,
            "cors_origins": (CORS_SITE,),
            **changes,
        }
    )
    with ThreadServer(create_app({"nano": nano}, settings=settings, voices_dir=voices_dir)) as s:
        yield s


@pytest.fixture(scope="module")
def server(nano, tmp_path_factory):
    with serving(nano, tmp_path_factory.mktemp("voices")) as s:
        yield s


def speech(url: str, body, *, headers=None, content_type="application/json") -> httpx.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {"Authorization": f"Bearer {KEY}", "Content-Type": content_type, **(headers or {})}
    return httpx.post(url + "/v1/audio/speech", content=data, headers=sent, timeout=300)


def assert_error(r: httpx.Response, status: int, code=None, param=None, contains="") -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert contains in error["message"], error
    if code is not None:
        assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    return error


def pcm_samples(r: httpx.Response) -> int:
    assert r.status_code == 200, r.text
    return len(r.content) // 2


# ---- budgets --------------------------------------------------------------------------


def test_max_new_tokens_caps_the_whole_request_across_pauses_and_chunks(server):
    """Cap 4: three sentences split by pause tags (three pieces) and three long
    sentences split into chunks make 4 speech tokens in all, not 4 a piece."""
    paused = "One more. [pause:0.1s] Two more. [pause:0.1s] Three more."
    assert pcm_samples(speech(server.url, {"input": paused, "response_format": "pcm"})) == (
        samples(4)
    )
    long = " ".join(f"Sentence number {n} runs on for a while to fill a chunk." * 3 for n in "abc")
    assert len(long) > 300  # more than one chunk of the pipeline
    body = {"input": long, "response_format": "pcm", "max_new_tokens": 3}
    assert pcm_samples(speech(server.url, body)) == samples(3)  # the request's own budget


def test_audio_length_is_checked_before_any_work_pauses_and_speed_included(server):
    tags = "[pause:10s]" * 4 + " Hi."
    error = assert_error(
        speech(server.url, {"input": tags}), 400, "audio_too_long", "input", "--max-audio-seconds"
    )
    assert "40 s of it pauses" in error["message"]
    half = "[pause:1s] Hi. " * 20  # 20 s of pauses, 40 s at half speed
    assert speech(server.url, {"input": half, "speed": 1.0, "response_format": "pcm"}).is_success
    error = assert_error(speech(server.url, {"input": half, "speed": 0.5}), 400, "audio_too_long")
    assert "at speed 0.5" in error["message"]


@pytest.mark.parametrize("fmt", ["pcm", "flac"])
def test_audio_past_the_limit_is_cut_at_it_streamed_or_whole(server, fmt):
    """29.9 s of pauses pass the estimate (the speech guessed at 0.1 s); the speech makes
    0.28 s: the response stops at exactly 30 s, as a stream and as one file."""
    body = {"input": "[pause:10s][pause:10s][pause:9.9s] Hi.", "response_format": fmt}
    r = speech(server.url, body)
    assert r.status_code == 200, r.text
    if fmt == "pcm":
        wav = np.frombuffer(r.content, "<i2")
    else:
        wav, rate = soundfile.read(io.BytesIO(r.content), dtype="float32")
        assert rate == SR
    assert len(wav) == 30 * SR
    assert np.abs(wav[: int(29.9 * SR)]).max() == 0 and np.abs(wav[int(29.9 * SR) :]).max() > 0


# ---- malformed input ------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, contains",
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"input": "Hi.", "seed": ' + b"7" * 5000 + b"}", "5,000 digits"),
        (b'{"input": "Hi.", "speed": 1' + b"0" * 5000 + b"}", "5,001 digits"),
        (b'{"input": "\xff"}', "not valid JSON"),
    ],
)
def test_malformed_bodies_of_any_depth_or_number_size_are_400(server, raw, contains):
    assert_error(speech(server.url, raw), 400, "invalid_json", "body", contains)


@pytest.mark.parametrize("text", ["\x00\x00\x00", "\x01\x02\x1b\x7f", "... !!! ---", "[pause:1s]"])
def test_input_with_nothing_to_speak_is_400(server, text):
    assert_error(speech(server.url, {"input": text}), 400, param="input")


def test_echoed_values_are_cut_short(server):
    huge = "x" * 10_000
    for body in (
        {"input": TEXT, "voice": huge},
        {"input": TEXT, "temperature": huge},
        {"input": TEXT, "response_format": huge},
        {"input": TEXT, "model": {"deep": [huge] * 100}},
    ):
        r = speech(server.url, body)
        assert r.status_code == 400 and len(r.text) < 1000, (body.keys(), len(r.text))


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", ""]
)
def test_speech_needs_a_json_content_type(server, content_type):
    r = speech(server.url, {"input": TEXT}, content_type=content_type)
    assert_error(r, 415, "unsupported_media_type", contains="Content-Type: application/json")


# ---- cross-site requests --------------------------------------------------------------


def test_a_foreign_page_cannot_speak_upload_or_delete(server, tmp_path):
    """A page on another site (any Origin not this server's and not --cors-origin):
    speech as a CORS simple request (text/plain) and as JSON, a multipart voice upload
    named like an OpenAI voice, a delete: all 403, nothing changed."""
    evil = {"Origin": "http://evil.example"}
    for content_type in ("text/plain", "application/json"):
        r = speech(server.url, {"input": TEXT}, headers=evil, content_type=content_type)
        assert_error(r, 403, "cross_origin", contains="--cors-origin")
    clip = write_clip(tmp_path / "clip.wav", 5.5).read_bytes()
    r = httpx.post(
        server.url + "/v1/audio/voices",
        headers=evil,  # no key needed to be refused: the check comes first
        data={"name": "alloy"},
        files={"file": ("clip.wav", clip, "audio/wav")},
    )
    assert_error(r, 403, "cross_origin")
    r = httpx.delete(server.url + "/v1/audio/voices/default", headers={**evil, "X": "y"})
    assert_error(r, 403, "cross_origin")
    sneaky = {"Sec-Fetch-Site": "cross-site"}  # a browser that left Origin out
    assert_error(speech(server.url, {"input": TEXT}, headers=sneaky), 403, "cross_origin")
    voices = httpx.get(server.url + "/v1/audio/voices", headers={"Authorization": f"Bearer {KEY}"})
    assert [v["id"] for v in voices.json()["voices"]] == ["default"]


def test_the_servers_own_page_and_listed_sites_may(server):
    own = {"Origin": server.url, "Sec-Fetch-Site": "same-origin"}
    body = {"input": TEXT, "response_format": "pcm", "max_new_tokens": 1}
    r = speech(server.url, body, headers=own)
    assert pcm_samples(r) == samples(1)
    assert "access-control-allow-origin" not in r.headers  # same origin: no CORS needed
    preflight = httpx.options(
        server.url + "/v1/audio/speech",
        headers={
            "Origin": CORS_SITE,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == CORS_SITE
    assert "POST" in preflight.headers["access-control-allow-methods"]
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    r = speech(server.url, body, headers={"Origin": CORS_SITE, "Sec-Fetch-Site": "same-site"})
    assert pcm_samples(r) == samples(1)
    assert r.headers["access-control-allow-origin"] == CORS_SITE
    assert "x-model" in r.headers["access-control-expose-headers"].lower()
    other = httpx.options(
        server.url + "/v1/audio/speech",
        headers={"Origin": "http://localhost:4000", "Access-Control-Request-Method": "POST"},
    )
    assert_error(other, 403, "cross_origin")


def test_the_host_header_must_name_this_server(server, nano, tmp_path):
    port = server.port
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"app.localhost:{port}"):
        assert httpx.get(server.url + "/health", headers={"Host": host}).status_code == 200
    for host in (f"evil.example:{port}", "rebind.attacker.test", f"10.0.0.1:{port}"):
        r = httpx.get(server.url + "/health", headers={"Host": host})
        assert_error(r, 421, "misdirected_request", contains="--allowed-host")
    r = httpx.get(server.url + "/", headers={"Host": "tts.example.org"})
    assert r.status_code == 421
    with serving(nano, tmp_path, allowed_hosts=("tts.example.org",)) as named:
        r = httpx.get(named.url + "/", headers={"Host": "tts.example.org"})
        assert r.status_code == 200 and "<title>" in r.text


# ---- each client's request shape ------------------------------------------------------


def test_server_side_clients_request_shapes(server):
    """Open WebUI's and Home Assistant's backends (aiohttp: JSON, a Bearer key, no
    Origin), SillyTavern's server (Node's fetch), curl as OpenAI's docs write it."""
    body = {"model": "tts-1", "input": TEXT, "voice": "alloy", "response_format": "wav"}
    for agent in (
        "Python/3.11 aiohttp/3.9.5",
        "HomeAssistant/2025.1.0 aiohttp/3.11.11 Python/3.13",
    ):
        headers = {"User-Agent": agent, "Accept": "*/*", "Accept-Encoding": "gzip, deflate"}
        r = speech(server.url, {**body, "speed": 1.0}, headers=headers)
        assert r.status_code == 200 and r.content[:4] == b"RIFF", r.text
    node = shutil.which("node")
    if node is not None:  # SillyTavern: src/endpoints/openai.js, fetch() from its server
        script = (
            "fetch(process.argv[1], {method: 'POST', headers: {'Content-Type': "
            "'application/json', Authorization: 'Bearer ' + process.argv[2]}, body: "
            "JSON.stringify({input: 'Hello there.', response_format: 'mp3', voice: 'alloy', "
            "speed: 1, model: 'tts-1'})}).then(async r => { const b = Buffer.from(await "
            "r.arrayBuffer()); console.log(r.status, r.headers.get('content-type'), b.length) })"
        )
        out = subprocess.run(
            [node, "-e", script, server.url + "/v1/audio/speech", KEY],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        status, kind, size = out.stdout.split()
        assert (status, kind) == ("200", "audio/mpeg") and int(size) > 0, out.stderr
    curl = shutil.which("curl")
    if curl is not None:
        out = subprocess.run(
            [curl, "-sS", "-o", "-", "-w", "%{http_code}", server.url + "/v1/audio/speech",
             "-H", f"Authorization: Bearer {KEY}", "-H", "Content-Type: application/json",
             "-d", json.dumps({**body, "response_format": "pcm", "max_new_tokens": 1})],
            capture_output=True, timeout=300,
        )  # fmt: skip
        assert out.stdout[-3:] == b"200" and len(out.stdout) - 3 == 2 * samples(1)
        bare = subprocess.run(  # curl -d without a Content-Type sends a form type: 415
            [curl, "-sS", server.url + "/v1/audio/speech", "-H", f"Authorization: Bearer {KEY}",
             "-d", json.dumps(body)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert json.loads(bare.stdout)["error"]["code"] == "unsupported_media_type"


# ---- voice names ----------------------------------------------------------------------


def upload(url: str, name: str, clip: bytes) -> httpx.Response:
    return httpx.post(
        url + "/v1/audio/voices",
        headers={"Authorization": f"Bearer {KEY}"},
        data={"name": name},
        files={"file": ("clip.wav", clip, "audio/wav")},
        timeout=300,
    )


def test_voice_names_are_unique_against_ids_and_names(nano, tmp_path):
    """ "Carol" is carol, "Carol!" is carol-2: a voice named "carol-2" could never be
    picked by name, so it is refused; DELETE and GET take a name as speech does."""
    clip = write_clip(tmp_path / "clip.wav", 5.5).read_bytes()
    auth = {"Authorization": f"Bearer {KEY}"}
    with serving(nano, tmp_path / "voices") as s:
        assert upload(s.url, "Carol", clip).json()["id"] == "carol"
        assert upload(s.url, "Carol!", clip).json()["id"] == "carol-2"
        error = assert_error(upload(s.url, "CAROL-2", clip), 409, "voice_exists", "name")
        assert "with the id 'CAROL-2'" in error["message"]
        assert_error(upload(s.url, "carol", clip), 409, "voice_exists")
        assert httpx.get(s.url + "/v1/audio/voices/Carol%21", headers=auth).json()["id"] == (
            "carol-2"
        )
        r = httpx.delete(s.url + "/v1/audio/voices/Carol", headers=auth)
        assert r.json() == {"id": "carol", "deleted": True, "object": "audio.voice.deleted"}
        ids = [
            v["id"] for v in httpx.get(s.url + "/v1/audio/voices", headers=auth).json()["voices"]
        ]
        assert ids == ["default", "carol-2"]
        r = httpx.delete(s.url + "/v1/audio/voices/" + "x" * 5000, headers=auth)
        assert_error(r, 404, "voice_not_found")
        assert len(r.text) < 500


def test_half_sent_requests_time_out(nano, tmp_path):
    """--request-timeout 1: a connection that sends half a head gets a 408 and is closed;
    one that sends a head and half its body is closed; one that sends nothing is closed."""
    with serving(nano, tmp_path, request_timeout=1.0) as s:
        half_head = socket.create_connection(("127.0.0.1", s.port), timeout=30)
        half_head.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        half_body = socket.create_connection(("127.0.0.1", s.port), timeout=30)
        half_body.sendall(
            b"POST /v1/audio/speech HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
            b'application/json\r\nContent-Length: 100\r\n\r\n{"input": '
        )
        silent = socket.create_connection(("127.0.0.1", s.port), timeout=30)
        assert read_all(half_head).startswith(b"HTTP/1.1 408 ")
        assert b" 200 " not in read_all(half_body)
        assert read_all(silent) == b""
        assert httpx.get(s.url + "/health").status_code == 200


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    return data

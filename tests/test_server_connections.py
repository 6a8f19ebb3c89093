"""The server's connections and shutdown, as the real command line runs them (a
subprocess on 127.0.0.1, the Nano random-weight model with a short built-in voice):
idle sockets under a low file limit, out-of-descriptor logging, and SIGTERM with a
stream running and requests queued."""

from __future__ import annotations

import json
import logging
import signal
import socket
import threading
import time

from chatterbox_mlx.server import logs

import httpx
import numpy as np

from tests.helpers.server import CliServer, short_voice_dir, wait_healthy

KEY = "conn-key"
PER_TOKEN = 960
TAIL = 3


def serve(*extra: str, files: int | None = None) -> CliServer:
    return CliServer(
        "--model", str(short_voice_dir("nano")), "--no-watermark", "--api-key", KEY,
        "--chunk-tokens", "2", *extra, files=files,
    )  # fmt: skip


def test_health_answers_with_300_idle_connections_under_256_files(tmp_path):
    """``ulimit -n 256`` and 300 sockets that never send a byte: the cap (below the
    limit) makes the oldest idle ones give way, /health still answers, and the log
    stays a few lines (no out-of-descriptor flood)."""
    with serve("--voices", str(tmp_path / "v"), files=256) as server:
        host, port = server.url.removeprefix("http://").split(":")
        idle = [socket.create_connection((host, int(port)), timeout=30) for _ in range(300)]
        try:
            time.sleep(1)  # let the server accept them all
            started = time.monotonic()
            state = wait_healthy(server.url, timeout=20)
            assert state["status"] == "ok" and time.monotonic() - started < 20
            speech = httpx.post(
                server.url + "/v1/audio/speech",
                json={"input": "Hello.", "response_format": "pcm", "max_new_tokens": 1},
                headers={"Authorization": f"Bearer {KEY}"},
                timeout=120,
            )
            assert speech.status_code == 200 and len(speech.content) == 2 * (1 + TAIL) * PER_TOKEN
            for sock in idle:
                sock.setblocking(False)
            closed = sum(_closed(sock) for sock in idle)
            assert closed >= 300 - 192, closed  # the cap: 256 files less 64 kept back
        finally:
            for sock in idle:
                sock.close()
        wait_healthy(server.url)
        log = server.log_text
    assert "Traceback" not in log and "out of system resource" not in log
    assert len(log) < 10_000, log[-2000:]


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_running_out_of_descriptors_is_one_line_an_interval(caplog):
    """What asyncio's accept loop reports on EMFILE (once per pending connection, every
    loop tick) reaches the log once an interval."""
    error = OSError(24, "Too many open files")
    context = {"message": "socket.accept() out of system resource", "exception": error}
    with caplog.at_level(logging.INFO, logger="chatterbox_mlx.server"):
        for _ in range(2000):
            logs.accept_errors(None, dict(context))
    lines = [r for r in caplog.records if "cannot accept connections" in r.getMessage()]
    assert len(lines) <= 1 and all(r.exc_info is None for r in lines)


def test_sigterm_ends_the_stream_and_answers_the_queue(tmp_path):
    """A long stream runs, two requests wait: SIGTERM ends the stream at a chunk with a
    complete response (the chunked body's end, decodable audio), answers the waiting two
    with OpenAI's 503 shutting_down and Retry-After, and the process exits within
    --shutdown-grace."""
    args = (
        "--voices",
        str(tmp_path / "v"),
        "--max-new-tokens",
        "2000",
        "--shutdown-grace",
        "5",
        "--max-batch",
        "1",
    )  # one runs, the others queue
    server = serve(*args)
    url, headers = server.url, {"Authorization": f"Bearer {KEY}"}
    results: dict[str, object] = {}

    def stream() -> None:
        body = {"input": "A long one.", "response_format": "pcm", "seed": 1}
        with httpx.stream(
            "POST", url + "/v1/audio/speech", json=body, headers=headers, timeout=120
        ) as r:
            data = b""
            for part in r.iter_bytes():
                data += part
                results.setdefault("first", time.monotonic())
            results["stream"] = (r.status_code, data)

    def queued(name: str) -> None:
        body = {"input": "Waiting.", "response_format": "wav", "max_new_tokens": 1}
        r = httpx.post(url + "/v1/audio/speech", json=body, headers=headers, timeout=120)
        results[name] = r

    threads = [threading.Thread(target=stream)]
    threads[0].start()
    deadline = time.monotonic() + 120
    while "first" not in results:
        assert time.monotonic() < deadline, "no audio came"
        time.sleep(0.05)
    threads += [threading.Thread(target=queued, args=(n,)) for n in ("b", "c")]
    for t in threads[1:]:
        t.start()
    while httpx.get(url + "/health").json()["models"][0]["waiting"] < 2:
        assert time.monotonic() < deadline, "the two did not queue"
        time.sleep(0.05)
    signalled = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(60)
    code = server.proc.wait(30)
    took = time.monotonic() - signalled
    server.stop()
    assert code == -signal.SIGTERM and took < 5 + 3, took
    status, data = results["stream"]
    assert status == 200 and len(data) % 2 == 0
    wav = np.frombuffer(data, "<i2")
    assert 0 < len(wav) < (2000 + TAIL) * PER_TOKEN  # stopped early, whole samples
    for name in ("b", "c"):
        r = results[name]
        assert r.status_code == 503, r.text
        assert json.loads(r.text)["error"]["code"] == "shutting_down"
        assert int(r.headers["retry-after"]) >= 1
    assert "Traceback" not in server.log_text


def test_a_request_cut_off_by_the_grace_gets_a_503_not_a_bare_500(tmp_path):
    """A voice upload is being prepared (work that cannot stop at a chunk) when the
    server shuts down with a 0.2 s grace: its client gets OpenAI's 503 shutting_down
    with Retry-After, and the voice is not added."""
    from chatterbox_mlx.server.app import Settings, create_app
    from chatterbox_mlx.tts import load_pipeline

    from tests.helpers.server import ThreadServer, write_clip

    model = load_pipeline(str(short_voice_dir("nano")))
    settings = Settings(watermark=False, shutdown_grace=0.2, max_voice_seconds=30.0)
    app = create_app({"nano": model}, settings=settings, voices_dir=tmp_path / "v")
    clip = write_clip(tmp_path / "clip.wav", 6.0).read_bytes()
    server = ThreadServer(app).__enter__()
    answer: dict = {}

    def upload() -> None:
        answer["r"] = httpx.post(
            server.url + "/v1/audio/voices",
            data={"name": "Slow"},
            files={"file": ("clip.wav", clip, "audio/wav")},
            timeout=120,
        )

    thread = threading.Thread(target=upload)
    thread.start()
    deadline = time.monotonic() + 60
    while not httpx.get(server.url + "/health").json()["models"][0]["busy"]:
        assert time.monotonic() < deadline, "the upload did not start"
        time.sleep(0.02)
    server.__exit__(None, None, None)
    thread.join(60)
    app.state.server.models["nano"].worker.stop(timeout=600)  # the preparation ends
    r = answer["r"]
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "shutting_down" and r.headers["retry-after"] == "10"
    assert not (tmp_path / "v" / "slow").exists()  # cut off: not added


def test_a_long_stream_keeps_the_servers_memory_flat(tmp_path):
    """590 s of audio (28 MB of PCM) streamed to a client that reads slowly: the server
    makes the audio as the client takes it (a few chunks ahead), so its resident memory
    stays well under the response's size."""
    from tests.helpers.server import rss_kib

    args = ("--voices", str(tmp_path / "v"), "--max-audio-seconds", "600", "--max-new-tokens", "4")
    server = serve(*args)
    # the speech first: its computation is over before the first byte (the baseline)
    body = {"input": "Hi. " + "[pause:10s]" * 59, "response_format": "pcm"}
    total, grown = 0, []
    try:
        with httpx.stream(
            "POST", server.url + "/v1/audio/speech", json=body,
            headers={"Authorization": f"Bearer {KEY}"}, timeout=300,
        ) as r:  # fmt: skip
            assert r.status_code == 200
            start = None
            for n, part in enumerate(r.iter_bytes(1 << 16)):
                total += len(part)
                if start is None:
                    start = rss_kib(server.pid)
                if n % 20 == 0:
                    grown.append(rss_kib(server.pid) - start)
                time.sleep(0.005)
    finally:
        server.stop()
    assert total == 2 * (590 * 24000 + (4 + TAIL) * PER_TOKEN)
    assert max(grown) < 12_000, grown  # KiB; the whole response is 27,700 KiB

"""The real server under a faulty crowd: ``python -m chatterbox_mlx.server`` (a uvicorn
subprocess on 127.0.0.1, the Nano random-weight model with a short built-in voice) and
16 concurrent clients that speak in every format, leave mid-answer, abort their bodies
half-sent, send bad requests and ask for /health, then a last wave and one SIGTERM.

Every request must end with its audio or a proper OpenAI-shaped error (none lost or
hung), the server's memory stays flat (RSS sampled while the crowd runs), and its log
holds no traceback. Bounded: 16 clients x 8 actions, each with a timeout.
"""

from __future__ import annotations

import base64
import io
import json
import random
import signal
import socket
import threading
import time

import httpx
import soundfile

from tests.helpers.server import CliServer, rss_kib, short_voice_dir

KEY = "fault-key"
CLIENTS = 16
ACTIONS = 8
TOKENS = 6
PER_TOKEN = 960
TAIL = 3
TIMEOUT = 240  # seconds for one request on a loaded 2-core machine
FORMATS = ("pcm", "wav", "flac", "mp3", "opus", "sse")
BAD = {  # what each bad request sends, and the status it must get
    "json": (b"{not json", "application/json", {}, 400),
    "deep": (b"[" * 50_000, "application/json", {}, 400),
    "plain": (b'{"input": "Hi."}', "text/plain", {}, 415),
    "param": (b'{"input": "Hi.", "speed": "fast"}', "application/json", {}, 400),
    "origin": (b'{"input": "Hi."}', "application/json", {"Origin": "http://evil.example"}, 403),
    "host": (b'{"input": "Hi."}', "application/json", {"Host": "rebind.example"}, 421),
    "empty": (b'{"input": "\\u0000\\u0001"}', "application/json", {}, 400),
}


class Crowd:
    def __init__(self, url: str):
        self.url = url
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        self.outcomes: list[tuple[str, str]] = []
        self.problems: list[str] = []
        self.lock = threading.Lock()

    def record(self, action: str, outcome: str) -> None:
        with self.lock:
            self.outcomes.append((action, outcome))

    def problem(self, action: str, detail: str) -> None:
        with self.lock:
            self.problems.append(f"{action}: {detail}"[:500])

    # ---- the actions --------------------------------------------------------------

    def speech(self, rng: random.Random) -> None:
        fmt = rng.choice(FORMATS)
        body = {"input": "Hello there.", "voice": "alloy", "seed": rng.randrange(1000)}
        if fmt == "sse":
            body.update(response_format="pcm", stream_format="sse")
        else:
            body["response_format"] = fmt
        r = httpx.post(
            self.url + "/v1/audio/speech",
            json=body,
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=TIMEOUT,
        )
        if r.status_code == 200:
            self.check_audio(fmt, r)
            self.record("speech", "audio")
        else:
            self.check_error(f"speech {fmt}", r, (429, 503))
            self.record("speech", str(r.status_code))

    def last(self, seed: int) -> None:
        """The last wave's request: audio (whole, or cut short at a chunk by the
        shutdown, still a complete response), or a 429/503."""
        body = {"input": "The last one.", "response_format": "wav", "seed": seed}
        try:
            r = httpx.post(
                self.url + "/v1/audio/speech",
                json=body,
                headers={"Authorization": f"Bearer {KEY}"},
                timeout=TIMEOUT,
            )
        except httpx.TransportError as err:
            self.problem("last", f"{type(err).__name__}: {err}")
            return
        if r.status_code == 200:
            self.check_audio("wav", r, whole=False)
        else:
            self.check_error("last", r, (429, 503))
        self.record("last", str(r.status_code))

    def check_audio(self, fmt: str, r: httpx.Response, whole: bool = True) -> None:
        size = (TOKENS + TAIL) * PER_TOKEN
        if not whole:
            made = len(soundfile.read(io.BytesIO(r.content))[0])
            if not 0 < made <= size:
                self.problem(f"speech {fmt}", f"bad audio: {made} samples")
            return
        whole = size
        if fmt == "sse":
            events = [json.loads(line[6:]) for line in r.text.splitlines() if line]
            audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
            ok = events[-1]["type"] == "speech.audio.done" and len(audio) == 2 * whole
        elif fmt == "pcm":
            ok = len(r.content) == 2 * whole
        elif fmt in ("wav", "flac"):
            ok = len(soundfile.read(io.BytesIO(r.content))[0]) == whole
        else:
            ok = len(r.content) > 100
        if not ok:
            self.problem(f"speech {fmt}", f"bad audio: {len(r.content)} bytes")

    def check_error(self, action: str, r: httpx.Response, statuses) -> None:
        try:
            error = r.json()["error"]
            shaped = set(error) == {"message", "type", "param", "code"} and error["message"]
        except (ValueError, KeyError, TypeError):
            shaped = False
        if r.status_code not in statuses or not shaped or "Traceback" in r.text:
            self.problem(action, f"{r.status_code} {r.text[:200]!r}")
        if r.status_code in (429, 503) and "retry-after" not in r.headers:
            self.problem(action, f"{r.status_code} without Retry-After")

    def raw(self, head: bytes, body: bytes) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=TIMEOUT)
        sock.sendall(head + body)
        return sock

    def leave(self, rng: random.Random) -> None:
        """A speech request whose client reads the first bytes (or none) and leaves."""
        data = json.dumps({"input": "Leaving soon.", "response_format": "pcm"}).encode()
        sock = self.raw(self.head(len(data)), data)
        if rng.random() < 0.5:
            first = sock.recv(64)
            if first and not first.startswith((b"HTTP/1.1 200", b"HTTP/1.1 429")):
                self.problem("leave", repr(first))
        sock.close()
        self.record("leave", "left")

    def abort_body(self, rng: random.Random) -> None:
        """Headers promising 300 bytes, a part of them, then the connection closed."""
        sock = self.raw(self.head(300), b'{"input": "Hel'[: rng.randrange(1, 14)])
        time.sleep(rng.random() * 0.2)
        sock.close()
        self.record("abort", "aborted")

    def bad(self, rng: random.Random) -> None:
        name = rng.choice(sorted(BAD))
        data, kind, extra, status = BAD[name]
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": kind, **extra}
        r = httpx.post(self.url + "/v1/audio/speech", content=data, headers=headers, timeout=60)
        self.check_error(f"bad {name}", r, (status,))
        self.record("bad", str(r.status_code))

    def health(self, rng: random.Random) -> None:
        r = httpx.get(self.url + "/health", timeout=60)
        if r.status_code != 200 or r.json()["status"] != "ok":
            self.problem("health", r.text[:200])
        self.record("health", "ok")

    def head(self, length: int) -> bytes:
        return (
            f"POST /v1/audio/speech HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n"
        ).encode()

    def client(self, seed: int) -> None:
        rng = random.Random(seed)
        actions = [self.speech] * 4 + [self.leave, self.abort_body, self.bad, self.bad, self.health]
        for _ in range(ACTIONS):
            action = rng.choice(actions)
            try:
                action(rng)
            except Exception as err:  # a lost or hung request
                self.problem(action.__name__, f"{type(err).__name__}: {err}")


def health(url: str) -> dict:
    return httpx.get(url + "/health", timeout=60).json()["models"][0]


def arrived(now: dict, before: dict) -> int:
    """Requests the model took in since ``before``: running, waiting, done or refused."""
    settled = sum(now[k] - before[k] for k in ("done", "failed", "cancelled", "rejected"))
    return now["waiting"] + int(now["busy"]) + settled


def sample_rss(pid: int, samples: list[int], stop: threading.Event) -> None:
    while not stop.wait(0.5):
        try:
            samples.append(rss_kib(pid))
        except ValueError:  # the process is gone
            return


def test_sixteen_faulty_clients_then_sigterm(tmp_path):
    args = (
        "--model", str(short_voice_dir("nano")), "--voices", str(tmp_path / "v"),
        "--no-watermark", "--api-key", KEY, "--max-new-tokens", str(TOKENS),
        "--chunk-tokens", "2", "--max-queue", "6", "--request-timeout", "5",
        "--shutdown-grace", "5", "--max-batch", "1",
    )  # fmt: skip
    # --max-batch 1: one request runs and the others wait, so the SIGTERM finds a queue to
    # answer; batched, 16 requests of 6 tokens can all be running or done by then
    server = CliServer(*args)
    try:
        crowd = Crowd(server.url)
        rss: list[int] = []
        stop = threading.Event()
        sampler = threading.Thread(target=sample_rss, args=(server.pid, rss, stop), daemon=True)
        sampler.start()
        threads = [threading.Thread(target=crowd.client, args=(n,)) for n in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT * ACTIONS)
        assert not any(t.is_alive() for t in threads), "a client hung"
        stop.set()
        sampler.join()

        # the last wave: one speech request per client, then SIGTERM while they run
        before = health(server.url)
        wave = [threading.Thread(target=crowd.last, args=(n,)) for n in range(CLIENTS)]
        for t in wave:
            t.start()
        deadline = time.monotonic() + 60
        while arrived(health(server.url), before) < CLIENTS:  # every one taken in
            assert time.monotonic() < deadline, "the last wave did not arrive"
            time.sleep(0.05)
        server.proc.send_signal(signal.SIGTERM)
        for t in wave:
            t.join(TIMEOUT)
        assert not any(t.is_alive() for t in wave), "a request hung through the shutdown"
        code = server.proc.wait(30)
    finally:
        server.stop()
    log = server.log_text
    assert crowd.problems == [], (crowd.problems, log[-4000:])
    counts = {}
    for action, outcome in crowd.outcomes:
        counts[(action, outcome)] = counts.get((action, outcome), 0) + 1
    assert len(crowd.outcomes) == CLIENTS * (ACTIONS + 1), counts
    assert counts.get(("speech", "audio"), 0) > 0 and counts.get(("bad", "400"), 0) > 0, counts
    assert counts.get(("last", "503"), 0) > 0, counts  # the shutdown answered the queue
    assert code == -signal.SIGTERM
    assert "Traceback" not in log and "Internal Server Error" not in log, log[-3000:]
    assert len(log) < 100_000, len(log)
    # flat memory: the second half of the run holds no more than the first (with slack
    # for the allocator's caches)
    assert len(rss) >= 10, rss
    first, second = max(rss[2 : len(rss) // 2]), max(rss[len(rss) // 2 :])
    assert second <= first * 1.15 + 40_000, (first, second, rss)

"""Continuous batching in the server (``server/scheduler.py``): concurrent requests decode
in one T3 batch, each speaking what it speaks alone; a client that leaves frees its row;
a long request does not hold back a short one; ``/health`` shows the rows and the queue.

uvicorn on 127.0.0.1 and real HTTP clients, a Nano random-weight model with a short
built-in voice (``tests.helpers.server``). Random weights never emit the stop token, so a
request for ``n`` speech tokens gives exactly ``n`` (plus Nano's 3 silence tokens).
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager

from chatterbox_mlx.server.app import Settings, create_app
from chatterbox_mlx.tts import load_pipeline

import httpx
import numpy as np
import pytest

from tests.helpers.server import ThreadServer, short_voice_dir

pytestmark = [pytest.mark.server, pytest.mark.slow]

KEY = "test-key"
TEXTS = ("Hello there.", "A longer sentence, with a few more words in it.", "Yes.", "Go on, then.")


@pytest.fixture(scope="module")
def nano():
    return load_pipeline(str(short_voice_dir("nano")))


@contextmanager
def serving(nano, tmp_path, **changes):
    settings = Settings(
        **{
            "api_key": KEY,
            "watermark": False,
            "max_new_tokens": 12,
            "chunk_tokens": 4,
            "max_batch": 4,
            **changes,
        }
    )
    with ThreadServer(create_app({"nano": nano}, settings=settings, voices_dir=tmp_path)) as s:
        yield s


def speech(url: str, body: dict) -> httpx.Response:
    return httpx.post(
        url + "/v1/audio/speech",
        content=json.dumps({"response_format": "pcm", **body}).encode(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        timeout=600,
    )


def health(url: str) -> dict:
    return httpx.get(url + "/health", timeout=30).json()["models"][0]


def pcm(data: bytes) -> np.ndarray:
    return np.frombuffer(data, "<i2").astype(np.float32) / 32768


class HealthWatch:
    """Polls ``/health`` in a thread; ``most`` is the largest ``rows`` seen."""

    def __init__(self, url: str):
        self.url, self.most, self.seen = url, 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            state = health(self.url)
            self.seen.append(state)
            self.most = max(self.most, state["rows"])
            time.sleep(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)


def test_concurrent_requests_batch_and_each_speaks_as_alone(nano, tmp_path):
    """Four seeded requests of different text lengths at once: the batch holds them
    together (``/health`` shows the rows), and each response is what ``generate_stream``
    makes alone in this process with the same seed. Tolerance 2e-4 (well under one
    16-bit step, 3e-5, times a few): batched products sum in another order than one
    row's, a rounding-level difference; a flipped token would differ by far more."""
    bodies = [
        {"input": text, "seed": 100 + i, "max_new_tokens": 6 + 2 * i}
        for i, text in enumerate(TEXTS)
    ]
    with serving(nano, tmp_path) as server:
        results: dict[int, httpx.Response] = {}
        threads = [
            threading.Thread(target=lambda i=i, b=b: results.__setitem__(i, speech(server.url, b)))
            for i, b in enumerate(bodies)
        ]
        with HealthWatch(server.url) as watch:
            for t in threads:
                t.start()
            for t in threads:
                t.join(600)
        state = health(server.url)
    assert watch.most >= 2, watch.seen[-5:]
    assert state["max_batch"] == 4 and state["rows"] == 0 and state["waiting"] == 0
    assert state["done"] == 4 and state["failed"] == 0
    for i, body in enumerate(bodies):
        assert results[i].status_code == 200, results[i].text
        alone = nano.generate_stream(
            body["input"],
            seed=body["seed"],
            max_new_tokens=body["max_new_tokens"],
            chunk_tokens=4,
            watermark=False,
        )
        expected = np.concatenate([np.asarray(c).reshape(-1) for c in alone])
        got = pcm(results[i].content)
        assert len(got) == len(expected) == (body["max_new_tokens"] + 3) * 960
        assert np.abs(expected).max() > 1e-3  # not silence
        np.testing.assert_allclose(got, np.clip(expected, -1, 1), atol=2e-4 + 1 / 32768)


def test_a_client_that_leaves_frees_its_row_and_the_other_goes_on(nano, tmp_path):
    """Two long requests in one batch; one client leaves after its first bytes: its row
    leaves at the next step, the other request runs to its full length."""
    with serving(nano, tmp_path, max_new_tokens=60, chunk_tokens=2) as server:
        other: dict = {}
        stay = threading.Thread(
            target=lambda: other.setdefault("r", speech(server.url, {"input": TEXTS[1], "seed": 2}))
        )
        stay.start()
        with httpx.stream(
            "POST",
            server.url + "/v1/audio/speech",
            content=json.dumps({"input": TEXTS[0], "response_format": "pcm", "seed": 1}),
            headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
            timeout=600,
        ) as response:
            assert response.status_code == 200
            next(response.iter_bytes())
            deadline = time.monotonic() + 120
            while health(server.url)["rows"] < 2:
                assert time.monotonic() < deadline, "the two requests never ran together"
                time.sleep(0.05)
        deadline = time.monotonic() + 120
        while (state := health(server.url))["cancelled"] < 1:
            assert time.monotonic() < deadline, f"the leaving client's row stayed: {state}"
            time.sleep(0.05)
        assert state["rows"] == 1  # the other one still runs
        stay.join(600)
    assert other["r"].status_code == 200
    assert len(pcm(other["r"].content)) == (60 + 3) * 960


def test_a_long_request_does_not_hold_back_a_short_one(nano, tmp_path):
    """A short request sent while a long one runs joins the batch at once and finishes
    first; with one row at a time it would wait for the long one to end."""
    with serving(nano, tmp_path, max_new_tokens=80, chunk_tokens=10) as server:
        ends: dict[str, float] = {}

        def send(name: str, body: dict) -> None:
            assert speech(server.url, body).status_code == 200
            ends[name] = time.monotonic()

        long = threading.Thread(target=send, args=("long", {"input": TEXTS[1], "seed": 1}))
        long.start()
        deadline = time.monotonic() + 120
        while health(server.url)["rows"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        send("short", {"input": TEXTS[2], "seed": 2, "max_new_tokens": 4})
        long.join(600)
    assert ends["short"] < ends["long"], ends

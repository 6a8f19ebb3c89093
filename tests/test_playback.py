"""Live playback through a test double of the output stream (CI has no sound card)."""

import threading
import time

from chatterbox_mlx.cli.playback import PlaybackError, Player

import numpy as np
import pytest


class FakeStream:
    def __init__(self, samplerate, delay=0.0, fail_after=None):
        self.samplerate = samplerate
        self.delay = delay
        self.fail_after = fail_after
        self.written = []
        self.started = self.closed = self.aborted = False
        self.writer_thread = None

    def start(self):
        self.started = True

    def write(self, chunk):
        self.writer_thread = threading.current_thread()
        if self.fail_after is not None and len(self.written) >= self.fail_after:
            raise OSError("device unplugged")
        time.sleep(self.delay)
        self.written.append(chunk.copy())

    def abort(self):
        self.aborted = True

    def close(self):
        self.closed = True


def test_chunks_play_in_order_on_a_background_thread():
    stream = FakeStream(24000)
    chunks = [np.full(100 * (i + 1), i, np.float32) for i in range(4)]
    with Player(24000, stream_factory=lambda sr: stream) as player:
        for c in chunks:
            player.play(c)
    assert stream.started and stream.closed and not stream.aborted
    assert stream.writer_thread is not threading.main_thread()
    np.testing.assert_array_equal(np.concatenate(stream.written)[:, 0], np.concatenate(chunks))
    assert all(w.shape[1] == 1 and w.dtype == np.float32 for w in stream.written)


def test_play_returns_before_audio_finishes():
    stream = FakeStream(24000, delay=0.2)
    player = Player(24000, stream_factory=lambda sr: stream)
    t0 = time.perf_counter()
    player.play(np.zeros(10, np.float32))
    player.play(np.zeros(10, np.float32))
    assert time.perf_counter() - t0 < 0.15  # generation may go on while audio plays
    player.wait()
    player.close()
    assert len(stream.written) == 2


def test_interrupt_stops_and_aborts():
    stream = FakeStream(24000, delay=0.05)
    with pytest.raises(KeyboardInterrupt):
        with Player(24000, stream_factory=lambda sr: stream) as player:
            for _ in range(50):
                player.play(np.zeros(10, np.float32))
            raise KeyboardInterrupt
    assert stream.aborted and stream.closed
    assert len(stream.written) < 50


def test_device_failure_is_reported():
    stream = FakeStream(24000, fail_after=1)
    player = Player(24000, stream_factory=lambda sr: stream)
    player.play(np.zeros(10, np.float32))
    player.play(np.zeros(10, np.float32))
    with pytest.raises(PlaybackError, match="device unplugged"):
        player.wait()
    player.close()

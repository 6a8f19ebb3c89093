"""Live playback through the speakers (sounddevice), fed chunk by chunk.

Audio is handed to a background thread through a queue, so generation of the next
chunk goes on while the current one plays. ``stream_factory`` lets tests replace the
sound card with a double that records what it was given.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import numpy as np

_END = object()


class PlaybackError(RuntimeError):
    """No audio output could be opened."""


def _sounddevice_stream(samplerate: int):
    try:
        import sounddevice as sd
    except OSError as err:  # PortAudio missing
        raise PlaybackError(
            f"cannot play audio: {err}. Install PortAudio (Linux: `apt-get install "
            "libportaudio2`) or write to a file with --out instead."
        ) from err
    try:
        return sd.OutputStream(samplerate=samplerate, channels=1, dtype="float32")
    except Exception as err:
        raise PlaybackError(
            f"cannot open the audio output ({err}); write to a file with --out instead."
        ) from err


class Player:
    """``with Player(24000) as player: player.play(chunk)`` - chunks play back to back."""

    def __init__(self, samplerate: int, stream_factory: Callable | None = None):
        self.samplerate = samplerate
        self._stream = (stream_factory or _sounddevice_stream)(samplerate)
        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._stream.start()
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stopped.is_set():
                chunk = self._queue.get()
                if chunk is _END:
                    return
                self._stream.write(chunk)
        except BaseException as err:  # surfaced to the caller on the next call
            self._error = err

    def play(self, chunk) -> None:
        if self._error is not None:
            raise PlaybackError(f"audio output failed: {self._error}") from self._error
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1, 1)
        if chunk.size:
            self._queue.put(chunk)

    def wait(self) -> None:
        """Block until everything queued has played."""
        self._queue.put(_END)
        self._thread.join()
        if self._error is not None:
            raise PlaybackError(f"audio output failed: {self._error}") from self._error

    def stop(self) -> None:
        """Stop now (Ctrl-C): drop what is queued and abort the stream."""
        self._stopped.set()
        self._queue.put(_END)
        try:
            self._stream.abort()
        except Exception:
            pass

    def close(self) -> None:
        self._stopped.set()
        self._queue.put(_END)
        self._thread.join(timeout=1.0)
        self._stream.close()

    def __enter__(self) -> Player:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.wait()
        else:
            self.stop()
        self.close()

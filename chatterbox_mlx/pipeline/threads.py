"""Streams on a thread of their own, and the lock that runs MLX one call at a time.

A stream's state between chunks (T3's cache and keys, the vocoder's) is lazy MLX arrays,
which only the thread that made them can evaluate; ``on_own_thread`` gives each stream
its thread and lets any thread consume it."""

from __future__ import annotations

import atexit
import queue
import threading
import weakref
from collections.abc import Iterator

import mlx.core as mx

COMPUTE_LOCK = threading.RLock()  # MLX computes one call (or stream chunk) at a time


_END = object()


_OPEN_STREAMS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_open_streams() -> None:
    """End the streams a program left open, while their threads can still run (see
    ``on_own_thread``); a stream that another thread is reading at this moment is left
    to it."""
    for stream in list(_OPEN_STREAMS):
        try:
            stream.close()
        except ValueError:  # "generator already executing"
            pass


def on_own_thread(stream: Iterator[mx.array]) -> Iterator[mx.array]:
    consumer = _consume_on_own_thread(stream)
    _OPEN_STREAMS.add(consumer)
    return consumer


def _consume_on_own_thread(stream: Iterator[mx.array]) -> Iterator[mx.array]:
    """Run ``stream`` on a thread of its own, one item per request of the consumer.

    A stream's state between chunks (T3's cache and keys, the vocoder's) is lazy MLX
    arrays, which only the thread that made them can evaluate; its consumer may be any
    thread (a web framework's pool). Each item is computed under ``COMPUTE_LOCK`` when
    asked for, so a consumer that stops asking stops the generation at the next chunk.

    The thread frees MLX's state for it (``mx.clear_streams``) before it ends, and the
    consumer waits for that when the stream ends or is closed: MLX's thread-exit cleanup
    needs the interpreter, and running it while a finishing program shuts the
    interpreter down aborts the process ("terminate called without an active
    exception"). Streams still open when the program ends are closed at exit, before
    the interpreter shuts down."""
    requests: queue.Queue = queue.Queue()
    results: queue.Queue = queue.Queue()

    def work() -> None:
        try:
            while requests.get():
                try:
                    with COMPUTE_LOCK:
                        item = next(stream, _END)
                except BaseException as err:  # handed to the consumer
                    results.put((None, err))
                    return
                results.put((item, None))
                if item is _END:
                    return
        finally:
            stream.close()
            mx.clear_streams()

    worker = threading.Thread(target=work, name="chatterbox-mlx stream", daemon=True)
    worker.start()
    try:
        while True:
            requests.put(True)
            item, error = results.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        requests.put(False)
        if threading.current_thread() is not worker:  # a garbage collection may run there
            worker.join()

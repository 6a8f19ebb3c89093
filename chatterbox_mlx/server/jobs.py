"""Each model's thread and its bounded queue.

Each served model has a :class:`ModelWorker`: one thread that runs its :class:`Job` s in
arrival order. A job with a ``session`` (speech) joins the running batch while it holds
fewer than ``max_batch`` requests (``scheduler``: continuous batching); any other job
(preparing a voice) runs alone between two batch steps. ``submit`` refuses a job
(:class:`QueueFull`, the server's 429) when ``max_queue`` jobs already wait for a place.
A job hands its results to the event loop through ``emit`` (thread-safe) and reads
``cancelled`` between chunks; a job cancelled while it waits (its client left) is dropped
without running and frees its place at once. On shutdown (``begin_shutdown``) the waiting
jobs are answered with ``ShuttingDown`` and the running ones are asked to end at their
next chunk (``Job.stopping``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable

import mlx.core as mx

from .logs import throttled
from .scheduler import RunningBatch

logger = logging.getLogger("chatterbox_mlx.server")

DONE = "done"
DATA = "data"
ERROR = "error"
MAX_PENDING = 8  # DATA items made and not yet read (a streamed response's buffer)
STALL_SECONDS = 60.0  # a client that reads nothing this long loses its stream


class QueueFull(Exception):
    """The model's queue is full; ``retry_after`` is an estimate in whole seconds."""

    def __init__(self, waiting: int, retry_after: int):
        super().__init__(f"{waiting} requests are already waiting")
        self.waiting = waiting
        self.retry_after = retry_after


class ShuttingDown(Exception):
    """The server is shutting down: the job was not run (the server's 503)."""


class Job:
    """Work for a model's thread: ``run(job)`` computes, calls ``job.emit(DATA, value)``
    and may set ``job.result``; or ``session(job)`` makes a ``scheduler.Session`` whose
    rows the batch decodes. The event loop reads the items with ``await job.next()``: the
    DATA items, then ``(ERROR, exception)`` if the work raised, then ``(DONE, result)``."""

    def __init__(
        self,
        run: Callable[[Job], None] | None,
        loop: asyncio.AbstractEventLoop,
        *,
        session: Callable | None = None,
    ):
        self.run = run
        self.session = session
        self._loop = loop
        self._items: asyncio.Queue = asyncio.Queue()
        self._cancelled = threading.Event()
        self._stopping = threading.Event()
        self._room = threading.Semaphore(MAX_PENDING)
        self.started = threading.Event()
        self.finished = threading.Event()
        self.chunks = 0  # items of audio computed (for the stats)
        self.began = 0.0  # when the model's thread started it
        self.result = None  # what ``run`` made, handed over with the DONE item
        self._unread, self._unread_lock = 0, threading.Lock()  # a batched job's DATA items
        self._full_since: float | None = None  # since when more than MAX_PENDING are unread

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def stopping(self) -> bool:
        """The server is shutting down: end the work at the next chunk, properly."""
        return self._stopping.is_set()

    def stop(self) -> None:
        self._stopping.set()

    def emit(self, kind: str, value=None) -> None:
        """Hand an item to the event loop. A DATA item waits while MAX_PENDING of them are
        unread (a slow client holds back the generation instead of the server holding
        its audio); it is dropped once the job is cancelled, and a client that reads
        nothing for STALL_SECONDS loses its stream (the model is not held for it). A
        batched job never waits here (the batch would wait with it): its session makes
        no more audio while MAX_PENDING items are unread (``backlogged``), and its client
        has STALL_SECONDS to read again."""
        if kind == DATA:
            if self.session is not None:
                self._room_or_stall()
            else:
                self._wait_for_room()
            if self.cancelled:
                return
        try:
            self._loop.call_soon_threadsafe(self._items.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is gone (shutdown): nobody is listening
            self.cancel()

    def _wait_for_room(self) -> None:
        waited = 0.0
        while not self._room.acquire(timeout=0.1):
            waited += 0.1
            if waited >= STALL_SECONDS and not self.cancelled:
                self._stalled()
            if self.cancelled:
                return

    def _room_or_stall(self) -> None:
        with self._unread_lock:
            self._unread += 1
            if self._unread >= MAX_PENDING and self._full_since is None:
                self._full_since = time.monotonic()
        self.backlogged  # noqa: B018  (cancels a stalled client)

    @property
    def backlogged(self) -> bool:
        """A batched job's client has MAX_PENDING items unread: its session waits for it
        (a client that read nothing for STALL_SECONDS meanwhile is cancelled)."""
        if self.session is None:
            return False
        with self._unread_lock:
            over = self._unread >= MAX_PENDING
            since = self._full_since
        if over and since is not None and time.monotonic() - since >= STALL_SECONDS:
            if not self.cancelled:
                self._stalled()
        return over

    def _stalled(self) -> None:
        throttled(
            logger,
            logging.INFO,
            "stalled",
            "a client read nothing for %g s: its stream is stopped",
            STALL_SECONDS,
        )
        self.cancel()

    async def next(self) -> tuple[str, object]:
        item = await self._items.get()
        if item[0] == DATA and self.session is None:
            self._room.release()
        elif item[0] == DATA:
            with self._unread_lock:
                self._unread -= 1
                if self._unread < MAX_PENDING:
                    self._full_since = None
        return item


class ModelWorker:
    """The thread that runs one model's jobs (see the module docstring)."""

    def __init__(self, name: str, max_queue: int, max_batch: int = 1):
        self.name = name
        self.max_queue = max_queue
        self.max_batch = max_batch
        self._waiting: deque[Job] = deque()
        self._running: list[Job] = []
        self._batch = RunningBatch()
        self._cond = threading.Condition()
        self._stop = False
        self._closing = False
        self._durations: deque[float] = deque(maxlen=20)
        self.stats = {
            "done": 0,
            "failed": 0,
            "cancelled": 0,
            "dropped": 0,
            "rejected": 0,
            "chunks": 0,
        }
        self._thread = threading.Thread(target=self._loop, name=f"chatterbox-{name}", daemon=True)
        self._thread.start()

    # ---- the event loop's side ------------------------------------------------------

    def submit(self, job: Job) -> None:
        with self._cond:
            if self._closing:
                raise ShuttingDown
            self._prune()
            free = max(0, self.max_batch - len(self._running))
            if len(self._waiting) - free >= self.max_queue:
                self.stats["rejected"] += 1
                raise QueueFull(len(self._waiting), self._retry_after())
            self._waiting.append(job)
            self._cond.notify()

    def _prune(self) -> None:
        """Drop waiting jobs whose client left (they free their place at once)."""
        kept = deque(j for j in self._waiting if not j.cancelled)
        self.stats["dropped"] += len(self._waiting) - len(kept)
        for job in self._waiting:
            if job.cancelled:
                job.finished.set()
        self._waiting = kept

    def cancel(self, job: Job) -> None:
        job.cancel()
        with self._cond:
            self._prune()
            self._cond.notify()

    def _retry_after(self) -> int:
        typical = sorted(self._durations)[len(self._durations) // 2] if self._durations else 5.0
        return max(1, math.ceil(typical * (len(self._waiting) // self.max_batch + 1)))

    def status(self) -> dict:
        with self._cond:
            self._prune()
            return {
                "busy": bool(self._running),
                "rows": len(self._running),  # requests running (in the batch, or a voice)
                "t3_rows": self._batch.cache_rows,  # T3's cache rows (CFG takes two)
                "max_batch": self.max_batch,
                "waiting": len(self._waiting),
                "max_queue": self.max_queue,
                **self.stats,
            }

    def begin_shutdown(self) -> None:
        """Take no more jobs; answer the waiting ones (``(ERROR, ShuttingDown())``) and
        let the running ones end at their next chunk (``Job.stop``)."""
        with self._cond:
            self._closing = True
            waiting, self._waiting = list(self._waiting), deque()
            running = list(self._running)
        for job in waiting:
            job.cancel()
            job.emit(ERROR, ShuttingDown())
            job.emit(DONE, None)
            job.finished.set()
        for job in running:
            job.stop()

    def stop(self, timeout: float = 1.0) -> None:
        with self._cond:
            self._stop = True
            for job in [*self._waiting, *self._running]:
                job.cancel()
            self._cond.notify_all()
        self._thread.join(timeout)

    # ---- the model's thread ---------------------------------------------------------

    def _next_job(self) -> Job | None:
        """The next job to start, or None: step the batch (or stop, ``self._stop``)."""
        with self._cond:
            while True:
                self._prune()
                if self._stop:
                    return None
                head = self._waiting[0] if self._waiting else None
                if head is not None and (head.session is None or len(self._batch) < self.max_batch):
                    job = self._waiting.popleft()
                    self._running.append(job)
                    return job
                if len(self._batch):
                    return None
                self._cond.wait()

    def _loop(self) -> None:
        try:
            self._run_jobs()
        finally:
            for job, outcome, error in self._batch.close():
                self._end(job, outcome, error)
            mx.clear_streams()  # MLX's state for this thread, while the interpreter runs

    def _run_jobs(self) -> None:
        while not self._stop:
            job = self._next_job()
            if job is None:
                ended = self._batch.tick()
            elif job.session is not None:
                job.started.set()
                job.began = time.perf_counter()
                ended = self._batch.add(job)
            else:
                ended = [self._run_alone(job)]
            for job, outcome, error in ended:
                self._end(job, outcome, error)

    def _run_alone(self, job: Job) -> tuple[Job, str, BaseException | None]:
        job.started.set()
        job.began = time.perf_counter()
        try:
            job.run(job)
        except BaseException as err:  # handed to the request, which answers it
            return job, "cancelled" if job.cancelled else "failed", err
        return job, "cancelled" if job.cancelled else "done", None

    def _end(self, job: Job, outcome: str, error: BaseException | None) -> None:
        if error is not None:
            job.emit(ERROR, error)
        job.emit(DONE, job.result)
        with self._cond:
            self.stats[outcome] += 1
            self.stats["chunks"] += job.chunks
            self._durations.append(time.perf_counter() - job.began)
            if job in self._running:
                self._running.remove(job)
        job.finished.set()

"""Continuous batching: the speech requests of one model decode in one T3 batch.

The model's thread (``jobs.ModelWorker``) admits waiting requests into the running batch
whenever a place is free (up to ``--max-batch`` requests) and then goes round, one T3 step
each time (``RunningBatch.tick``):

1. requests whose client left, or that the server stops, or whose audio is full, leave
   the batch (their row is dropped at once);
2. every request without a row asks for its next one (``Session.next_row``: the next chunk
   of its text, its pauses made on the way); a new row is prefilled and merged into the
   batch, a request with nothing left finishes;
3. every row's token is read and handed to its request (``Session.push``), which renders
   its audio through S3Gen as its chunk schedule fills and streams it to its client; a row
   that ends (its stop token, its token limit) leaves and its request ``end_row`` s;
4. one forward pass over the rows still running samples their next tokens.

Requests are admitted in arrival order and every running request advances one token a
step, so a long request slows the short ones beside it but never holds them back from
starting while a place is free. A request's rows are its solo rows (``StreamRows``,
``DecodeBatch``): with a seed it speaks what it speaks alone.
"""

from __future__ import annotations

import time
from typing import Protocol

from ..models.t3.batch import DecodeBatch
from ..pipeline.threads import COMPUTE_LOCK

Job = object  # a ``jobs.Job`` with a ``session`` (jobs imports this module)
WAIT = "wait"  # ``Session.next_row``: no row now, ask again at a later step
IDLE_SECONDS = 0.01  # a round with no row to step (every request waits for its client)


class Session(Protocol):
    """A job's work, row by row (``synthesis.SpeechSession``)."""

    t3: object
    stopped: bool

    def next_row(self): ...  # a BatchRow, WAIT, or None: nothing more to say

    def push(self, token: int) -> None: ...

    def end_row(self) -> None: ...

    def finish(self) -> None: ...


class RunningBatch:
    """The requests running in one model's batch; ``tick`` goes round once and returns
    the jobs that ended: ``(job, outcome, error)``, the outcome ``done``, ``failed`` or
    ``cancelled``, the error what a failed job raised (the worker hands it on)."""

    def __init__(self):
        self.decode: DecodeBatch | None = None
        self.sessions: dict[Job, Session] = {}
        self.row_of: dict[Job, int] = {}  # jobs with a row in the batch
        self.job_of: dict[int, Job] = {}
        self.next_row = 0
        self.ended: list[tuple[Job, str, BaseException | None]] = []

    def __len__(self) -> int:
        return len(self.sessions)

    @property
    def cache_rows(self) -> int:
        """Rows of T3's cache (a request with CFG takes two)."""
        return sum(a.rows for a in self.decode.actives) if self.decode is not None else 0

    def add(self, job: Job) -> list[tuple[Job, str, BaseException | None]]:
        """Start ``job``'s session; it joins the batch at the next ``tick``. Returns the
        job as ended (``tick``'s form) if its session could not start."""
        try:
            with COMPUTE_LOCK:
                self.sessions[job] = job.session(job)
        except BaseException as err:
            self._fail(job, err)
        return self._take_ended()

    def tick(self) -> list[tuple[Job, str, BaseException | None]]:
        with COMPUTE_LOCK:
            self._leave([job for job in self.row_of if self.sessions[job].stopped])
            for job in [job for job in self.sessions if job not in self.row_of]:
                self._join(job)
            stepping = self.decode is not None and self.decode.actives
            if stepping:
                self._step()
        if not stepping and not self.ended:
            time.sleep(IDLE_SECONDS)
        return self._take_ended()

    def _take_ended(self) -> list[tuple[Job, str, BaseException | None]]:
        ended, self.ended = self.ended, []
        return ended

    def _join(self, job: Job) -> None:
        session = self.sessions[job]
        try:
            row = session.next_row()
            if row is WAIT:
                return
            if row is None:
                self._finish(job)
                return
            if self.decode is None:
                self.decode = DecodeBatch(session.t3)
            self.decode.join(self.next_row, row)
        except BaseException as err:
            self._fail(job, err)
            return
        self.row_of[job], self.job_of[self.next_row] = self.next_row, job
        self.next_row += 1

    def _step(self) -> None:
        try:
            events = self.decode.read()
        except BaseException as err:  # a row's logits were not finite: every row ends
            self._fail_all(err)
            return
        for event in events:
            job = self.job_of[event.row]
            if job not in self.sessions:
                continue
            session = self.sessions[job]
            try:
                if event.step is not None:
                    session.push(event.step.token)
                if event.finished is not None:
                    self._release(job)
                    session.end_row()
            except BaseException as err:
                self._fail(job, err)
        if self.decode.actives:
            try:
                self.decode.step()
            except BaseException as err:
                self._fail_all(err)

    def _fail_all(self, err: BaseException) -> None:
        """The batch itself failed: every request in it fails, and the next starts anew."""
        jobs, self.decode = list(self.row_of), None
        self.row_of.clear()
        self.job_of.clear()
        for job in jobs:
            self._fail(job, err)

    def _release(self, job: Job) -> None:
        """Forget ``job``'s row (it has left the batch)."""
        row = self.row_of.pop(job, None)
        if row is not None:
            self.job_of.pop(row, None)

    def _leave(self, jobs: list[Job]) -> None:
        rows = {self.row_of[job] for job in jobs}
        if rows and self.decode is not None:
            self.decode.remove(rows)
        for job in jobs:
            self._release(job)

    def _finish(self, job: Job) -> None:
        session = self.sessions.pop(job)
        try:
            session.finish()
        except BaseException as err:
            self._fail(job, err)
            return
        self.ended.append((job, "cancelled" if job.cancelled else "done", None))

    def _fail(self, job: Job, err: BaseException) -> None:
        if job in self.row_of:
            self._leave([job])
        self.sessions.pop(job, None)
        self.ended.append((job, "cancelled" if job.cancelled else "failed", err))

    def close(self) -> list[tuple[Job, str, BaseException | None]]:
        """Cancel every running job (the server stops); returns them as ``tick`` does."""
        for job in list(self.sessions):
            job.cancel()
            self.ended.append((job, "cancelled", None))
        self.sessions.clear()
        self.row_of.clear()
        self.job_of.clear()
        self.decode = None
        return self._take_ended()

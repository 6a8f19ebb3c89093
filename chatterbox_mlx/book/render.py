"""Rendering a book into the work folder, resumably, with bad chunks caught and rendered
again.

Every planned chunk (``plan.py``) is one text with its own seed (``plan.chunk_seed``);
the first attempts at the chunks still to do go through the pipeline together
(``generate_each``: T3 decodes ``batch_size`` chunks at once, each speaking what it
speaks alone) and come back in order; each chunk's audio and record go to the work
folder (``work.py``) as soon as it is made, so memory stays flat and a run stopped at any
point resumes where it was.
A chunk the checks (``checks.py``) find suspect is rendered again with the next attempt's
seed, up to ``retries`` times; the attempt with the fewest problems is kept. Chunks too
early in the book for the duration check (fewer than 10 before them) are checked once
every chunk is made, against the whole book, and rendered again then if they stand out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .checks import RateReference, level_problems, token_problem
from .plan import ChapterPlan, PlannedChunk, chunk_seed
from .work import WorkFolder, WorkFolderError

FADE_OUT_S = 0.01


@dataclass(frozen=True)
class RenderSettings:
    generation: dict  # generate()'s keywords given (exaggeration, temperature, ...)
    max_new_tokens: int  # as resolved for the model (its default where not given)
    speed: float = 1.0
    language: str | None = None
    watermark: bool = True
    retries: int = 2
    batch_size: int = 1  # chunks T3 decodes together (first attempts; retries go alone)


def fade_out(wav: np.ndarray, sr: int) -> np.ndarray:
    n = min(len(wav), int(sr * FADE_OUT_S))
    if n:
        wav = wav.copy()
        wav[-n:] *= ((np.cos(np.linspace(0, np.pi, n)) + 1) / 2).astype(np.float32)
    return wav


class ChunkSynthesizer:
    """One chunk's text and seed -> (waveform, speech tokens T3 sampled or None)."""

    def __init__(self, model, voice, settings: RenderSettings):
        self.model = model
        self.voice = voice
        self.settings = settings
        self.sr = model.sr

    def __call__(self, text: str, seed: int) -> tuple[np.ndarray, int | None]:
        return next(self.many([text], [seed]))

    def many(self, texts: list[str], seeds: list[int]) -> Iterator[tuple[np.ndarray, int | None]]:
        """Each text's ``(waveform, tokens)`` in order, as soon as it is made, T3 decoding
        ``batch_size`` of them at once."""
        s = self.settings
        waves = self.model.generate_each(
            texts,
            seed=seeds,
            voice=self.voice,
            watermark=s.watermark,
            speed=s.speed,
            language_id=s.language,
            batch_size=s.batch_size,
            **s.generation,
        )
        for wav in waves:
            yield np.asarray(wav, dtype=np.float32).reshape(-1), self._tokens()

    def _tokens(self) -> int | None:
        """T3's sampled speech tokens for the chunk just made, from ``last_stats`` (which
        counts the variant's tail tokens too); None where the pipeline does not say."""
        count = getattr(self.model, "last_stats", {}).get("speech tokens")
        if count is None:
            return None
        return int(count) - len(self.model.variant.tail_tokens)


@dataclass
class _Attempt:
    attempt: int
    seed: int
    wav: np.ndarray
    tokens: int | None
    problems: list[str]
    compute_seconds: float


class BookRenderer:
    def __init__(
        self,
        synthesize: Callable,
        work: WorkFolder,
        settings: RenderSettings,
        seed: int,
        progress=None,
        on_chunk: Callable[[PlannedChunk, dict], None] | None = None,
    ):
        self.synthesize = synthesize
        self.work = work
        self.settings = settings
        self.seed = seed
        self.progress = progress
        self.on_chunk = on_chunk
        self.sr = synthesize.sr

    # ---- resuming -----------------------------------------------------------------------

    def finished(self, plans: list[ChapterPlan]) -> dict[tuple[int, int], dict]:
        """The records of the chunks already in the work folder."""
        self.work.remove_strays()
        records = {}
        for plan in plans:
            for chunk in plan.chunks:
                record = self.work.load_record(chunk.chapter, chunk.index)
                if record is None:
                    continue
                if record.get("text_sha256") != chunk.text_sha256:
                    raise WorkFolderError(
                        f"{self.work.path} holds other text for chapter {chunk.chapter}, chunk "
                        f"{chunk.index + 1}; add --restart to discard its work and start again"
                    )
                records[chunk.chapter, chunk.index] = record
        return records

    # ---- rendering ----------------------------------------------------------------------

    def render(self, plans: list[ChapterPlan], records: dict) -> dict[tuple[int, int], dict]:
        reference = RateReference()
        for record in records.values():
            if not record["problems"]:
                reference.add(record["seconds"], len(record["text"]))
        todo = [c for p in plans for c in p.chunks if (c.chapter, c.index) not in records]
        firsts = self._first_attempts(todo)
        for plan in plans:
            for chunk in plan.chunks:
                key = (chunk.chapter, chunk.index)
                if key in records:
                    continue
                record = self._render(chunk, reference, [], first=next(firsts))
                records[key] = record
                if not record["problems"]:
                    reference.add(record["seconds"], len(chunk.text))
                if self.progress is not None:
                    done = all((c.chapter, c.index) in records for c in plan.chunks)
                    self.progress.chunk_done(chunk, record, chapter_done=done)
                if self.on_chunk is not None:
                    self.on_chunk(chunk, record)
        self._recheck_durations(plans, records)
        return records

    def _first_attempts(self, chunks: list[PlannedChunk]) -> Iterator[tuple]:
        """Each chunk's first attempt ``(seed, wav, tokens, compute seconds)``, in order,
        all of them through the synthesizer's ``many`` (batched)."""
        if not chunks:
            return
        seeds = [chunk_seed(self.seed, chunk, 0) for chunk in chunks]
        results = self.synthesize.many([c.text for c in chunks], seeds)
        started = time.perf_counter()
        for seed, (wav, tokens) in zip(seeds, results, strict=True):
            now = time.perf_counter()
            yield seed, wav, tokens, now - started
            started = time.perf_counter()

    def _render(
        self,
        chunk: PlannedChunk,
        reference: RateReference,
        tries: list,
        kept: dict | None = None,
        first: tuple | None = None,
    ) -> dict:
        """Attempts after those in ``tries`` until one has no problem or the retries are
        spent (``first``: attempt 0, already made); the attempt with the fewest problems
        is saved (``kept``, a record already saved, stays when no new attempt does
        better)."""
        best: _Attempt | None = None
        fewest = len(kept["problems"]) if kept is not None else None
        spent = 0.0
        for attempt in range(len(tries), self.settings.retries + 1):
            if attempt == 0 and first is not None:
                candidate = self._judge(chunk, 0, *first, reference)
            else:
                candidate = self._attempt(chunk, attempt, reference)
            spent += candidate.compute_seconds
            tries.append(
                {"attempt": attempt, "seed": candidate.seed, "problems": candidate.problems}
            )
            if fewest is None or len(candidate.problems) < fewest:
                best, fewest = candidate, len(candidate.problems)
            if not candidate.problems:
                break
        if best is None:
            if kept is None:
                raise WorkFolderError(f"chapter {chunk.chapter}: no attempts left to render")
            record = {**kept, "tries": tries, "compute_seconds": kept["compute_seconds"] + spent}
            self.work.save_record(chunk.chapter, chunk.index, record)
            return record
        record = {
            "chapter": chunk.chapter,
            "index": chunk.index,
            "text": chunk.text,
            "text_sha256": chunk.text_sha256,
            "seed": best.seed,
            "attempt": best.attempt,
            "tokens": best.tokens,
            "samples": len(best.wav),
            "seconds": len(best.wav) / self.sr,
            "problems": best.problems,
            "tries": tries,
            "compute_seconds": spent,
        }
        self.work.save(chunk.chapter, chunk.index, best.wav, record)
        return record

    def _attempt(self, chunk: PlannedChunk, attempt: int, reference: RateReference) -> _Attempt:
        seed = chunk_seed(self.seed, chunk, attempt)
        started = time.perf_counter()
        wav, tokens = self.synthesize(chunk.text, seed)
        compute = time.perf_counter() - started
        return self._judge(chunk, attempt, seed, wav, tokens, compute, reference)

    def _judge(
        self,
        chunk: PlannedChunk,
        attempt: int,
        seed: int,
        wav: np.ndarray,
        tokens: int | None,
        compute: float,
        reference: RateReference,
    ) -> _Attempt:
        """The attempt with the problems the checks find in it."""
        problems = [p for p in (token_problem(tokens, self.settings.max_new_tokens),) if p]
        problems += level_problems(wav)
        rate = reference.problem(len(wav) / self.sr, len(chunk.text))
        if rate:
            problems.append(rate)
        return _Attempt(attempt, seed, fade_out(wav, self.sr), tokens, problems, compute)

    def _recheck_durations(self, plans: list[ChapterPlan], records: dict) -> None:
        """The duration check once more, against every chunk of the book: a chunk that
        stands out gets the attempts it has left."""
        reference = RateReference()
        for record in records.values():
            if not record["problems"]:
                reference.add(record["seconds"], len(record["text"]))
        for plan in plans:
            for chunk in plan.chunks:
                record = records[chunk.chapter, chunk.index]
                if record["problems"]:
                    continue
                problem = reference.problem(record["seconds"], len(chunk.text))
                if problem is None:
                    continue
                kept = {**record, "problems": [problem]}
                tries = [
                    {**t, "problems": [problem]} if t["attempt"] == record["attempt"] else t
                    for t in record["tries"]
                ]
                records[chunk.chapter, chunk.index] = self._render(chunk, reference, tries, kept)


# ---- the report ---------------------------------------------------------------------------


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def report_lines(plans: list[ChapterPlan], records: dict) -> list[str]:
    """Retried and still-suspect chunks: chapter, position, problems, the text."""
    retried = suspect = 0
    lines = []
    for plan in plans:
        at = plan.lead_in
        for chunk in plan.chunks:
            record = records[chunk.chapter, chunk.index]
            tries = len(record["tries"])
            retried += tries > 1
            if record["problems"]:
                suspect += 1
                text = chunk.text if len(chunk.text) <= 70 else chunk.text[:67] + "..."
                lines.append(
                    f"  chapter {chunk.chapter} ({plan.chapter.title}), chunk {chunk.index + 1} "
                    f"of {len(plan.chunks)} at {_clock(at)} ({tries} "
                    f"{'try' if tries == 1 else 'tries'}): {'; '.join(record['problems'])}: "
                    f"{text!r}"
                )
            at += record["seconds"] + chunk.pause_after
    head = f"checks: {retried} chunk{'s' if retried != 1 else ''} rendered again"
    head += f", {suspect} still suspect" + (":" if suspect else "")
    return [head, *lines]

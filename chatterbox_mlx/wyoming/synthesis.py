"""One generation, run in a model's thread (a ``server.jobs.Job``): the text through
``generate_stream``, each chunk emitted as 16-bit little-endian PCM bytes as soon as it
is made, stopping at the next chunk once the job is cancelled (the client left)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..audio import formats
from ..server.jobs import DATA, Job
from .catalog import Choice
from .service import Service

WIDTH = 2  # bytes a sample: formats' pcm
CHANNELS = 1


@dataclass(frozen=True)
class Utterance:
    text: str
    choice: Choice


def _voice(service: Service, choice: Choice):
    served = service.served[choice.model]
    if choice.voice is None:
        return served.builtin
    model = served.model
    return service.library.conditionals(
        choice.voice, model.variant.family, lambda clip: model.prepare_voice(str(clip))
    )


def generation_arguments(service: Service, choice: Choice) -> dict:
    """What ``generate_stream`` gets besides the text and the voice."""
    settings = service.settings
    variant = service.served[choice.model].model.variant
    return {
        "chunk_tokens": settings.chunk_tokens,
        "flow_prompt_tokens": settings.flow_prompt_tokens,
        "seed": settings.seed,
        "watermark": settings.watermark,
        "language_id": choice.language,
        "max_new_tokens": min(variant.generation["max_new_tokens"], settings.max_new_tokens),
    }


def run(job: Job, service: Service, utterance: Utterance) -> None:
    """``job.emit(DATA, pcm_bytes)`` per chunk; ``job.result``: the samples made."""
    model = service.served[utterance.choice.model].model
    stream = model.generate_stream(
        utterance.text,
        voice=_voice(service, utterance.choice),
        **generation_arguments(service, utterance.choice),
    )
    encoder = formats.StreamEncoder("pcm", model.sr)
    samples = 0
    try:
        for chunk in stream:
            wav = np.asarray(chunk, dtype=np.float32).reshape(-1)
            samples += wav.size
            job.chunks += 1
            job.emit(DATA, encoder.push(wav))
            if job.cancelled:
                return
    finally:
        stream.close()
    if tail := encoder.finish():
        job.emit(DATA, tail)
    job.result = samples

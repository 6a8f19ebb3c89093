"""The one text-to-speech pipeline every variant runs, and what it composes.

Owns: ``pipeline`` (``TTSPipeline``: a request from text to samples), ``requests``
(``Chunk``/``Request``: what a call resolved at its start), ``threads`` (streams on their
own thread, the compute lock), ``s3gen`` (``S3Gen``: tokens -> mel -> waveform),
``streaming`` (chunked flow + HiFT with cross-fades), ``vc`` (``ChatterboxVC``),
``watermark`` (Perth), ``progress`` and ``checks`` (finite checks between stages).

May import: ``models``, ``voice``, ``text``, ``audio``, ``checkpoints`` (loading),
``variants``, ``params``, ``constants``, ``devices``. Never ``server`` or the CLI; the
public classes in ``chatterbox_mlx.tts`` build on this package.
"""

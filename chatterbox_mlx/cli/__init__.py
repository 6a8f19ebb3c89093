"""The command line: ``chatterbox-mlx`` / ``python -m chatterbox_mlx.generate``.

Owns: ``main`` (the ``generate`` run, the ``voice`` and ``serve`` subcommands),
``arguments`` (parsers and the argument types the server's command line shares) and
``playback`` (live output through sounddevice).

May import everything below it: ``tts``, ``pipeline``, ``audio``, ``text``, and the
``server`` package for ``serve`` (loaded only then: FastAPI is an optional extra).
"""

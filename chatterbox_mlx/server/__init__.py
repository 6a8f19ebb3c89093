"""An OpenAI-compatible speech server: ``chatterbox-mlx serve --model turbo`` (also
``python -m chatterbox_mlx.server``), with a voice library and a web page.

``create_app(models, settings=Settings(...))`` (``chatterbox_mlx.server.app``) builds the
FastAPI application around already-loaded pipelines; ``main(argv)`` is the command line
(``cli``). FastAPI, uvicorn and python-multipart come with the ``server`` extra; importing
this package does not need them.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """The ``serve`` command (``argv`` without the word ``serve``)."""
    from .cli import main as cli_main

    return cli_main(argv)


__all__ = ["main"]

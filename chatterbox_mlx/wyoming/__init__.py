"""A Wyoming protocol server, so that Home Assistant uses chatterbox-mlx as a text-to-speech
service natively: ``chatterbox-mlx wyoming`` (also ``python -m chatterbox_mlx.wyoming``),
or beside the HTTP server in one process with one model: ``chatterbox-mlx serve
--wyoming tcp://0.0.0.0:10200``. See ``docs/wyoming.md``.

Parts: ``catalog`` (the voices offered and how a request picks one), ``service`` (the
models, their queues, the voice library, the settings), ``synthesis`` (one generation in
a model's thread), ``sentences`` (streamed text cut at sentence ends), ``handler`` (one
connection's events), ``server`` (listening), ``discovery`` (mDNS), ``cli`` (the command
line, ``cli.main``). The ``wyoming`` and ``zeroconf`` packages come with the ``wyoming``
extra; importing this package does not need them.
"""

from __future__ import annotations

DEFAULT_URI = "tcp://127.0.0.1:10200"


def check_extra() -> None:
    """ValueError naming the package of the ``wyoming`` extra that is missing."""
    import importlib.util

    for module in ("wyoming", "zeroconf"):
        if importlib.util.find_spec(module) is None:
            raise ValueError(
                f"the Wyoming server needs the `wyoming` extra ({module} is missing): "
                "pip install 'mlx-chatterbox[wyoming]'"
            )


def beside_http(uri: str):
    """For ``chatterbox-mlx serve --wyoming URI``: a ``server.BesideHTTP``, listening on
    ``uri`` already; its ``run(http_server, sockets, state)`` serves both protocols."""
    check_extra()
    from .server import BesideHTTP

    return BesideHTTP(uri)


__all__ = ["DEFAULT_URI", "beside_http", "check_extra"]

"""Checkpoint files: what is read from disk and the hub, and how originals become ours.

Owns: ``layout`` (the converted format: file names, ``config.json``, the ``NETWORKS`` table
and ``load_checkpoint``), ``originals`` (Resemble AI's files per variant, download, sha256
cache), ``torch_pickle`` (reading ``.pt`` files without torch), ``convert`` (the converter
and its command line) and ``hub`` (``resolve``, ``load_components``).

May import: ``models``, ``voice``, ``variants``, ``constants``, ``files``. Imports run
``hub -> convert -> layout, originals, torch_pickle``. Nothing here imports ``pipeline``,
``server`` or the CLI.
"""

"""Audiobooks: a book in (EPUB 2/3, plain text, Markdown), a chaptered audiobook out
(M4B/M4A, MP3, Opus, FLAC, WAV, or a folder of chapters), resumable, with bad chunks
caught and rendered again. ``python -m chatterbox_mlx.book BOOK -o book.m4b``; see
``docs/audiobooks.md``.

Owns: ``sources`` (the ``Book``/``Chapter`` model, plain text and Markdown, chapter
selection), ``epub`` (EPUB's container, package document, spine and table of contents),
``plan`` (chapters -> chunks with their pauses and seeds), ``checks`` (suspect chunks),
``work`` (the work folder), ``render`` (the resumable rendering), ``output`` (the
writers), ``progress`` and ``cli``.

May import: ``tts`` (loading), ``pipeline`` (progress), ``text``, ``audio``, ``files``,
``params``, ``variants``, ``checkpoints`` (the command line's signal handling). Nothing
below imports it; the main command line reaches ``cli`` lazily (``chatterbox-mlx book``).
"""

from .chapters import Book, BookError, Chapter
from .sources import read_book, select_chapters

__all__ = ["Book", "BookError", "Chapter", "read_book", "select_chapters"]

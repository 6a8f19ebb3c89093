"""Audiobooks (``chatterbox_mlx.book``): books built here (EPUB 3 with a nav document and
a cover, EPUB 2 with an NCX, plain text, Markdown) read into chapters; rendered with the
random-weight Nano (Turbo's family) at a few tokens a chunk; the outputs' chapter markers
read back with PyAV; a run interrupted after its first chapter resumed to the same audio;
changed settings and malformed books refused with one line."""

import json
import os
import signal
import struct
import subprocess
import sys
import zipfile
import zlib

from chatterbox_mlx.book import BookError, read_book, select_chapters
from chatterbox_mlx.book.checks import RateReference, level_problems, token_problem
from chatterbox_mlx.book.cli import build_parser, main, run
from chatterbox_mlx.book.work import WorkFolderError
from chatterbox_mlx.cli.main import main as chatterbox_main

import av
import numpy as np
import pytest
import soundfile as sf

from tests.helpers.sources import converted_dir, short_prompt

CHAPTERS = [
    ("Chapter One: The Start", "It began on a quiet morning."),
    ("Chapter Two: The Middle", "Nothing went as planned."),
    ("Chapter Three: The End", "And then it was over."),
]
TITLES = [title for title, _ in CHAPTERS]


def png_bytes(width=2, height=3) -> bytes:
    raw = b"".join(b"\x00" + b"\x80\x20\x20" * width for _ in range(height))

    def chunk(kind, data):
        crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))  # fmt: skip


def xhtml(title: str, body: str) -> str:
    return ('<?xml version="1.0" encoding="utf-8"?>\n<html xmlns="http://www.w3.org/1999/xhtml" '
            f'xmlns:epub="http://www.idpf.org/2007/ops"><head><title>{title}</title></head>'
            f"<body>{body}</body></html>")  # fmt: skip


def write_epub(path, version=3, spine=True, bad_chapter=None):
    """Three chapters, a cover page and image; EPUB 3 with a nav document (and landmarks),
    EPUB 2 with an NCX and a guide. ``bad_chapter``: "malformed" XHTML or "image" (a
    spine item that is not XHTML) for chapter 2."""
    files = {"OEBPS/cover.xhtml": xhtml("Cover", '<div><img src="cover.png" alt="c"/></div>'),
             "OEBPS/cover.png": png_bytes()}  # fmt: skip
    cover_props = ' properties="cover-image"' if version == 3 else ""
    items = ['<item id="cover" href="cover.xhtml" media-type="application/xhtml+xml"/>',
             f'<item id="cover-image" href="cover.png" media-type="image/png"'
             f"{cover_props}/>"]  # fmt: skip
    refs, links = ['<itemref idref="cover"/>'], []
    for i, (title, text) in enumerate(CHAPTERS, 1):
        body = f"<h1>{title}</h1><p>{text}&nbsp;<span>Really.</span></p>"
        page = xhtml(title, body)
        media = "application/xhtml+xml"
        if bad_chapter == "malformed" and i == 2:
            page = "<html><body><p>unclosed"
        if bad_chapter == "image" and i == 2:
            media = "image/png"
        files[f"OEBPS/text/ch{i}.xhtml"] = page
        items.append(f'<item id="c{i}" href="text/ch{i}.xhtml" media-type="{media}"/>')
        refs.append(f'<itemref idref="c{i}"/>')
        links.append((f"text/ch{i}.xhtml", title))
    if version == 3:
        toc = "".join(f'<li><a href="{h}">{t}</a></li>' for h, t in links)
        nav = (f'<nav epub:type="toc"><ol>{toc}</ol></nav><nav epub:type="landmarks"><ol>'
               '<li><a epub:type="cover" href="cover.xhtml">Cover</a></li></ol></nav>')  # fmt: skip
        files["OEBPS/nav.xhtml"] = xhtml("Contents", "<h1>Contents</h1>" + nav)
        items.append('<item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" '
                     'properties="nav"/>')  # fmt: skip
        refs.insert(1, '<itemref idref="nav"/>')
        toc_attr = guide = meta = ""
    else:
        points = "".join(f'<navPoint id="p{i}" playOrder="{i}"><navLabel><text>{t}</text>'
                         f'</navLabel><content src="{h}"/></navPoint>'
                         for i, (h, t) in enumerate(links, 1))  # fmt: skip
        files["OEBPS/toc.ncx"] = ('<?xml version="1.0"?><ncx xmlns="http://www.daisy.org/'
                                  f'z3986/2005/ncx/" version="2005-1"><navMap>{points}'
                                  "</navMap></ncx>")  # fmt: skip
        items.append('<item id="ncx" href="toc.ncx" media-type="application/x-dtbncx+xml"/>')
        toc_attr = ' toc="ncx"'
        guide = '<guide><reference type="cover" title="Cover" href="cover.xhtml"/></guide>'
        meta = '<meta name="cover" content="cover-image"/>'
    spine_xml = f"<spine{toc_attr}>{''.join(refs)}</spine>" if spine else ""
    files["OEBPS/content.opf"] = (
        f'<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" '
        f'version="{version}.0"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/">'
        "<dc:title>A Small Book</dc:title><dc:creator>Ada Writer</dc:creator>"
        f"<dc:language>en</dc:language>{meta}</metadata><manifest>{''.join(items)}"
        f"</manifest>{spine_xml}{guide}</package>"
    )
    container = ('<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:'
                 'opendocument:xmlns:container"><rootfiles><rootfile full-path="OEBPS/'
                 'content.opf" media-type="application/oebps-package+xml"/></rootfiles>'
                 "</container>")  # fmt: skip
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mimetype", "application/epub+zip")
        z.writestr("META-INF/container.xml", container)
        for name, data in files.items():
            z.writestr(name, data)
    return path


# ---- reading books --------------------------------------------------------------------------


@pytest.mark.parametrize("version", [3, 2])
def test_epub_chapters_titles_metadata_and_cover(tmp_path, version):
    book = read_book(write_epub(tmp_path / "b.epub", version))
    assert (book.title, book.author, book.language) == ("A Small Book", "Ada Writer", "en")
    assert book.cover == png_bytes()
    chosen = select_chapters(book, None)
    assert [c.title for c in chosen] == TITLES
    assert chosen[0].paragraphs == [
        TITLES[0],
        "It began on a quiet morning. Really.",
    ]  # &nbsp; read
    front = [c for c in book.chapters if c.front_matter]
    # EPUB 3: the nav document ("Contents") is front matter; the cover page has no text
    assert [c.title for c in front] == (["Contents"] if version == 3 else [])
    assert [c.title for c in select_chapters(book, None, front_matter=True)][-3:] == TITLES


def test_epub_several_chapters_in_one_file_split_at_their_ids(tmp_path):
    path = write_epub(tmp_path / "b.epub")
    with zipfile.ZipFile(path) as z:
        files = {n: z.read(n) for n in z.namelist()}
    body = '<h2 id="a">First</h2><p>One.</p><h2 id="b">Second</h2><p>Two.</p>'
    files["OEBPS/text/ch1.xhtml"] = xhtml("x", body).encode()
    nav = (
        files["OEBPS/nav.xhtml"]
        .decode()
        .replace(
            '<li><a href="text/ch1.xhtml">Chapter One: The Start</a></li>',
            '<li><a href="text/ch1.xhtml#a">First</a></li>'
            '<li><a href="text/ch1.xhtml#b">Second</a></li>',
        )
    )
    files["OEBPS/nav.xhtml"] = nav.encode()
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    chapters = select_chapters(read_book(path), None)
    assert [(c.title, c.paragraphs) for c in chapters[:2]] == [
        ("First", ["First", "One."]),
        ("Second", ["Second", "Two."]),
    ]


def test_plain_text_chapters(tmp_path):
    text = ("The Project Gutenberg eBook\n\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\n\n"
            "A Tale\n\nCHAPTER I.\n\nDown the Hole\n\nAlice was\nbeginning to get tired.\n\n"
            "Part of me wanted to stay.\n\nChapter 2\n\nShe went on.\n\n"
            "*** END OF THE PROJECT GUTENBERG EBOOK X ***\nlicence text\n")  # fmt: skip
    path = tmp_path / "tale.txt"
    path.write_text(text)
    book = read_book(path)
    assert [(c.title, c.front_matter) for c in book.chapters] == [
        ("A Tale", True),
        ("CHAPTER I: Down the Hole", False),
        ("Chapter 2", False),
    ]
    assert book.chapters[1].paragraphs[2:] == [
        "Alice was beginning to get tired.",
        "Part of me wanted to stay.",
    ]
    assert "licence" not in " ".join(book.chapters[-1].paragraphs)
    path.write_text("Intro\n\n== One ==\n\nA.\n\n== Two ==\n\nB.\n")
    book = read_book(path, chapter_regex=r"== .* ==")
    assert [c.title for c in select_chapters(book, None)] == ["== One ==", "== Two =="]
    with pytest.raises(BookError, match="not a valid regex"):
        read_book(path, chapter_regex="(")


def test_markdown_chapters(tmp_path):
    path = tmp_path / "book.md"
    path.write_text("---\nauthor: M. Down\n---\n# The Title\n\nForeword words.\n\n"
                    "## First Steps\n\nSome *emphasis* and a [link](http://x).\n\n```\ncode()\n"
                    "```\n\n- a list item\n\n## Second\n\n![pic](p.png)Last words.\n")  # fmt: skip
    book = read_book(path)
    assert (book.title, book.author) == ("The Title", "M. Down")
    assert [(c.title, c.paragraphs) for c in book.chapters] == [
        ("The Title", ["The Title", "Foreword words."]),  # the title is read first
        ("First Steps", ["First Steps", "Some emphasis and a link.", "a list item"]),
        ("Second", ["Second", "Last words."]),
    ]


def test_chapter_selection(tmp_path):
    path = tmp_path / "b.md"
    path.write_text("".join(f"# C{i}\n\nText {i}.\n\n" for i in range(1, 11)))
    book = read_book(path)
    assert [c.number for c in select_chapters(book, "3-5,9,4")] == [3, 4, 5, 9]
    for spec, message in (("12", "no chapter 12"), ("5-3", "backwards"), ("x", "numbers")):
        with pytest.raises(BookError, match=message):
            select_chapters(book, spec)


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_malformed_books_are_refused_with_one_line(tmp_path, capsys):
    out = str(tmp_path / "out.m4b")
    (tmp_path / "zip.epub").write_bytes(b"plain bytes")
    assert "not a zip archive" in one_line_error(capsys, [str(tmp_path / "zip.epub"), "-o", out])
    no_spine = write_epub(tmp_path / "s.epub", spine=False)
    assert "has no spine" in one_line_error(capsys, [str(no_spine), "-o", out])
    bad = write_epub(tmp_path / "m.epub", bad_chapter="malformed")
    assert "ch2.xhtml is not well-formed XHTML" in one_line_error(capsys, [str(bad), "-o", out])
    image = write_epub(tmp_path / "i.epub", bad_chapter="image")
    assert "ch2.xhtml is image/png, not XHTML" in one_line_error(capsys, [str(image), "-o", out])
    (tmp_path / "b.doc").write_text("x")
    assert "unknown book format" in one_line_error(capsys, [str(tmp_path / "b.doc"), "-o", out])
    good = str(write_epub(tmp_path / "g.epub"))
    assert "unknown output format .xyz" in one_line_error(capsys, [good, "-o", "a.xyz"])
    assert not list(tmp_path.glob("*.work"))


def test_list_prints_the_chapters_through_the_main_command(tmp_path, capsys):
    path = write_epub(tmp_path / "b.epub")
    assert chatterbox_main(["book", str(path), "--list", "--chapters", "2-3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "A Small Book, by Ada Writer: 4 chapters"
    rows = [line.split(None, 3) for line in lines[2:6]]
    assert [r[0] for r in rows] == ["1", "2", "3", "4"]
    assert rows[0][3] == "Contents  (front matter, skipped)"
    assert rows[1][3] == TITLES[0] and rows[3][3] == f"{TITLES[2]}  (skipped)"
    assert rows[1][1] == f"{len(TITLES[0]) + len('It began on a quiet morning. Really.')}"
    assert lines[-1].startswith("chosen: 2 chapters")


# ---- checks ----------------------------------------------------------------------------------


def test_the_checks_catch_silence_clipping_runaway_tokens_and_odd_durations():
    rng = np.random.default_rng(0)
    speech = (0.2 * rng.standard_normal(24000)).astype(np.float32)
    assert level_problems(speech) == []
    assert level_problems(np.zeros(24000, np.float32)) == ["silent"]
    assert level_problems(np.clip(speech * 20, -0.99, 0.99))[0].startswith("clipped")
    assert token_problem(100, 100) is not None and token_problem(99, 100) is None
    assert token_problem(None, 100) is None
    reference = RateReference()
    for i in range(12):
        reference.add(3.0 + 0.1 * i, 45)  # about 15 characters a second
    assert reference.problem(3.2, 45) is None
    assert "too long" in reference.problem(20.0, 45)
    assert "too short" in reference.problem(0.5, 45)
    assert reference.problem(20.0, 10) is None  # too short a text to judge


# ---- rendering --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nano():
    from chatterbox_mlx.tts import load_pipeline

    return short_prompt(load_pipeline(str(converted_dir("nano"))))


def book_args(book, output, *extra):
    return build_parser().parse_args(
        [
            str(book),
            "-o",
            str(output),
            "--model",
            str(converted_dir("nano")),
            "--max-new-tokens",
            "3",
            "--seed",
            "7",
            "--no-watermark",
            "--retries",
            "0",
            *extra,
        ]  # fmt: skip
    )


class Stop(Exception):
    pass


def chapter_marks(path):
    with av.open(str(path)) as container:
        return [(float(c["start"] * c["time_base"]), c["metadata"]["title"])
                for c in container.chapters()], dict(container.metadata)  # fmt: skip


@pytest.mark.slow
def test_outputs_carry_chapter_markers_title_author_and_cover(nano, tmp_path):
    book = write_epub(tmp_path / "b.epub")
    work = tmp_path / "work"
    assert run(book_args(book, tmp_path / "b.m4b", "--work-dir", str(work), "--keep-work"),
               model=nano) == 0  # fmt: skip
    m4b_starts = [start for start, _ in chapter_marks(tmp_path / "b.m4b")[0]]
    for name in ("b.m4b", "b.mp3", "b.opus", "b.flac"):  # the work folder is reused
        if name != "b.m4b":
            args = book_args(book, tmp_path / name, "--work-dir", str(work), "--keep-work")
            assert run(args, model=nano) == 0
        marks, tags = chapter_marks(tmp_path / name)
        assert [title for _, title in marks] == TITLES, name
        starts = [start for start, _ in marks]
        assert starts[0] == 0 and starts[1] > 2.0 and starts[2] > starts[1] + 2.0, name
        if name != "b.opus":  # Ogg's tags are the stream's
            assert tags["title"] == "A Small Book" and tags["artist"] == "Ada Writer", name
        with av.open(str(tmp_path / name)) as container:  # the EPUB's cover
            pictures = av.stream.Disposition.attached_pic
            covers = [s for s in container.streams if s.disposition & pictures]
            assert len(covers) == 1, name
    args = book_args(book, tmp_path / "folder", "--work-dir", str(work), "--format", "wav")
    assert run(args, model=nano) == 0
    playlist = (tmp_path / "folder" / "playlist.m3u").read_text().splitlines()
    files = [line for line in playlist if line and not line.startswith("#")]
    assert files == [f"{n:02d} {t.replace(':', '')}.wav" for n, t in enumerate(TITLES, 1)]
    lengths = [sf.info(tmp_path / "folder" / f).frames for f in files]
    for n in (0, 1):  # each chapter's file without the 2 s chapter pause after it
        expected = (m4b_starts[n + 1] - m4b_starts[n] - 2.0) * 24000
        assert abs(lengths[n] - expected) < 30, (lengths, m4b_starts)
    assert not work.exists()  # removed after success without --keep-work


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_same_audio(nano, tmp_path, capsys):
    book = write_epub(tmp_path / "b.epub")
    whole = tmp_path / "whole.wav"
    assert run(book_args(book, whole), model=nano) == 0
    assert not (tmp_path / "whole.wav.work").exists()

    resumed = tmp_path / "resumed.wav"
    finished = []

    def stop_after_first_chapter(chunk, record):
        finished.append(chunk.chapter)
        if len(finished) == 2:  # chapter 2 (the first spoken) has two chunks
            raise Stop()

    with pytest.raises(Stop):
        run(book_args(book, resumed), model=nano, on_chunk=stop_after_first_chapter)
    assert capsys.readouterr().err.strip().endswith("run the same command again to resume")
    assert not resumed.exists() and finished == [2, 2]

    changed = book_args(book, resumed, "--speed", "1.25")
    with pytest.raises(WorkFolderError, match=r"speed 1\.0 -> 1\.25.*--restart"):
        run(changed, model=nano)
    with pytest.raises(WorkFolderError, match="seed 7 -> 8"):
        run(book_args(book, resumed, "--seed", "8"), model=nano)
    other = write_epub(tmp_path / "other.epub", version=2)
    with pytest.raises(WorkFolderError, match="the book changed"):
        run(book_args(other, resumed, "--work-dir", str(tmp_path / "resumed.wav.work")),
            model=nano)  # fmt: skip

    assert run(book_args(book, resumed), model=nano) == 0
    assert "resuming: 1 of 3 chapters done (2 of 6 chunks)" in capsys.readouterr().err
    a, sr_a = sf.read(whole, dtype="int16")
    b, sr_b = sf.read(resumed, dtype="int16")
    assert sr_a == sr_b == 24000 and len(a) > 3 * 24000
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_batched_rendering_speaks_as_chunk_by_chunk(nano, tmp_path):
    """The default (T3 decoding several chunks at once) and ``--batch-size 1`` make the
    same book: each chunk's row speaks what it speaks alone."""
    book = write_epub(tmp_path / "b.epub")
    outputs = []
    for size in ("4", "1"):
        out = tmp_path / f"b{size}.wav"
        assert run(book_args(book, out, "--batch-size", size), model=nano) == 0
        outputs.append(sf.read(out, dtype="int16")[0])
    assert len(outputs[0]) > 3 * 24000
    np.testing.assert_array_equal(*outputs)


@pytest.mark.slow
def test_suspect_chunks_are_rendered_again_with_other_seeds(nano, tmp_path, capsys):
    book = write_epub(tmp_path / "b.epub")
    work = tmp_path / "work"
    args = book_args(book, tmp_path / "b.flac", "--chapters", "2", "--retries", "1",
                     "--work-dir", str(work), "--keep-work")  # fmt: skip
    assert run(args, model=nano) == 0
    err = capsys.readouterr().err
    # three tokens never reach T3's stop token: every attempt is suspect
    assert "checks: 2 chunks rendered again, 2 still suspect:" in err
    assert "chapter 2 (Chapter One: The Start), chunk 2 of 2" in err
    assert "max_new_tokens (3) without its stop token" in err
    for index in (0, 1):
        record = json.loads((work / "0002" / f"{index:04d}.json").read_text())
        seeds = [t["seed"] for t in record["tries"]]
        assert len(seeds) == 2 and seeds[0] != seeds[1] and record["seed"] in seeds
        assert (
            record["problems"]
            and sf.info(work / "0002" / f"{index:04d}.flac").frames == (record["samples"])
        )


@pytest.mark.slow
def test_sigterm_then_the_same_command_resumes(tmp_path):
    book = tmp_path / "b.md"
    book.write_text("# Alpha\n\n# Beta\n\n# Gamma\n")
    out = tmp_path / "b.mp3"
    command = [sys.executable, "-m", "chatterbox_mlx.book", str(book), "-o", str(out),
               "--model", str(converted_dir("nano")), "--max-new-tokens", "2", "--seed", "3",
               "--no-watermark", "--retries", "0"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.getcwd()}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, env=env, text=True)
    lines = []
    for line in process.stderr:  # not a terminal: one plain line per chapter
        lines.append(line)
        if line.startswith("chapters 1/3"):
            process.send_signal(signal.SIGTERM)
            break
    rest = process.communicate(timeout=600)[1]
    assert process.returncode == 143, "".join(lines) + rest
    assert "terminated (SIGTERM)" in rest and not out.exists()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "resuming: 1 of 3 chapters done" in done.stderr, done.stderr
    assert [title for _, title in chapter_marks(out)[0]] == ["Alpha", "Beta", "Gamma"]
    assert not (tmp_path / "b.mp3.work").exists()


def test_work_folder_keeps_its_seed_locks_and_restarts(tmp_path):
    from chatterbox_mlx.book.work import WorkFolder

    settings = {"model": "nano", "speed": 1.0}
    first = WorkFolder(tmp_path / "w", 24000)
    assert first.open("abc", settings, seed=None, new_seed=42) == 42
    with pytest.raises(WorkFolderError, match="another run is using"):
        WorkFolder(tmp_path / "w", 24000).open("abc", settings, None, 1)
    wav = np.linspace(-0.5, 0.5, 2400, dtype=np.float32)
    first.save(2, 0, wav, {"text": "x"})
    (tmp_path / "w" / "0002" / ".0001.flac.abc.tmp").write_bytes(b"half")  # a killed write
    first.close()
    again = WorkFolder(tmp_path / "w", 24000)
    assert again.open("abc", settings, seed=None, new_seed=7) == 42  # the folder's seed
    again.remove_strays()
    assert sorted(p.name for p in (tmp_path / "w" / "0002").iterdir()) == ["0000.flac", "0000.json"]
    assert again.load_record(2, 0) == {"text": "x"} and again.load_record(2, 1) is None
    np.testing.assert_allclose(again.read_audio(2, 0), wav, atol=1 / 32768)
    again.close()
    restarted = WorkFolder(tmp_path / "w", 24000)
    assert restarted.open("abc", {**settings, "speed": 1.5}, 5, 9, restart=True) == 5
    assert restarted.load_record(2, 0) is None
    restarted.remove()
    assert not (tmp_path / "w").exists()

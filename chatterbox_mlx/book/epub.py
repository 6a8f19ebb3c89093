"""EPUB 2 and 3 -> ``Book``, with the standard library only.

``META-INF/container.xml`` names the package document (OPF): its metadata (title,
creators, language, the cover image), manifest and spine. The spine gives the reading
order; the table of contents (the EPUB 3 navigation document, else the EPUB 2 NCX) gives
chapter titles and where chapters start: a file, or an element's id inside one (several
chapters in one file are split there). A spine file the table of contents does not name
continues the chapter before it (a chapter split over files), or, before the first named
chapter, is a chapter of its own (a title page, a dedication).

Front matter (the cover page, the table of contents, the copyright page, the title page)
is recognised from the EPUB 3 landmarks and ``epub:type``, the EPUB 2 guide, the
navigation document itself, and titles such as "Contents"; ``select_chapters`` leaves it
out unless asked. Paragraphs come from block elements; scripts, styles, ruby readings,
footnote references and page-break markers are not read.
"""

from __future__ import annotations

import html.entities
import io
import posixpath
import re
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from .chapters import Book, BookError, Chapter

XHTML_TYPES = ("application/xhtml+xml", "text/html")
COVER_TYPES = ("image/jpeg", "image/png")
FRONT_TYPES = {
    "cover",
    "toc",
    "copyright-page",
    "copyright",
    "titlepage",
    "title-page",
    "halftitlepage",
    "loi",
    "lot",
    "imprint",
    "colophon",
}
FRONT_TITLES = re.compile(
    r"(cover|(table of )?contents|copyright( page)?|title page|imprint|colophon)", re.I
)
BLOCKS = {
    "p",
    "div",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "li",
    "blockquote",
    "pre",
    "tr",
    "dt",
    "dd",
    "section",
    "article",
    "header",
    "footer",
    "figcaption",
    "caption",
    "br",
    "hr",
    "td",
    "th",
    "aside",
    "table",
    "ul",
    "ol",
    "dl",
    "figure",
    "body",
}
SKIPPED = {"script", "style", "head", "rt", "rp", "svg", "math", "img", "nav"}
SKIPPED_TYPES = {
    "noteref",
    "footnote",
    "endnote",
    "rearnote",
    "pagebreak",
    "footnotes",
    "endnotes",
    "rearnotes",
}
EPUB_TYPE = "{http://www.idpf.org/2007/ops}type"
_ENTITY = re.compile(r"&([A-Za-z][A-Za-z0-9]*);")
_XML_ENTITIES = {"amp", "lt", "gt", "quot", "apos"}


@dataclass
class _Item:
    href: str  # the path inside the zip
    media_type: str
    properties: set[str] = field(default_factory=set)


def _local(tag) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _children(element, name: str):
    return [e for e in element.iter() if _local(e.tag) == name]


def _resolve(base_file: str, href: str) -> tuple[str, str | None]:
    """(zip path, fragment) of ``href`` written in ``base_file``."""
    target, _, fragment = href.partition("#")
    path = posixpath.normpath(posixpath.join(posixpath.dirname(base_file), unquote(target)))
    return (base_file if not target else path), (unquote(fragment) or None)


class _Epub:
    def __init__(self, path: Path, raw: bytes):
        self.path = path
        try:
            self.zip = zipfile.ZipFile(io.BytesIO(raw))
        except zipfile.BadZipFile:
            raise BookError(
                f"{path} is not an EPUB (not a zip archive); give an .epub file as made by "
                "an e-book tool, or a .txt or .md file"
            ) from None

    def read(self, name: str) -> bytes:
        try:
            return self.zip.read(name)
        except KeyError:
            raise BookError(f"{self.path}: {name} is missing from the EPUB") from None
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise BookError(f"{self.path}: cannot read {name} from the EPUB: {err}") from None

    def xml(self, name: str, what: str) -> ET.Element:
        text = self.read(name).decode("utf-8", errors="replace")
        text = _ENTITY.sub(_named_entity, text)
        try:
            return ET.fromstring(text.encode("utf-8"))
        except ET.ParseError as err:
            raise BookError(
                f"{self.path}: {name} is not well-formed {what} ({err}); repair the EPUB "
                "(e.g. with Calibre) or convert it to text"
            ) from None


def _named_entity(match: re.Match) -> str:
    name = match.group(1)
    if name in _XML_ENTITIES:
        return match.group(0)
    char = html.entities.html5.get(name + ";")
    return char if char is not None and char not in "<&" else match.group(0)


def read_epub(path: Path, raw: bytes, digest: str) -> Book:
    epub = _Epub(path, raw)
    container = epub.xml("META-INF/container.xml", "XML")
    rootfiles = [e.get("full-path") for e in _children(container, "rootfile") if e.get("full-path")]
    if not rootfiles:
        raise BookError(f"{path}: META-INF/container.xml names no package document (rootfile)")
    opf_name = rootfiles[0]
    opf = epub.xml(opf_name, "XML (the package document)")
    manifest = _manifest(opf, opf_name)
    spine = _spine(opf, manifest, path)
    toc = _table_of_contents(epub, opf, manifest)
    front = _front_matter_files(epub, opf, opf_name, manifest)
    chapters = _chapters(epub, spine, toc, front)
    metadata = _metadata(opf)
    return Book(
        title=metadata.get("title") or path.stem,
        author=metadata.get("creator"),
        chapters=chapters,
        sha256=digest,
        language=metadata.get("language"),
        cover=_cover(epub, opf, manifest),
        metadata=metadata,
    )


# ---- package document -------------------------------------------------------------------


def _manifest(opf: ET.Element, opf_name: str) -> dict[str, _Item]:
    items = {}
    for item in _children(opf, "item"):
        if item.get("id") and item.get("href"):
            href, _ = _resolve(opf_name, item.get("href"))
            items[item.get("id")] = _Item(
                href,
                (item.get("media-type") or "").lower(),
                set((item.get("properties") or "").split()),
            )
    return items


def _spine(opf: ET.Element, manifest: dict[str, _Item], path: Path) -> list[_Item]:
    spines = _children(opf, "spine")
    refs = _children(spines[0], "itemref") if spines else []
    if not refs:
        raise BookError(f"{path}: the EPUB has no spine (no reading order); repair the EPUB")
    items = []
    for ref in refs:
        item = manifest.get(ref.get("idref"))
        if item is None:
            raise BookError(f"{path}: the spine names {ref.get('idref')!r}, not in the manifest")
        if ref.get("linear", "yes") == "no":
            continue
        if item.media_type not in XHTML_TYPES:
            raise BookError(
                f"{path}: the spine's {item.href} is {item.media_type or 'of no media type'}, "
                "not XHTML; only XHTML chapters can be read"
            )
        items.append(item)
    return items


def _metadata(opf: ET.Element) -> dict:
    found: dict = {}
    meta = _children(opf, "metadata")
    for element in meta[0].iter() if meta else ():
        name = _local(element.tag)
        text = " ".join((element.text or "").split())
        if name in ("title", "language", "publisher", "date", "description") and text:
            found.setdefault(name, text)
        elif name == "creator" and text:
            found["creator"] = f"{found['creator']}, {text}" if "creator" in found else text
    return found


def _cover(epub: _Epub, opf: ET.Element, manifest: dict[str, _Item]) -> bytes | None:
    covers = [i for i in manifest.values() if "cover-image" in i.properties]
    for meta in _children(opf, "meta"):
        if meta.get("name") == "cover" and meta.get("content") in manifest:
            covers.append(manifest[meta.get("content")])
    for item in covers:
        if item.media_type in COVER_TYPES:
            return epub.read(item.href)
    return None


# ---- table of contents ------------------------------------------------------------------


def _table_of_contents(epub: _Epub, opf, manifest) -> list[tuple[str, str | None, str]]:
    """(file, fragment or None, title) per entry, in the table's order, every level."""
    nav = next((i for i in manifest.values() if "nav" in i.properties), None)
    if nav is not None:
        entries = _nav_entries(epub, nav.href, "toc")
        if entries:
            return entries
    spines = _children(opf, "spine")
    ncx = manifest.get(spines[0].get("toc")) if spines and spines[0].get("toc") else None
    ncx = ncx or next((i for i in manifest.values() if i.media_type.endswith("ncx+xml")), None)
    if ncx is None:
        return []
    root = epub.xml(ncx.href, "XML (the NCX table of contents)")
    entries = []
    for point in _children(root, "navPoint"):
        labels = [e for e in point if _local(e.tag) == "navLabel"]
        content = [e for e in point if _local(e.tag) == "content"]
        if labels and content and content[0].get("src"):
            title = " ".join("".join(labels[0].itertext()).split())
            entries.append((*_resolve(ncx.href, content[0].get("src")), title))
    return entries


def _nav_entries(epub: _Epub, nav_href: str, kind: str) -> list[tuple[str, str | None, str]]:
    root = epub.xml(nav_href, "XHTML (the navigation document)")
    entries = []
    for nav in _children(root, "nav"):
        if kind not in (nav.get(EPUB_TYPE) or "").split():
            continue
        for link in _children(nav, "a"):
            if not link.get("href"):
                continue
            file, fragment = _resolve(nav_href, link.get("href"))
            if kind == "landmarks":
                label = link.get(EPUB_TYPE) or ""
            else:
                label = " ".join("".join(link.itertext()).split())
            entries.append((file, fragment, label))
    return entries


def _front_matter_files(epub: _Epub, opf, opf_name: str, manifest) -> set[str]:
    files = {i.href for i in manifest.values() if "nav" in i.properties}
    nav = next((i for i in manifest.values() if "nav" in i.properties), None)
    if nav is not None:
        for file, _, kind in _nav_entries(epub, nav.href, "landmarks"):
            if set(kind.split()) & FRONT_TYPES:
                files.add(file)
    for reference in _children(opf, "reference"):
        if reference.get("href") and (reference.get("type") or "").lower() in FRONT_TYPES:
            files.add(_resolve(opf_name, reference.get("href"))[0])
    return files


# ---- chapters ---------------------------------------------------------------------------


def _chapters(epub: _Epub, spine: list[_Item], toc, front_files: set[str]) -> list[Chapter]:
    starts: dict[str, dict[str | None, str]] = {}
    for file, fragment, title in toc:
        starts.setdefault(file, {}).setdefault(fragment, title)
    chapters: list[Chapter] = []
    seen_named = False
    for item in spine:
        root = epub.xml(item.href, "XHTML")
        named = starts.get(item.href, {})
        body_type = set((_first(root, "body").get(EPUB_TYPE) or "").split())
        for title, paragraphs, heading in _segments(root, named):
            is_front = item.href in front_files or bool(body_type & FRONT_TYPES)
            if title is None and seen_named and chapters and not is_front:
                chapters[-1].paragraphs.extend(paragraphs)
                continue
            if title is not None:
                seen_named = True
            title = title or heading or _document_title(root) or Path(item.href).stem
            is_front = is_front or FRONT_TITLES.fullmatch(title.strip()) is not None
            chapters.append(Chapter(0, title, paragraphs, front_matter=is_front))
    return chapters


def _first(root: ET.Element, name: str) -> ET.Element:
    found = _children(root, name)
    return found[0] if found else root


def _document_title(root: ET.Element) -> str | None:
    titles = _children(_first(root, "head"), "title")
    text = " ".join("".join(titles[0].itertext()).split()) if titles else ""
    return text or None


def _segments(root: ET.Element, named: dict[str | None, str]):
    """(title from the table of contents or None, paragraphs, first heading) per part of
    one file, split where the table of contents points at an element's id."""
    segments: list[list] = [[named.get(None), [], None]]
    buffer: list[str] = []

    def flush() -> None:
        text = " ".join("".join(buffer).split())
        buffer.clear()
        if text:
            segments[-1][1].append(text)

    def walk(element: ET.Element) -> None:
        name = _local(element.tag)
        if element.get("id") in named and element.get("id") is not None:
            flush()
            if segments[-1][1] or segments[-1][0] is not None:
                segments.append([None, [], None])
            segments[-1][0] = named[element.get("id")]
        skipped = name in SKIPPED or set((element.get(EPUB_TYPE) or "").split()) & SKIPPED_TYPES
        if not skipped:
            block = name in BLOCKS
            if block:
                flush()
            buffer.append(element.text or "")
            for child in element:
                walk(child)
                buffer.append(child.tail or "")
            if block:
                before = len(segments[-1][1])
                flush()
                if name in ("h1", "h2", "h3") and segments[-1][2] is None:
                    if len(segments[-1][1]) > before:
                        segments[-1][2] = segments[-1][1][-1]

    walk(_first(root, "body"))
    flush()
    return [tuple(s) for s in segments if s[1]]

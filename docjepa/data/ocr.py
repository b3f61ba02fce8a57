"""Words, boxes and layout of document pages: the schema, and readers for PDFs and scans.

Every producer of training text (PDF text layers, Tesseract, the synthetic generator)
emits the same `Document`, serialised as versioned JSON (docs/ocr_schema.md). Coordinates
are always pixels of the page image that travels with the document, origin top-left.
The schema and its two readers stay in one file (about 600 lines): the readers' output is
checked against the schema's own invariants, and splitting them would put both halves of that
contract in different places.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
import subprocess
import unicodedata
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
LAYOUT_CLASSES = ("title", "heading", "paragraph", "list", "table", "figure", "caption", "header", "footer", "page_number")
# Boxes may poke out of the page by rounding; more than this is a producer bug.
_BOX_SLACK = 1.0

Box = tuple[float, float, float, float]


class OcrSchemaError(ValueError):
    """A document JSON that does not match the schema; the message starts with the field path."""


class BadDocument(Exception):
    """A source file that cannot become a training document; `reason` is a short code for counting."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Word:
    text: str
    box: Box  # x0, y0, x1, y1 in page pixels
    conf: float = 1.0  # 0..1
    block: int = 0
    line: int = 0
    order: int = 0  # reading-order index within the page


@dataclass(frozen=True)
class LayoutElement:
    cls: str  # one of LAYOUT_CLASSES
    box: Box


# Named-entity types of Fact.entity (the stage-2 NER task's labels, docjepa.data.tasks).
ENTITY_TYPES = ("PERSON", "ORG", "DATE", "MONEY", "PHONE", "EMAIL")


@dataclass(frozen=True)
class Fact:
    """A value the synthetic generator placed on page `page` (0-based): a QA answer when
    `question` is set, a named entity when `entity` (one of ENTITY_TYPES) is set, or both."""

    text: str
    page: int
    question: str = ""
    entity: str = ""

    def __post_init__(self) -> None:
        if self.entity and self.entity not in ENTITY_TYPES:
            raise ValueError(f"Fact: entity type {self.entity!r} is not one of {', '.join(ENTITY_TYPES)}")


@dataclass
class Page:
    width: int
    height: int
    dpi: float
    words: list[Word]
    layout: list[LayoutElement] = field(default_factory=list)


@dataclass
class Document:
    doc_id: str
    source: str
    pages: list[Page]
    category: str | None = None
    schema_version: int = SCHEMA_VERSION
    # Pages in the source file before `max_pages` cut it (None: not cut, or unknown). Not part of
    # the schema: it lets prepare report truncation in its summary instead of logging per document.
    source_pages: int | None = field(default=None, compare=False)
    # What the synthetic generator placed (values that questions ask about, named entities), with
    # their pages; None where that truth is unknown. Not part of the schema: prepare turns it into
    # the stage-2 task pairs (docjepa.data.tasks) stored beside the OCR JSON.
    facts: list[Fact] | None = field(default=None, compare=False)

    def to_json(self) -> str:
        """Compact JSON; words are stored column-wise, which is about 3x smaller than one object per word."""
        obj = {"schema_version": self.schema_version, "doc_id": self.doc_id, "source": self.source,
               "category": self.category, "pages": [_page_obj(p) for p in self.pages]}
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)

    def check(self) -> None:
        """Raise OcrSchemaError unless this document reads back as written (prepare runs it
        before storing a record, so no reader ever meets a record that fails the schema)."""
        _parse_document(json.loads(self.to_json()))

    @classmethod
    def from_json(cls, s: str | bytes) -> Document:
        """Parse and validate; any mismatch raises OcrSchemaError naming the field path."""
        try:
            obj = json.loads(s)
        except ValueError as e:
            raise OcrSchemaError(f"<root>: not valid JSON ({e})") from None
        return _parse_document(obj)

    def scaled(self, factors: Sequence[float], sizes: Sequence[tuple[int, int]] | None = None) -> Document:
        """Rescale page i by factors[i], to follow its resized image.

        `sizes` ((width, height) per page) sets the page sizes exactly, for images that were
        also padded after resizing (patchify.resize_to_width pads short pages).
        """
        if len(factors) != len(self.pages) or (sizes is not None and len(sizes) != len(self.pages)):
            raise ValueError(f"scaled: got {len(factors)} factors for {len(self.pages)} pages")
        pages = []
        for i, (p, f) in enumerate(zip(self.pages, factors)):
            if not f > 0:
                raise ValueError(f"scaled: factors[{i}]={f} must be > 0")
            w, h = sizes[i] if sizes is not None else (max(1, round(p.width * f)), max(1, round(p.height * f)))
            pages.append(Page(
                width=int(w), height=int(h), dpi=round(p.dpi * f, 3),
                words=[dataclasses.replace(wd, box=_scale_box(wd.box, f)) for wd in p.words],
                layout=[dataclasses.replace(e, box=_scale_box(e.box, f)) for e in p.layout]))
        return dataclasses.replace(self, pages=pages)

    def with_pages(self, keep: Sequence[int]) -> Document:
        """The document reduced to pages `keep` (source indices, in order); facts follow their
        pages and are dropped with them."""
        new = {old: i for i, old in enumerate(keep)}
        facts = None if self.facts is None else [
            dataclasses.replace(f, page=new[f.page]) for f in self.facts if f.page in new]
        return dataclasses.replace(self, pages=[self.pages[i] for i in keep], facts=facts)

    def page_text(self, i: int) -> str:
        """All words of page i in reading order, space-joined (the page's alignment target)."""
        return " ".join(w.text for w in sorted(self.pages[i].words, key=lambda w: w.order))


def _page_obj(p: Page) -> dict[str, Any]:
    return {
        "width": p.width, "height": p.height, "dpi": p.dpi,
        "words": {
            "text": [w.text for w in p.words],
            "box": [list(w.box) for w in p.words],
            "conf": [w.conf for w in p.words],
            "block": [w.block for w in p.words],
            "line": [w.line for w in p.words],
            "order": [w.order for w in p.words],
        },
        "layout": [{"cls": e.cls, "box": list(e.box)} for e in p.layout],
    }


def check_page(page: Page, path: str = "") -> None:
    """Raise OcrSchemaError (message starting with `path`) unless `page` reads back as written,
    e.g. when a word box lies outside the page: lets prepare drop one bad page, not the document."""
    _parse_page(json.loads(json.dumps(_page_obj(page))), path)


def _scale_box(box: Box, f: float) -> Box:
    return tuple(round(v * f, 2) for v in box)  # type: ignore[return-value]


# ----------------------------------------------------------------------------- validation


def _fail(path: str, msg: str) -> OcrSchemaError:
    return OcrSchemaError(f"{path}: {msg}")


def _get(obj: dict, key: str, path: str, types: type | tuple[type, ...], *, optional: bool = False) -> Any:
    if key not in obj:
        if optional:
            return None
        raise _fail(f"{path}{key}", "missing")
    v = obj[key]
    if v is None and optional:
        return None
    # bool is an int subclass; it is never a valid number here.
    if isinstance(v, bool) or not isinstance(v, types):
        names = types.__name__ if isinstance(types, type) else "/".join(t.__name__ for t in types)
        raise _fail(f"{path}{key}", f"expected {names}, got {type(v).__name__} {v!r:.40}")
    return v


def _check_keys(obj: Any, allowed: set[str], path: str) -> None:
    if not isinstance(obj, dict):
        raise _fail(path or "<root>", f"expected an object, got {type(obj).__name__}")
    extra = sorted(set(obj) - allowed)
    if extra:
        raise _fail(f"{path}{extra[0]}", "unknown field (a newer schema_version?)")


def _box(v: Any, path: str, width: float, height: float) -> Box:
    if not isinstance(v, list) or len(v) != 4 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        raise _fail(path, f"expected [x0, y0, x1, y1] numbers, got {v!r:.60}")
    x0, y0, x1, y1 = (float(x) for x in v)
    if not all(math.isfinite(x) for x in (x0, y0, x1, y1)):
        raise _fail(path, f"non-finite coordinate in {v}")
    if x1 < x0 or y1 < y0:
        raise _fail(path, f"x1 < x0 or y1 < y0 in {v}")
    if x0 < -_BOX_SLACK or y0 < -_BOX_SLACK or x1 > width + _BOX_SLACK or y1 > height + _BOX_SLACK:
        raise _fail(path, f"{v} lies outside the {width}x{height} page")
    return (x0, y0, x1, y1)


def _parse_document(obj: Any) -> Document:
    _check_keys(obj, {"schema_version", "doc_id", "source", "category", "pages"}, "")
    version = _get(obj, "schema_version", "", int)
    if version != SCHEMA_VERSION:
        raise _fail("schema_version", f"unsupported version {version} (this reader knows {SCHEMA_VERSION})")
    doc_id = _get(obj, "doc_id", "", str)
    if not doc_id:
        raise _fail("doc_id", "empty")
    source = _get(obj, "source", "", str)
    category = _get(obj, "category", "", str, optional=True)
    pages = [_parse_page(p, f"pages[{i}].") for i, p in enumerate(_get(obj, "pages", "", list))]
    return Document(doc_id=doc_id, source=source, pages=pages, category=category, schema_version=version)


def _parse_page(obj: Any, path: str) -> Page:
    _check_keys(obj, {"width", "height", "dpi", "words", "layout"}, path)
    width, height = _get(obj, "width", path, int), _get(obj, "height", path, int)
    if width <= 0 or height <= 0:
        raise _fail(f"{path}width", f"page size must be positive, got {width}x{height}")
    dpi = float(_get(obj, "dpi", path, (int, float)))
    if not (math.isfinite(dpi) and dpi >= 0):
        raise _fail(f"{path}dpi", f"must be >= 0, got {dpi}")
    cols = _get(obj, "words", path, dict)
    _check_keys(cols, {"text", "box", "conf", "block", "line", "order"}, f"{path}words.")
    lists = {k: _get(cols, k, f"{path}words.", list) for k in ("text", "box", "conf", "block", "line", "order")}
    n = len(lists["text"])
    for k, v in lists.items():
        if len(v) != n:
            raise _fail(f"{path}words.{k}", f"has {len(v)} entries, words.text has {n}")
    words = []
    for j in range(n):
        wp = f"{path}words[{j}]."
        text = lists["text"][j]
        if not isinstance(text, str) or not text.strip():
            raise _fail(f"{wp}text", f"expected a non-empty string, got {text!r:.40}")
        conf = lists["conf"][j]
        if isinstance(conf, bool) or not isinstance(conf, (int, float)) or not 0.0 <= conf <= 1.0:
            raise _fail(f"{wp}conf", f"expected a number in [0, 1], got {conf!r}")
        ints = []
        for k in ("block", "line", "order"):
            v = lists[k][j]
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise _fail(f"{wp}{k}", f"expected an int >= 0, got {v!r}")
            ints.append(v)
        words.append(Word(text, _box(lists["box"][j], f"{wp}box", width, height), float(conf), *ints))
    layout = parse_layout(_get(obj, "layout", path, list, optional=True) or [], path, width, height)
    return Page(width=width, height=height, dpi=dpi, words=words, layout=layout)


def parse_layout(entries: list[Any], path: str, width: float, height: float) -> list[LayoutElement]:
    """A page's `layout` list ({"cls", "box"} objects) within a width x height page; OcrSchemaError
    naming `path`layout[j]... Shared by the OCR JSON and the layout sidecars of a source directory."""
    layout = []
    for j, e in enumerate(entries):
        ep = f"{path}layout[{j}]."
        _check_keys(e, {"cls", "box"}, ep)
        c = _get(e, "cls", ep, str)
        if c not in LAYOUT_CLASSES:
            raise _fail(f"{ep}cls", f"{c!r} is not one of {', '.join(LAYOUT_CLASSES)}")
        layout.append(LayoutElement(c, _box(e.get("box"), f"{ep}box", width, height)))
    return layout


# ----------------------------------------------------------------------------- layout sidecars


def with_layout_sidecar(doc: Document, path: Path, scale: float) -> Document:
    """`doc` with the layout boxes of the sidecar JSON `path`: {"pages": [{"layout": [{"cls", "box"},
    ...]}, ...]}, one entry per page of the source file, boxes in the file's own units (PDF points,
    image pixels; origin top-left of the page as displayed), which `scale` maps to page pixels.
    Real documents have no layout truth otherwise; a malformed sidecar is BadDocument naming it,
    since a document with half its labels would mislead the layout probe."""
    try:
        try:
            obj = json.loads(path.read_bytes())
        except ValueError as e:
            raise _fail("<root>", f"not valid JSON ({e})") from None
        _check_keys(obj, {"pages"}, "")
        entries = _get(obj, "pages", "", list)
        if len(entries) != (doc.source_pages or len(doc.pages)):
            raise _fail("pages", f"has {len(entries)} entries, the document {doc.source_pages or len(doc.pages)} pages")
        pages = []
        for i, page in enumerate(doc.pages):
            _check_keys(entries[i], {"layout"}, f"pages[{i}].")
            raw = _get(entries[i], "layout", f"pages[{i}].", list)
            layout = parse_layout(raw, f"pages[{i}].", page.width / scale, page.height / scale)
            pages.append(dataclasses.replace(page, layout=[
                dataclasses.replace(e, box=_scale_box(e.box, scale)) for e in layout]))
    except OSError as e:
        raise BadDocument("bad_layout_sidecar", f"{path}: {e.strerror or e}") from None
    except OcrSchemaError as e:
        raise BadDocument("bad_layout_sidecar", f"{path}: {e}") from None
    return dataclasses.replace(doc, pages=pages)


# ----------------------------------------------------------------------------- Tesseract


def tesseract_problem(lang: str = "eng") -> str | None:
    """Why Tesseract cannot OCR `lang` here (engine or language data missing), as one line
    saying what to install; None when it can. Checked once before a run that may need OCR,
    instead of failing on every page."""
    import pytesseract

    cmd = pytesseract.pytesseract.tesseract_cmd
    if shutil.which(cmd) is None:
        return (f"the Tesseract OCR engine ({cmd!r}) is not installed or not on PATH: install it "
                "(Debian/Ubuntu: apt-get install tesseract-ocr; macOS: brew install tesseract)")
    try:  # not pytesseract.get_languages: it caches its first answer for the whole process
        out = subprocess.run([cmd, "--list-langs"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return f"the Tesseract OCR engine ({cmd!r}) does not run ({e}): reinstall tesseract-ocr"
    have = {ln.strip() for ln in (out.stdout + out.stderr).splitlines()[1:]}
    missing = [code for code in lang.split("+") if code not in have]
    if missing:
        return (f"Tesseract has no language data for {'+'.join(missing)} (config.prepare.ocr_lang={lang!r}): "
                f"install {' '.join('tesseract-ocr-' + m for m in missing)}")
    return None


def tesseract_words(image: np.ndarray, lang: str | None = "eng") -> list[Word]:
    """Words of an RGB/gray page image via Tesseract's TSV output, in Tesseract's reading order.

    `lang=None` means OCR is unavailable (see tesseract_problem): BadDocument("no_ocr_engine").
    """
    import pytesseract

    if lang is None:
        raise BadDocument("no_ocr_engine", "needs OCR, and Tesseract is not available")
    try:
        data = pytesseract.image_to_data(np.ascontiguousarray(image), lang=lang, output_type=pytesseract.Output.DICT)
    except pytesseract.TesseractNotFoundError:
        raise BadDocument("no_ocr_engine", "needs OCR, and Tesseract is not installed") from None
    except pytesseract.TesseractError as e:
        raise BadDocument("unreadable_image", f"tesseract failed: {e}") from None
    h, w = image.shape[:2]
    words: list[Word] = []
    line_ids: dict[tuple[int, int, int], int] = {}
    for i, text in enumerate(data["text"]):
        text = (text or "").strip()
        conf = float(data["conf"][i])
        if data["level"][i] != 5 or not text or conf < 0:
            continue
        key = (data["block_num"][i], data["par_num"][i], data["line_num"][i])
        line = line_ids.setdefault(key, len(line_ids))
        x0, y0 = float(data["left"][i]), float(data["top"][i])
        box = (max(0.0, x0), max(0.0, y0), min(float(w), x0 + data["width"][i]), min(float(h), y0 + data["height"][i]))
        block = max(0, int(data["block_num"][i]) - 1)  # Tesseract counts blocks from 1
        words.append(Word(text, box, min(conf / 100.0, 1.0), block, line, len(words)))
    return words


# ----------------------------------------------------------------------------- PDF


def _page_to_pixels(page: Any, width: int, height: int) -> Callable[[float, float], tuple[float, float]]:
    """The map from PDF user space to pixels of the page as PDFium rendered it into a
    width x height bitmap.

    It is read off PDFium's own device matrix (FPDF_DeviceToPage at three corners) rather than
    rebuilt from the page's boxes: pypdfium2's get_cropbox() only sees boxes on the page object
    itself and answers US letter when /MediaBox is inherited from the /Pages node (XeTeX and
    dvipdfmx write it there), while rendering honours inheritance, CropBox, /Rotate and the box
    origin. PDFium ignores /UserUnit in both rendering and text, so they agree there as well.
    """
    import ctypes

    import pypdfium2.raw as pdfium_c

    px, py = ctypes.c_double(), ctypes.c_double()
    corners = []
    for dx, dy in ((0, 0), (width, 0), (0, height)):
        if not pdfium_c.FPDF_DeviceToPage(page, 0, 0, width, height, 0, dx, dy, px, py):
            raise BadDocument("truncated_pdf", "PDFium has no device matrix for the page")
        corners.append((px.value, py.value))
    (x0, y0), (x1, y1), (x2, y2) = corners
    # page = origin + A @ (u, v); invert A once.
    a, b, c, d = (x1 - x0) / width, (x2 - x0) / height, (y1 - y0) / width, (y2 - y0) / height
    det = a * d - b * c
    if not math.isfinite(det) or abs(det) < 1e-12:
        raise BadDocument("truncated_pdf", "degenerate page geometry")

    def to_px(x: float, y: float) -> tuple[float, float]:
        dx, dy = x - x0, y - y0
        return (d * dx - b * dy) / det, (a * dy - c * dx) / det

    return to_px


# Scripts written without spaces between words: each character becomes its own word, so that a
# line of Chinese or Japanese is not one "word" as wide as the page, assigned whole to one window.
_UNSPACED = ((0x2E80, 0x2FDF), (0x3000, 0x30FF), (0x3100, 0x31FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF),
             (0xF900, 0xFAFF), (0xFE30, 0xFE4F), (0xFF00, 0xFFEF), (0x20000, 0x323AF))


def _unspaced(ch: str) -> bool:
    """CJK ideographs, kana, CJK punctuation and full-width forms (not Hangul, which has spaces)."""
    c = ord(ch)
    return any(lo <= c <= hi for lo, hi in _UNSPACED)


def _pdf_words(page: Any, width: int, height: int) -> list[Word]:
    """Group the text layer's characters into words (split at whitespace), lines and blocks,
    with boxes in the pixels of the page rendered as a width x height image.

    PDFium emits characters in content order (our reading order) and inserts generated CR/LF
    between the lines it detects; a baseline jump of more than half the font size also starts
    a new line, and a gap of more than one line height below the previous line a new block.
    Lines and blocks are found in PDF user space (y up), where text runs horizontally even on a
    page with /Rotate 90; only the word boxes are mapped to pixels. Characters of scripts
    without spaces (`_unspaced`) are words of their own.
    """
    import ctypes

    import pypdfium2.raw as pdfium_c

    to_px = _page_to_pixels(page, width, height)
    pw, ph = float(width), float(height)

    words: list[Word] = []
    chars: list[str] = []
    box: list[float] = []  # the current word's box (pixels)
    line = block = 0
    base: float | None = None  # baseline of the current line (user space); None before its first char
    line_box: list[float] = []  # top, bottom of the current line (user space, top > bottom)
    prev_bottom: float | None = None
    ox, oy = ctypes.c_double(), ctypes.c_double()

    def flush() -> None:
        text = "".join(chars).strip()
        if text and box[2] > 0 and box[3] > 0 and box[0] < pw and box[1] < ph:
            clipped = (max(0.0, box[0]), max(0.0, box[1]), min(pw, box[2]), min(ph, box[3]))
            words.append(Word(text, tuple(round(v, 2) for v in clipped), 1.0, block, line, len(words)))
        chars.clear()
        box.clear()

    def end_line() -> None:
        nonlocal line, base, prev_bottom
        flush()
        if base is not None:
            line += 1
            prev_bottom = line_box[1]
        base = None

    tp = page.get_textpage()
    try:
        for i in range(tp.count_chars()):
            ch = chr(pdfium_c.FPDFText_GetUnicode(tp, i))
            if ch in "\r\n":
                end_line()
                continue
            if pdfium_c.FPDFText_IsHyphen(tp, i):  # a line-end hyphen, reported as a control char
                ch = "-"
            elif ch.isspace() or unicodedata.category(ch) in ("Cc", "Cn", "Cs"):
                flush()
                continue
            size = max(pdfium_c.FPDFText_GetFontSize(tp, i), 0.1)
            x0, y0, x1, y1 = tp.get_charbox(i)  # left, bottom, right, top
            if x1 - x0 < 0.01 * size or y1 - y0 < 0.01 * size:
                # No glyph outline (a font this PDFium lacks draws nothing): the font's own box
                # (ascent to descent, the advance wide) still says where the character belongs.
                x0, y0, x1, y1 = tp.get_charbox(i, loose=True)
            (ax, ay), (bx, by) = to_px(x0, y0), to_px(x1, y1)
            cb = (min(ax, bx), min(ay, by), max(ax, bx), max(ay, by))
            pdfium_c.FPDFText_GetCharOrigin(tp, i, ox, oy)
            if base is not None and abs(oy.value - base) > 0.5 * size:
                end_line()
            if base is None:
                if prev_bottom is not None and prev_bottom - y1 > size:
                    block += 1
                base = oy.value
                line_box[:] = [y1, y0]
            line_box[:] = [max(line_box[0], y1), min(line_box[1], y0)]
            if _unspaced(ch):
                flush()
            chars.append(ch)
            box[:] = [min(box[0], cb[0]), min(box[1], cb[1]), max(box[2], cb[2]), max(box[3], cb[3])] if box else list(cb)
            if _unspaced(ch):
                flush()
        flush()
        return words
    finally:
        tp.close()


def _check_pixels(width: float, height: float, max_pixels: int, where: str) -> None:
    if width * height > max_pixels:
        raise BadDocument("too_many_pixels", f"{where} is {int(width)}x{int(height)} > max_pixels={max_pixels}")


def _require_pages(n: int, max_pages: int, path: Path) -> int:
    if n == 0:
        raise BadDocument("no_pages", str(path))
    return min(n, max_pages)  # the caller records the cut in Document.source_pages


def _require_text(doc: Document, path: Path) -> None:
    if not any(p.words for p in doc.pages):
        raise BadDocument("no_text", f"{path}: no words on any page")


def _pdf_load_failure(data: bytes) -> str:
    """Why PDFium refused a file that starts like a PDF.

    PDFium's last-error code is process-global and not reset by a failed load that sets none
    (e.g. an empty page tree), so the bytes decide.
    """
    if b"/Encrypt" in data:  # the trailer (or xref stream) names a security handler we lack the password for
        return "encrypted_pdf"
    counts = re.findall(rb"/Count\s+(\d+)", data)
    if counts and not any(int(c) for c in counts):
        return "no_pages"
    return "truncated_pdf"  # cut short, or damaged beyond PDFium's repair


def read_pdf(path: str | Path, *, dpi: float, max_pages: int, max_pixels: int,
             lang: str | None = "eng") -> tuple[Document, list[np.ndarray]]:
    """Render a PDF at `dpi`; words from its text layer, or Tesseract for pages without one.

    `lang=None` (no OCR engine): pages without a text layer keep no words.
    """
    import pypdfium2 as pdfium

    path = Path(path)
    data = _read_head(path)
    if b"%PDF-" not in data[:1024]:
        raise BadDocument("not_a_pdf", f"{path}: no %PDF- header")
    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as e:
        raise BadDocument(_pdf_load_failure(data), f"{path}: {e}") from None
    try:
        n = _require_pages(len(pdf), max_pages, path)
        scale = dpi / 72.0
        for i in range(n):  # before rendering anything
            w, h = pdf.get_page_size(i)
            _check_pixels(w * scale, h * scale, max_pixels, f"{path} page {i}")
        pages, images = [], []
        for i in range(n):
            page = pdf[i]
            try:
                img = page.render(scale=scale, rev_byteorder=True).to_numpy()
                img = np.ascontiguousarray(img[..., :3]) if img.ndim == 3 else np.repeat(img[..., None], 3, axis=-1)
                words = _pdf_words(page, img.shape[1], img.shape[0])
            except pdfium.PdfiumError as e:
                raise BadDocument("truncated_pdf", f"{path} page {i}: {e}") from None
            finally:
                page.close()
            if not words and lang is not None:
                words = tesseract_words(img, lang)
            pages.append(Page(width=img.shape[1], height=img.shape[0], dpi=float(dpi), words=words))
            images.append(img)
        total = len(pdf)
    finally:
        pdf.close()
    doc = Document(doc_id=path.stem, source=str(path), pages=pages, source_pages=total)
    if lang is None and not any(p.words for p in pages):  # maybe a scan: without OCR, no telling
        raise BadDocument("no_ocr_engine", f"{path}: no page has a text layer, and Tesseract is not available")
    _require_text(doc, path)
    return doc, images


# ----------------------------------------------------------------------------- images


def read_image(path: str | Path, *, max_pages: int, max_pixels: int,
               lang: str | None = "eng") -> tuple[Document, list[np.ndarray]]:
    """A scanned page (PNG/JPEG/...) or a multi-page TIFF, OCRed with Tesseract."""
    from PIL import Image, ImageOps

    if lang is None:  # before decoding anything: without OCR an image yields no words
        raise BadDocument("no_ocr_engine", f"{path}: an image needs OCR, and Tesseract is not available")
    # Pillow's own decompression-bomb guard stays on as a backstop; it must not reject what
    # the caller's cap allows.
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels
    path = Path(path)
    _read_head(path, 0)
    try:
        with warnings.catch_warnings(), Image.open(path) as im:
            # Pillow warns (on stderr) past MAX_IMAGE_PIXELS; _check_pixels below decides instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            total = getattr(im, "n_frames", 1)
            n = _require_pages(total, max_pages, path)
            for i in range(n):  # header sizes only: no pixels are decoded yet
                im.seek(i)
                _check_pixels(im.width, im.height, max_pixels, f"{path} frame {i}")
            pages, images = [], []
            for i in range(n):
                im.seek(i)
                dpi = round(float(im.info.get("dpi", (0.0, 0.0))[0]), 1)  # PNG stores pixels per metre
                img = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
                pages.append(Page(width=img.shape[1], height=img.shape[0], dpi=dpi,
                                  words=tesseract_words(img, lang)))
                images.append(img)
    except Image.DecompressionBombError as e:
        raise BadDocument("too_many_pixels", f"{path}: {e}") from None
    except (OSError, ValueError, SyntaxError) as e:  # what Pillow raises for unknown/broken files
        raise BadDocument("unreadable_image", f"{path}: {e}") from None
    doc = Document(doc_id=path.stem, source=str(path), pages=pages, source_pages=total)
    _require_text(doc, path)
    return doc, images


# ----------------------------------------------------------------------------- dispatch


def _read_head(path: Path, n: int | None = None) -> bytes:
    """The first `n` bytes (all if None); BadDocument for empty or unreadable files."""
    try:
        if path.stat().st_size == 0:
            raise BadDocument("zero_bytes", str(path))
        with open(path, "rb") as f:
            return f.read(-1 if n is None else n)
    except OSError as e:
        raise BadDocument("unreadable_image", f"{path}: {e.strerror or e}") from None


# (magic prefix, reader), tried first; then the suffix decides (so that a broken file named
# .pdf is reported as a PDF problem).
_MAGIC: list[tuple[bytes, str]] = [
    (b"%PDF-", "pdf"), (b"\x89PNG", "image"), (b"\xff\xd8\xff", "image"), (b"II*\x00", "image"),
    (b"MM\x00*", "image"), (b"GIF8", "image"), (b"BM", "image"), (b"RIFF", "image"),
]
_SUFFIX = {".pdf": "pdf", ".png": "image", ".jpg": "image", ".jpeg": "image", ".tif": "image",
           ".tiff": "image", ".gif": "image", ".bmp": "image", ".webp": "image"}


def _pdf_reader(path: Path, dpi: float, max_pages: int, max_pixels: int, lang: str) -> tuple[Document, list[np.ndarray]]:
    return read_pdf(path, dpi=dpi, max_pages=max_pages, max_pixels=max_pixels, lang=lang)


def _image_reader(path: Path, dpi: float, max_pages: int, max_pixels: int, lang: str) -> tuple[Document, list[np.ndarray]]:
    del dpi  # scans come with their own resolution
    return read_image(path, max_pages=max_pages, max_pixels=max_pixels, lang=lang)


READERS: dict[str, Callable[..., tuple[Document, list[np.ndarray]]]] = {"pdf": _pdf_reader, "image": _image_reader}
SUFFIXES = tuple(sorted(_SUFFIX))


def read_document(path: str | Path, *, dpi: float = 100, max_pages: int = 32, max_pixels: int = 40_000_000,
                  lang: str | None = "eng") -> tuple[Document, list[np.ndarray]]:
    """Read any supported file (by magic bytes, then suffix); BadDocument on anything unreadable.

    `lang=None` reads without OCR (Tesseract missing): images are refused as no_ocr_engine.
    """
    path = Path(path)
    return READERS[file_kind(path)](path, dpi, max_pages, max_pixels, lang)


def file_kind(path: Path) -> str:
    """"pdf" or "image", by magic bytes, then suffix (a key of READERS); BadDocument otherwise."""
    head = _read_head(path, 1024)
    kind = next((k for magic, k in _MAGIC if head.startswith(magic)), None)
    if kind is None and b"%PDF-" in head:  # PDFs may carry junk before the header
        kind = "pdf"
    kind = kind or _SUFFIX.get(path.suffix.lower())
    if kind is None:
        raise BadDocument("unreadable_image", f"{path}: unknown file type")
    return kind

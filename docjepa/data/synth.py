"""Synthetic multi-page documents with exact OCR ground truth: words, boxes, reading order, layout.

In the spirit of SynthDoG (Kim et al. 2022, "OCR-free Document Understanding Transformer"):
real sentences are typeset with real fonts into the layouts of seven document categories, so
every word's box, reading-order index and layout element are known exactly rather than
estimated by an OCR engine. The text is English prose from the docstrings of the Python standard
library, read from source with `ast` (nothing is imported, and `python -OO` does not matter).
Scan-like degradations (tilt <= 1 degree, blur, noise, uneven light, JPEG) are applied after
layout, and the word and layout boxes are carried through the tilt.

    doc, images = generate(index, seed)   # deterministic in (index, seed)
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from docjepa.data.ocr import Document, LayoutElement, Page, Word

CATEGORIES: tuple[str, ...] = ("letter", "invoice", "form", "paper_1col", "paper_2col", "report", "slide")
DPI = 96.0  # page sizes below are at 96 dpi
_PAPER_SIZES = ((816, 1056), (794, 1123))  # US letter, A4
_SLIDE_SIZE = (1024, 768)  # 4:3 slide

Box = tuple[float, float, float, float]
Colour = tuple[int, int, int]

# ----------------------------------------------------------------------------- text

# Pure-Python stdlib modules with plenty of prose in their docstrings.
_CORPUS_MODULES = (
    "argparse", "asyncio.tasks", "calendar", "collections", "concurrent.futures._base", "configparser",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "doctest", "email.message",
    "enum", "fractions", "ftplib", "functools", "gettext", "glob", "heapq", "hmac", "html.parser",
    "http.client", "http.cookiejar", "imaplib", "inspect", "ipaddress", "json", "locale", "logging",
    "mailbox", "mimetypes", "multiprocessing.managers", "multiprocessing.pool", "optparse", "pathlib",
    "pdb", "pickle", "pprint", "pydoc", "queue", "random", "sched", "secrets", "selectors", "shlex",
    "shutil", "smtplib", "socket", "sqlite3", "ssl", "statistics", "string", "subprocess", "tarfile",
    "tempfile", "textwrap", "threading", "timeit", "tokenize", "traceback", "turtle", "typing",
    "unittest.case", "urllib.parse", "urllib.request", "uuid", "warnings", "weakref", "xml.dom.minidom",
    "zipfile",
)
_NOT_PROSE = set("=<>{}[]|\\_#@$%^~`*/")
_PROSE_WORD = re.compile(r"[A-Za-z][a-z'-]*[,.;:!?]?")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def _prose_sentences(doc: str) -> list[str]:
    """Sentences of running prose in one docstring; code, tables and argument lists are dropped."""
    out = []
    for para in doc.split("\n\n"):
        lines = para.split("\n")
        if any(ln[:1].isspace() or ln.startswith((">>>", "...")) for ln in lines):
            continue  # indented lines are examples, field lists or tables
        for s in _SENTENCE_END.split(" ".join(ln.strip() for ln in lines)):
            s = " ".join(s.split())
            words = s.split()
            if not 5 <= len(words) <= 40 or s[-1] not in ".!?" or _NOT_PROSE.intersection(s):
                continue
            if sum(bool(_PROSE_WORD.fullmatch(w)) for w in words) >= 0.85 * len(words):
                out.append(s)
    return out


@functools.cache
def _corpus() -> tuple[str, ...]:
    """Unique prose sentences, in a fixed order; built once per process (about a second)."""
    sentences: list[str] = []
    for name in _CORPUS_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    sentences += _prose_sentences(doc)
    sentences = list(dict.fromkeys(sentences))
    if len(sentences) < 500:
        raise RuntimeError(f"synth: only {len(sentences)} sentences found in the standard library sources; "
                           "the generator needs the stdlib .py files")
    return tuple(sentences)


_SMALL_WORDS = frozenset("a an the of and or to in on for with by as at from into is are".split())
# Function words that should not start or end a heading or a table label.
_STOP_WORDS = _SMALL_WORDS | frozenset(
    "that this these those be been being it its if not but which when so can will may must should would "
    "there then than has have had was were do does no all any each such only also we you they he she them "
    "their your our who whose what where how whether until unless otherwise".split())

_FIRST_NAMES = ("James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David",
                "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah",
                "Charles", "Karen", "Daniel", "Nancy", "Matthew", "Lisa", "Anthony", "Margaret", "Paul",
                "Sandra", "Steven", "Emily", "Andrew", "Michelle", "Kevin", "Carol", "Brian", "Amanda",
                "George", "Aisha", "Wei", "Priya", "Carlos", "Fatima", "Hiroshi", "Olga", "Mateo", "Ingrid",
                "Kwame", "Elena", "Omar", "Sofia")
_LAST_NAMES = ("Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
               "Martinez", "Hernandez", "Lopez", "Wilson", "Anderson", "Taylor", "Moore", "Jackson", "Martin",
               "Lee", "Thompson", "White", "Harris", "Clark", "Lewis", "Robinson", "Walker", "Young", "Allen",
               "King", "Wright", "Scott", "Nguyen", "Hill", "Green", "Adams", "Baker", "Nelson", "Carter",
               "Mitchell", "Roberts", "Chen", "Patel", "Kim", "Okafor", "Schmidt", "Rossi", "Novak", "Larsen",
               "Tanaka", "Dubois")
_STREETS = ("Main Street", "Oak Avenue", "Maple Drive", "Cedar Lane", "Park Road", "Elm Street", "Hill Road",
            "Lake View", "Church Street", "Mill Lane", "River Road", "Station Road", "High Street",
            "Market Square", "Bridge Street", "Harbor Way")
_CITIES = ("Springfield, IL", "Portland, OR", "Madison, WI", "Austin, TX", "Boulder, CO", "Raleigh, NC",
           "Albany, NY", "Salem, MA", "Dayton, OH", "Tucson, AZ", "Fresno, CA", "Reno, NV")
_COMPANY_SUFFIXES = ("& Sons", "Associates", "Consulting", "Industries", "Holdings Ltd", "Systems Inc.",
                     "Partners", "Logistics", "Laboratories", "Group", "Supply Co.", "Analytics")
_JOBS = ("Director of Operations", "Account Manager", "Senior Engineer", "Project Coordinator",
         "Chief Financial Officer", "Research Scientist", "Customer Service Lead", "Office Manager",
         "Head of Procurement", "Legal Counsel", "Programme Manager", "Technical Writer")
_FIELDS_OF_STUDY = ("Computer Science", "Mathematics", "Physics", "Statistics", "Linguistics",
                    "Electrical Engineering", "Economics", "Information Science")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December")
_PAPER_SECTIONS = ("Related Work", "Background", "Method", "Approach", "Experiments", "Results",
                   "Discussion", "Analysis", "Limitations", "Implementation Details", "Evaluation")
_REPORT_SECTIONS = ("Background", "Scope", "Methodology", "Findings", "Financial Overview", "Risk Assessment",
                    "Recommendations", "Next Steps", "Operations", "Market Review", "Appendix")
_FORM_SECTIONS = (
    ("Personal information", ("Full name", "Date of birth", "Email address", "Telephone")),
    ("Address", ("Street address", "City", "Postal code", "Country")),
    ("Employment", ("Employer", "Job title", "Start date", "Annual income")),
    ("Account details", ("Account number", "Reference number", "Amount requested", "Payment method")),
    ("Emergency contact", ("Contact name", "Relationship", "Telephone")),
)
_CLOSINGS = ("Sincerely,", "Yours faithfully,", "Kind regards,", "Best regards,", "Yours truly,")


def _choice(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def _capitalise(words: Sequence[str]) -> str:
    """Title case that leaves short function words lower-case (except the first)."""
    return " ".join(w if (i and w.lower() in _SMALL_WORDS) else w[:1].upper() + w[1:] for i, w in enumerate(words))


class _Text:
    """Draws sentences, phrases, names, dates and amounts from one rng."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.corpus = _corpus()

    def pick(self, options: Sequence):
        return _choice(self.rng, options)

    def sentence(self, max_words: int = 40) -> str:
        for _ in range(30):
            s = self.pick(self.corpus)
            if len(s.split()) <= max_words:
                return s
        return s

    def paragraph(self, lo: int, hi: int) -> str:
        return " ".join(self.sentence() for _ in range(int(self.rng.integers(lo, hi + 1))))

    def phrase(self, lo: int, hi: int) -> list[str]:
        """Up to lo..hi consecutive words of one sentence, without punctuation or dangling function words."""
        for _ in range(10):
            words = [w for w in (w.strip(".,;:!?()'\"") for w in self.sentence().split()) if w]
            n = min(len(words), int(self.rng.integers(lo, hi + 1)))
            start = int(self.rng.integers(len(words) - n + 1))
            run = words[start:start + n]
            while run and (run[-1].lower() in _STOP_WORDS or len(run[-1]) < 2):
                run.pop()
            while run and (run[0].lower() in _STOP_WORDS or len(run[0]) < 2):
                run.pop(0)
            if len(run) >= min(lo, 2) and max(map(len, run)) <= 15:  # long words are code identifiers
                return run
        return run or words[:1]

    def title(self, lo: int, hi: int) -> str:
        return _capitalise(self.phrase(lo, hi))

    def sentence_case(self, lo: int, hi: int) -> str:
        s = " ".join(self.phrase(lo, hi))
        return s[:1].upper() + s[1:]

    def name(self) -> str:
        return f"{self.pick(_FIRST_NAMES)} {self.pick(_LAST_NAMES)}"

    def company(self) -> str:
        return f"{self.pick(_LAST_NAMES)} {self.pick(_COMPANY_SUFFIXES)}"

    def address(self) -> list[str]:
        return [f"{int(self.rng.integers(1, 9999))} {self.pick(_STREETS)}",
                f"{self.pick(_CITIES)} {int(self.rng.integers(10000, 99999))}"]

    def date(self) -> str:
        y, m, d = int(self.rng.integers(2012, 2025)), int(self.rng.integers(12)), int(self.rng.integers(1, 29))
        style = int(self.rng.integers(4))
        return (f"{_MONTHS[m]} {d}, {y}", f"{d} {_MONTHS[m]} {y}", f"{y}-{m + 1:02d}-{d:02d}",
                f"{m + 1:02d}/{d:02d}/{y}")[style]

    def phone(self) -> str:
        return f"({int(self.rng.integers(200, 999))}) {int(self.rng.integers(200, 999))}-{int(self.rng.integers(10000)):04d}"

    def email(self, name: str) -> str:
        first, last = name.lower().split()[:2]
        return f"{first[0]}{last}@{self.pick(('example.com', 'mail.org', 'post.net'))}"

    def money(self, lo: float, hi: float) -> str:
        return f"${float(self.rng.uniform(lo, hi)):,.2f}"


# ----------------------------------------------------------------------------- fonts and style

_FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/truetype/liberation"))
# (regular, bold, italic) file names per family.
_SERIF = (("DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf"),
          ("LiberationSerif-Regular.ttf", "LiberationSerif-Bold.ttf", "LiberationSerif-Italic.ttf"),
          ("DejaVuSerifCondensed.ttf", "DejaVuSerifCondensed-Bold.ttf", "DejaVuSerifCondensed-Italic.ttf"))
_SANS = (("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf"),
         ("LiberationSans-Regular.ttf", "LiberationSans-Bold.ttf", "LiberationSans-Italic.ttf"),
         ("LiberationSansNarrow-Regular.ttf", "LiberationSansNarrow-Bold.ttf", "LiberationSansNarrow-Italic.ttf"),
         ("DejaVuSansCondensed.ttf", "DejaVuSansCondensed-Bold.ttf", "DejaVuSansCondensed-Oblique.ttf"))
_MONO = (("DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf"),
         ("LiberationMono-Regular.ttf", "LiberationMono-Bold.ttf", "LiberationMono-Italic.ttf"))
_INKS = ((20, 20, 20), (35, 35, 45), (15, 25, 70), (45, 35, 30), (0, 0, 0))
_ACCENTS = ((20, 45, 110), (110, 20, 30), (20, 80, 50), (60, 30, 90), (30, 30, 30))
_CHART_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                  (140, 86, 75), (127, 127, 127), (23, 190, 207))
_SLIDE_BACKGROUNDS = ((252, 252, 252), (244, 247, 255), (255, 250, 240), (242, 247, 242), (248, 244, 250))

BOLD, REGULAR, ITALIC = 1, 0, 2


@functools.lru_cache(maxsize=512)
def _font(name: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A TrueType font from the Debian font packages, or Pillow's built-in font if they are missing."""
    for d in _FONT_DIRS:
        if (d / name).is_file():
            return ImageFont.truetype(str(d / name), size)
    return ImageFont.load_default(size)


@dataclass(frozen=True)
class _Style:
    family: tuple[str, str, str]
    body: int  # body text size in pixels
    ink: Colour
    accent: Colour
    paper: Colour
    scan: bool  # apply scan-like degradations


def _style(rng: np.random.Generator, category: str) -> _Style:
    pick = functools.partial(_choice, rng)
    if category.startswith("paper"):
        family = pick(_SERIF) if rng.random() < 0.8 else pick(_SANS)
    elif category == "invoice" and rng.random() < 0.2:
        family = pick(_MONO)
    elif category in ("letter", "report"):
        family = pick(_SERIF + _SANS)
    else:
        family = pick(_SANS)
    # Body sizes keep text readable after an 816 px page is resized to 448 px.
    lo, hi = {"slide": (22, 28), "paper_2col": (15, 17), "paper_1col": (16, 19), "letter": (16, 20),
              "report": (16, 19)}.get(category, (15, 18))
    scan = category != "slide" and rng.random() < 0.65
    if category == "slide":
        paper = pick(_SLIDE_BACKGROUNDS)
    elif scan:
        paper = tuple(int(v) for v in 255 - rng.integers(2, 14) * np.array([0.4, 0.6, 1.0]))
    else:
        paper = (255, 255, 255)
    ink = pick(_INKS)
    accent = ink if category.startswith("paper") else pick(_ACCENTS)
    return _Style(family, int(rng.integers(lo, hi + 1)), ink, accent, paper, scan)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- one page


def _union(boxes: Sequence[Box]) -> Box:
    a = np.asarray(boxes, dtype=np.float64)
    return (a[:, 0].min(), a[:, 1].min(), a[:, 2].max(), a[:, 3].max())


def _wrap(words: Sequence[str], font, width: float) -> list[list[str]]:
    """Greedy line breaking; a word wider than the whole line is dropped."""
    space = font.getlength(" ")
    lines: list[list[str]] = []
    cur: list[str] = []
    used = 0.0
    for w in words:
        wl = font.getlength(w)
        if wl > width:
            continue
        if cur and used + space + wl > width:
            lines.append(cur)
            cur, used = [], 0.0
        used += wl + (space if cur else 0.0)
        cur.append(w)
    if cur:
        lines.append(cur)
    return lines


def _fit(words: Sequence[str], font, width: float) -> list[str]:
    """The leading words that fit on one line of the given width."""
    lines = _wrap(words, font, width)
    return lines[0] if lines else []


class _Page:
    """A page being drawn; words and layout elements are recorded in drawing (= reading) order."""

    def __init__(self, size: tuple[int, int], paper: Colour):
        self.width, self.height = size
        self.image = Image.new("RGB", size, paper)
        self.draw = ImageDraw.Draw(self.image)
        self.words: list[tuple[str, Box, int, int]] = []  # text, box, block, line
        self.layout: list[tuple[str, Box]] = []
        self.blocks = 0
        self.lines = 0

    def new_block(self) -> int:
        self.blocks += 1
        return self.blocks - 1

    def new_line(self) -> int:
        self.lines += 1
        return self.lines - 1

    def text_line(self, words: Sequence[str], x: float, y: float, font, fill: Colour, block: int, *,
                  width: float | None = None, align: str = "left") -> list[Box]:
        """Draw words one by one (so each gets its exact ink box) as one line starting at (x, y)."""
        if not words:
            return []
        widths = [font.getlength(w) for w in words]
        space = font.getlength(" ")
        natural = sum(widths) + space * (len(words) - 1)
        gap = space
        if width is not None:
            if align == "justify" and len(words) > 1:
                gap = min((width - sum(widths)) / (len(words) - 1), 3 * space)
            elif align == "center":
                x += (width - natural) / 2
            elif align == "right":
                x += width - natural
        line = self.new_line()
        boxes = []
        for w, wl in zip(words, widths):
            px, py = round(x), round(y)
            self.draw.text((px, py), w, font=font, fill=fill)
            l, t, r, b = font.getbbox(w)
            box = (float(px + l), float(py + t), float(px + r), float(py + b))
            self.words.append((w, box, block, line))
            boxes.append(box)
            x += wl + gap
        return boxes

    def fixed(self, cls: str, text: str, x: float, y: float, width: float, font, fill: Colour,
              align: str = "left") -> None:
        """One line of text at a fixed place (headers, footers, page numbers) as its own element."""
        boxes = self.text_line(_fit(text.split(), font, width), x, y, font, fill, self.new_block(),
                               width=width, align=align)
        if boxes:
            self.layout.append((cls, _union(boxes)))


# ----------------------------------------------------------------------------- flowing content


class _Full(Exception):
    """The document has used up its page budget."""


class _Doc:
    """Flows blocks down the columns of consecutive pages, splitting them where a column ends."""

    def __init__(self, rng: np.random.Generator, size: tuple[int, int], n_pages: int, style: _Style,
                 margins: tuple[int, int, int, int], last_fill: float = 1.0):
        self.rng, self.size, self.n_pages, self.style = rng, size, n_pages, style
        self.text = _Text(rng)
        self.left, self.top, self.right, self.bottom_margin = margins
        self.header: Callable[[_Doc], None] | None = None
        self.footer: Callable[[_Doc], None] | None = None
        self.pages: list[_Page] = []
        self.columns, self.gutter, self.col = 1, 24, 0
        self.y = self.col_top = float(self.top)
        self.last_fill = last_fill  # content loops stop this far down the last page, as real documents end
        self._open = False

    # -- geometry
    def font(self, kind: int, size: int):
        return _font(self.style.family[kind], int(size))

    @property
    def page(self) -> _Page:
        return self.pages[-1]

    @property
    def index(self) -> int:
        return len(self.pages) - 1

    @property
    def on_last_page(self) -> bool:
        return len(self.pages) == self.n_pages

    @property
    def full_width(self) -> float:
        return self.size[0] - self.left - self.right

    @property
    def width(self) -> float:
        return (self.full_width - self.gutter * (self.columns - 1)) / self.columns

    @property
    def x(self) -> float:
        return self.left + self.col * (self.width + self.gutter)

    @property
    def bottom(self) -> float:
        return float(self.size[1] - self.bottom_margin)

    @property
    def done(self) -> bool:
        """On the last page and past the point where its content should end."""
        return self.on_last_page and self.y >= self.top + (self.bottom - self.top) * self.last_fill

    # -- pages and columns
    def new_page(self) -> None:
        self.close_page()
        if len(self.pages) == self.n_pages:
            raise _Full
        self.pages.append(_Page(self.size, self.style.paper))
        self._open = True
        self.columns, self.col, self.y = 1, 0, float(self.top)
        if self.header:
            self.header(self)
        self.col_top = self.y

    def close_page(self) -> None:
        if self._open:
            if self.footer:
                self.footer(self)
            self._open = False

    def set_columns(self, n: int, gutter: int = 24) -> None:
        self.columns, self.gutter, self.col, self.col_top = n, gutter, 0, self.y

    def next_column(self) -> None:
        if self.col + 1 < self.columns:
            self.col += 1
            self.y = self.col_top
        else:
            self.new_page()

    def ensure(self, h: float) -> None:
        """Move to the next column unless h pixels fit (an empty column is always accepted)."""
        if self.y + h > self.bottom and self.y > self.col_top:
            self.next_column()

    def fits(self, h: float) -> bool:
        return self.y + h <= self.bottom

    # -- blocks
    def block(self, cls: str, items: Sequence[str | tuple[str, str]], font, *, fill: Colour | None = None,
              align: str = "left", leading: float = 1.4, indent: float = 0, width: float | None = None,
              after: float = 0.6, item_gap: float = 0.0) -> None:
        """Flow text items (each wrapped on its own) as one layout element of class cls.

        An item is a string, or (marker, text) for list items: marker "*" draws a bullet dot,
        any other marker (such as "3.") is drawn as a word.
        """
        fill = fill or self.style.ink
        lh = round(font.size * leading)
        width = (self.width - indent) if width is None else width
        items = [it if isinstance(it, tuple) else ("", it) for it in items]
        hang = round(font.size * 1.5) if any(m for m, _ in items) else 0
        boxes: list[Box] = []
        block = None
        for marker, text in items:
            lines = _wrap(text.split(), font, width - hang)
            for i, words in enumerate(lines):
                if self.y + lh > self.bottom:
                    self._element(cls, boxes)
                    boxes, block = [], None
                    self.next_column()
                if block is None:
                    block = self.page.new_block()
                x = self.x + indent
                if i == 0 and marker == "*":
                    r, (_, xt, _, xb) = max(2, font.size // 7), font.getbbox("x")
                    cy = self.y + (xt + xb) / 2
                    self.page.draw.ellipse((x + r, cy - r, x + 3 * r, cy + r), fill=fill)
                    boxes.append((float(x + r), float(cy - r), float(x + 3 * r), float(cy + r)))  # in the element
                elif i == 0 and marker:
                    boxes += self.page.text_line([marker], x, self.y, font, fill, block)
                a = "left" if (align == "justify" and i == len(lines) - 1) else align
                boxes += self.page.text_line(words, x + hang, self.y, font, fill, block, width=width - hang, align=a)
                self.y += lh
            self.y += lh * item_gap
        self._element(cls, boxes)
        self.y += lh * after

    def _element(self, cls: str, boxes: Sequence[Box]) -> None:
        if boxes:
            self.page.layout.append((cls, _union(boxes)))

    def heading(self, text: str, size: int) -> None:
        """A bold heading kept together with at least two lines of what follows."""
        self.y += size * 0.5
        self.ensure(size * 1.4 + 2.8 * self.style.body)
        self.block("heading", [text], self.font(BOLD, size), fill=self.style.accent, after=0.3)

    def rule(self, colour: Colour | None = None, width: int = 1, gap: float = 8) -> None:
        self.page.draw.line((self.x, self.y, self.x + self.width, self.y), fill=colour or self.style.ink, width=width)
        self.y += gap

    def table(self, rows: Sequence[Sequence[str]], *, size: int, numeric: Sequence[bool],
              weights: Sequence[float] | None = None) -> None:
        """A ruled table under a bold header row; rows that do not fit continue in the next column or page."""
        rng, ink = self.rng, self.style.ink
        font, bold = self.font(REGULAR, size), self.font(BOLD, size)
        ascent, descent = font.getmetrics()
        weights = np.asarray(weights or [1.0 if n else 2.2 for n in numeric[:len(rows[0])]], dtype=np.float64)
        grid = ("full", "rows", "zebra")[int(rng.integers(3))]
        rule = tuple(int(v) for v in np.asarray(ink) // 2 + 60) if grid != "full" else ink
        shade = tuple(max(0, v - 18) for v in self.style.paper)
        rh, pad = round(size * 1.9), round(size * 0.45)
        start: float | None = None
        row_ys: list[float] = []
        block = 0

        def close() -> None:
            if start is None or not row_ys:
                return
            x0, x1, y1 = self.x, self.x + self.width, self.y
            d = self.page.draw
            if grid == "full":
                for y in row_ys + [y1]:
                    d.line((x0, y, x1, y), fill=rule, width=1)
                for cx in np.concatenate([[0.0], np.cumsum(weights) / weights.sum()]) * (x1 - x0) + x0:
                    d.line((cx, start, cx, y1), fill=rule, width=1)
            else:
                d.line((x0, start, x1, start), fill=rule, width=2)
                d.line((x0, y1, x1, y1), fill=rule, width=2)
                if len(row_ys) > 1 and row_ys[0] == start:
                    d.line((x0, row_ys[1], x1, row_ys[1]), fill=rule, width=1)
            self.page.layout.append(("table", (float(x0), float(start), float(x1), float(y1))))

        for r, row in enumerate(rows):
            if self.y + rh > self.bottom:
                close()
                self.next_column()
                start = None
            if start is None:
                start, row_ys, block = self.y, [], self.page.new_block()
            row_ys.append(self.y)
            cw = self.width * weights / weights.sum()
            cx = self.x + np.concatenate([[0.0], np.cumsum(cw)])
            if grid == "zebra" and r % 2 == 1:
                self.page.draw.rectangle((cx[0], self.y, cx[-1], self.y + rh), fill=shade)
            f = bold if r == 0 else font
            ty = self.y + (rh - ascent - descent) / 2
            for c, cell in enumerate(row):
                words = _fit(cell.split(), f, cw[c] - 2 * pad)
                align = "right" if numeric[c] else "left"
                self.page.text_line(words, cx[c] + pad, ty, f, ink, block, width=cw[c] - 2 * pad, align=align)
            self.y += rh
        close()
        self.y += size

    def figure(self, height: float, caption: str | None = None) -> None:
        """A chart (no text inside) with an optional caption below it, kept in one column."""
        cap_font = self.font(ITALIC if self.rng.random() < 0.5 else REGULAR, max(12, self.style.body - 2))
        cap_h = 0.0
        if caption:
            cap_h = len(_wrap(caption.split(), cap_font, self.width)) * round(cap_font.size * 1.35) + 8
        height = min(height, self.bottom - self.col_top - cap_h - 12)
        self.ensure(height + cap_h + 12)
        height = min(height, self.bottom - self.y - cap_h - 12)
        if height < 60:
            return
        w = self.width * float(self.rng.uniform(0.65, 1.0))
        x0 = self.x + (self.width - w) / 2
        box = (float(round(x0)), float(round(self.y + 4)), float(round(x0 + w)), float(round(self.y + 4 + height)))
        _chart(self.rng, self.page.draw, box, self.style.ink, self.style.paper)
        self.page.layout.append(("figure", box))
        self.y += height + 12
        if caption:
            self.block("caption", [caption], cap_font, leading=1.35, align="center" if cap_h < 30 else "left")


# ----------------------------------------------------------------------------- charts


def _chart(rng: np.random.Generator, draw: ImageDraw.ImageDraw, box: Box, ink: Colour, paper: Colour) -> None:
    """A bar, line, scatter or pie chart, or a box-and-arrow diagram, drawn inside box."""
    x0, y0, x1, y1 = box
    colours = [_CHART_COLOURS[i] for i in rng.permutation(len(_CHART_COLOURS))]
    kind = ("bar", "line", "scatter", "pie", "diagram")[int(rng.integers(5))]
    if kind == "pie":
        r = min(x1 - x0, y1 - y0) / 2 - 4
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        start = -90.0
        for i, f in enumerate(rng.dirichlet(np.ones(int(rng.integers(3, 7))) * 2)):
            draw.pieslice((cx - r, cy - r, cx + r, cy + r), start, start + 360 * f, fill=colours[i], outline=paper)
            start += 360 * f
        return
    if kind == "diagram":  # boxes joined by arrows, snaking row by row
        cols, rows = int(rng.integers(3, 6)), int(rng.integers(1, 4))
        cw, ch = (x1 - x0) / cols, (y1 - y0) / rows
        bw, bh = cw * 0.62, min(ch * 0.6, cw * 0.8)
        centres = [(x0 + (c if r % 2 == 0 else cols - 1 - c) * cw + cw / 2, y0 + r * ch + ch / 2)
                   for r in range(rows) for c in range(cols)]
        for i, (cx, cy) in enumerate(centres):
            tint = tuple(int(255 - (255 - v) * 0.35) for v in colours[i % len(colours)])
            draw.rounded_rectangle((cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2), radius=6, outline=ink,
                                   width=2, fill=tint)
        for (ax, ay), (bx, by) in zip(centres, centres[1:]):
            if ay == by:  # along a row
                sx = 1 if bx > ax else -1
                start, end = (ax + sx * (bw / 2 + 3), ay), (bx - sx * (bw / 2 + 3), by)
                head = ((end[0], end[1]), (end[0] - sx * 7, end[1] - 4), (end[0] - sx * 7, end[1] + 4))
            else:  # down to the next row
                start, end = (ax, ay + bh / 2 + 3), (bx, by - bh / 2 - 3)
                head = ((end[0], end[1]), (end[0] - 4, end[1] - 7), (end[0] + 4, end[1] - 7))
            draw.line((start, end), fill=ink, width=2)
            draw.polygon(head, fill=ink)
        return
    pad = 10
    ax0, ay0, ax1, ay1 = x0 + pad, y0 + pad, x1 - pad, y1 - pad
    grey = tuple(int(v * 0.85) for v in paper)
    for k in range(1, 5):
        gy = ay1 - (ay1 - ay0) * k / 5
        draw.line((ax0, gy, ax1, gy), fill=grey, width=1)
    if kind == "bar":
        groups, series = int(rng.integers(3, 9)), int(rng.integers(1, 4))
        gw = (ax1 - ax0) / groups
        bw = gw * 0.7 / series
        for g in range(groups):
            for s in range(series):
                top = ay1 - (ay1 - ay0) * float(rng.uniform(0.1, 0.95))
                bx = ax0 + g * gw + gw * 0.15 + s * bw
                draw.rectangle((bx, top, bx + bw - 1, ay1), fill=colours[s])
    elif kind == "line":
        n = int(rng.integers(6, 20))
        xs = np.linspace(ax0 + 4, ax1 - 4, n)
        for s in range(int(rng.integers(1, 4))):
            walk = np.cumsum(rng.normal(0, 1, n))
            walk = (walk - walk.min()) / (np.ptp(walk) + 1e-6)
            ys = ay1 - 4 - walk * (ay1 - ay0 - 8) * float(rng.uniform(0.5, 1.0))
            pts = list(zip(xs.tolist(), ys.tolist()))
            draw.line(pts, fill=colours[s], width=2)
            if rng.random() < 0.5:
                for px, py in pts:
                    draw.ellipse((px - 3, py - 3, px + 3, py + 3), fill=colours[s])
    else:
        for s in range(int(rng.integers(1, 4))):
            centre = rng.uniform(0.2, 0.8, 2)
            pts = np.clip(centre + rng.normal(0, 0.12, (int(rng.integers(15, 40)), 2)), 0.02, 0.98)
            for px, py in pts:
                cx, cy = ax0 + px * (ax1 - ax0), ay1 - py * (ay1 - ay0)
                draw.ellipse((cx - 3, cy - 3, cx + 3, cy + 3), fill=colours[s])
    draw.line(((ax0, ay0), (ax0, ay1), (ax1, ay1)), fill=ink, width=2)


# ----------------------------------------------------------------------------- categories


def _page_number(d: _Doc, align: str, text: str | None = None, size: int | None = None) -> None:
    size = size or max(12, d.style.body - 3)
    y = d.size[1] - d.bottom_margin / 2 - size / 2
    d.page.fixed("page_number", text or str(d.index + 1), d.left, y, d.full_width, d.font(REGULAR, size),
                 d.style.ink, align)


def _letter(d: _Doc) -> None:
    t, rng, body = d.text, d.rng, d.style.body
    font = d.font(REGULAR, body)
    recipient, sender = t.name(), t.name()
    date, company = t.date(), t.company()

    def header(d: _Doc) -> None:
        if d.index > 0:
            size = body - 2
            d.page.fixed("header", f"{recipient}   {date}", d.left, d.top, d.full_width, d.font(REGULAR, size),
                         d.style.ink)
            d.y += size * 3

    def footer(d: _Doc) -> None:
        if d.index == 0 and rng.random() < 0.6:
            size = max(12, body - 4)
            d.page.fixed("footer", f"{company}  {' '.join(t.address())}  {t.phone()}", d.left,
                         d.size[1] - d.bottom_margin + 6, d.full_width, d.font(REGULAR, size), d.style.accent, "center")
        if d.n_pages > 1:
            _page_number(d, "right", f"Page {d.index + 1} of {d.n_pages}")

    d.header, d.footer = header, footer
    d.new_page()
    head_align = ("left", "center")[int(rng.integers(2))]
    d.block("title", [company], d.font(BOLD, int(rng.integers(24, 32))), fill=d.style.accent, align=head_align,
            after=0.1)
    d.block("paragraph", [", ".join(t.address()) + "  " + t.phone()], d.font(REGULAR, body - 2),
            fill=d.style.accent, align=head_align, after=0.3)
    d.rule(d.style.accent, 2, gap=body * 2)
    d.block("paragraph", [date], font, align=("left", "right")[int(rng.integers(2))], after=1.0)
    d.block("paragraph", [recipient, t.pick(_JOBS), t.company(), *t.address()], font, after=1.0)
    d.block("heading", [f"Re: {t.title(3, 7)}"], d.font(BOLD, body), after=0.8)
    d.block("paragraph", [f"Dear {recipient.split()[0]},"], font, after=0.8)
    align = ("left", "justify")[int(rng.integers(2))]
    while not d.done:
        d.block("paragraph", [t.paragraph(2, 5)], font, align=align, after=0.9)
    d.block("paragraph", [t.pick(_CLOSINGS)], font, after=0.5)
    d.ensure(body * 3)
    _signature(d)
    d.block("paragraph", [sender, t.pick(_JOBS)], font)


def _signature(d: _Doc) -> None:
    """A handwritten-looking scribble (ink, but no words)."""
    n = 40
    xs = d.x + np.linspace(0, float(d.rng.uniform(120, 200)), n)
    ys = d.y + d.style.body + np.cumsum(d.rng.normal(0, 2.5, n)) + 8 * np.sin(np.linspace(0, 9, n))
    d.page.draw.line(list(zip(xs.tolist(), ys.tolist())), fill=(20, 30, 120), width=2)
    d.y += d.style.body * 3


def _invoice(d: _Doc) -> None:
    t, rng, body = d.text, d.rng, d.style.body
    font, bold = d.font(REGULAR, body), d.font(BOLD, body)
    company, number = t.company(), f"INV-{int(rng.integers(2015, 2025))}-{int(rng.integers(1, 99999)):05d}"

    def footer(d: _Doc) -> None:
        size = max(12, body - 3)
        d.page.fixed("footer", f"{company}  {t.phone()}  Thank you for your business.", d.left,
                     d.size[1] - d.bottom_margin + 4, d.full_width, d.font(REGULAR, size), d.style.accent, "left")
        if d.n_pages > 1:
            _page_number(d, "right", f"Page {d.index + 1} of {d.n_pages}")

    def header(d: _Doc) -> None:
        if d.index > 0:
            d.page.fixed("header", f"Invoice {number}", d.left, d.top, d.full_width, d.font(REGULAR, body - 2),
                         d.style.ink, "right")
            d.y += body * 2.5

    d.header, d.footer = header, footer
    d.new_page()
    y0, half = d.y, d.full_width / 2
    d.block("heading", [company], d.font(BOLD, body + 6), fill=d.style.accent, width=half, after=0.2)
    d.block("paragraph", [*t.address(), t.phone()], font, width=half)
    y_left, d.y = d.y, y0
    d.block("title", ["INVOICE"], d.font(BOLD, int(rng.integers(28, 38))), fill=d.style.accent, indent=half,
            align="right", after=0.4)
    due = f"Net {t.pick((15, 30, 45, 60))}"
    d.block("paragraph", [f"Invoice number: {number}", f"Date: {t.date()}", f"Terms: {due}",
                          f"Customer ID: {int(rng.integers(100000, 999999))}"], font, indent=half, align="right")
    d.y = max(d.y, y_left) + body
    y0 = d.y
    for i, label in enumerate(("Bill to", "Ship to")):
        d.y = y0
        name = t.name()
        d.block("heading", [label], bold, indent=i * half, width=half, after=0.1)
        d.block("paragraph", [name, t.company(), *t.address()], font, indent=i * half, width=half)
    rows = [["Item", "Description", "Qty", "Unit price", "Amount"]]
    total = 0.0
    for _ in range(int(rng.integers(3, 12)) + 28 * (d.n_pages - 1)):
        qty, price = int(rng.integers(1, 50)), float(rng.uniform(2, 900))
        total += qty * price
        rows.append([f"{int(rng.integers(1000, 9999))}", t.title(2, 5), str(qty), f"{price:,.2f}",
                     f"{qty * price:,.2f}"])
    d.y += body
    d.table(rows, size=body - 1, numeric=(False, False, True, True, True), weights=(1.1, 4.0, 0.8, 1.6, 1.8))
    tax = float(rng.choice((0.0, 0.05, 0.07, 0.1, 0.2)))
    d.ensure(body * 6)
    d.block("paragraph", [f"Subtotal: ${total:,.2f}", f"Tax ({tax:.0%}): ${total * tax:,.2f}"], font,
            indent=half, align="right", after=0.1)
    d.block("paragraph", [f"Total due: ${total * (1 + tax):,.2f}"], bold, indent=half, align="right", after=1.0)
    d.heading(t.pick(("Notes", "Terms and conditions", "Payment instructions")), body + 2)
    for _ in range(50):
        d.block("paragraph", [t.paragraph(1, 3)], d.font(REGULAR, body - 1))
        if d.done:
            break


def _form(d: _Doc) -> None:
    t, rng, body = d.text, d.rng, d.style.body
    label_font, value_font = d.font(BOLD, body - 2), d.font(REGULAR, body)
    pen = ((20, 40, 140), (15, 15, 15))[int(rng.integers(2))]
    form_no = f"Form {t.pick('ABCDEFGH')}-{int(rng.integers(10, 999))}"

    def footer(d: _Doc) -> None:
        size = max(12, body - 3)
        d.page.fixed("footer", f"{form_no}  (Rev. {t.date()})", d.left, d.size[1] - d.bottom_margin + 4,
                     d.full_width, d.font(REGULAR, size), d.style.ink, "left")
        if d.n_pages > 1:
            _page_number(d, "right", f"Page {d.index + 1} of {d.n_pages}")

    d.footer = footer
    d.new_page()
    kind = t.pick(("Application Form", "Registration Form", "Request Form", "Claim Form", "Enrolment Form"))
    d.block("title", [f"{t.title(1, 3)} {kind}"], d.font(BOLD, body + 10), fill=d.style.accent, align="center")
    d.block("paragraph", [t.paragraph(2, 3)], d.font(ITALIC, body - 1))
    sections = [_FORM_SECTIONS[i] for i in rng.permutation(len(_FORM_SECTIONS))]
    for s in range(40):
        if s < len(sections):
            title, labels = sections[s]
        else:
            title, labels = t.title(1, 3), tuple(t.title(1, 2) for _ in range(int(rng.integers(2, 5))))
        d.heading(f"{s + 1}. {title}", body + 2)
        per_row = int(rng.integers(1, 3))
        for i in range(0, len(labels), per_row):
            _field_row(d, labels[i:i + per_row], label_font, value_font, pen)
        if rng.random() < 0.6:
            options = [t.sentence_case(2, 5) for _ in range(int(rng.integers(3, 6)))]
            d.block("paragraph", [t.sentence(18)], d.font(REGULAR, body - 1), after=0.3)
            _checkboxes(d, options, value_font, pen)
        if d.done:
            break
    d.ensure(body * 4)
    _field_row(d, ("Signature", "Date"), label_font, value_font, pen, values=("", t.date()))


def _field_value(t: _Text, label: str, name: str) -> str:
    key = label.lower()
    if key == "employer":
        return t.company()
    if "name" in key:
        return name
    if "date" in key:
        return t.date()
    if "email" in key:
        return t.email(name)
    if "telephone" in key:
        return t.phone()
    if "street" in key:
        return t.address()[0]
    if key == "city":
        return t.pick(_CITIES).split(",")[0]
    if "postal" in key or "number" in key:
        return str(int(t.rng.integers(10000, 99999999)))
    if "income" in key or "amount" in key:
        return t.money(100, 90000)
    if key == "country":
        return t.pick(("United States", "Canada", "Ireland", "Australia", "New Zealand"))
    if key == "relationship":
        return t.pick(("Spouse", "Parent", "Sibling", "Friend"))
    if "method" in key:
        return t.pick(("Bank transfer", "Cheque", "Credit card"))
    if "title" in key:
        return t.pick(_JOBS)
    return t.sentence_case(1, 4)


def _field_row(d: _Doc, labels: Sequence[str], label_font, value_font, pen: Colour,
               values: Sequence[str] | None = None) -> None:
    """Labelled boxes side by side, each filled in with a value; each field is one element."""
    rh_label, rh_box = round(label_font.size * 1.5), round(value_font.size * 1.9)
    d.ensure(rh_label + rh_box + 10)
    gap = 16
    w = (d.width - gap * (len(labels) - 1)) / len(labels)
    name = d.text.name()
    for i, label in enumerate(labels):
        x = d.x + i * (w + gap)
        block = d.page.new_block()
        boxes = d.page.text_line(_fit(label.split(), label_font, w), x, d.y, label_font, d.style.ink, block)
        by = d.y + rh_label
        frame = (x, by, x + w, by + rh_box)
        d.page.draw.rectangle(frame, outline=d.style.ink, width=1)
        value = values[i] if values is not None else _field_value(d.text, label, name)
        ty = by + (rh_box - sum(value_font.getmetrics())) / 2
        boxes += d.page.text_line(_fit(value.split(), value_font, w - 12), x + 6, ty, value_font, pen, block)
        d.page.layout.append(("paragraph", _union(boxes + [tuple(float(v) for v in frame)])))
    d.y += rh_label + rh_box + 12


def _checkboxes(d: _Doc, options: Sequence[str], font, pen: Colour) -> None:
    """A list of options with square boxes, some ticked with an X (drawn, not text)."""
    size = font.size
    lh = round(size * 1.6)
    d.ensure(lh * len(options))
    block, boxes = d.page.new_block(), []
    for text in options:
        if d.y + lh > d.bottom:
            break
        x, y = d.x, d.y + (lh - size) / 2
        d.page.draw.rectangle((x, y, x + size, y + size), outline=d.style.ink, width=1)
        boxes.append((float(x), float(y), float(x + size), float(y + size)))
        if d.rng.random() < 0.4:
            d.page.draw.line((x + 3, y + 3, x + size - 3, y + size - 3), fill=pen, width=2)
            d.page.draw.line((x + 3, y + size - 3, x + size - 3, y + 3), fill=pen, width=2)
        boxes += d.page.text_line(_fit(text.split(), font, d.width - size * 2), x + size * 1.6, d.y, font,
                                  d.style.ink, block)
        d.y += lh
    d._element("list", boxes)
    d.y += size


def _article(d: _Doc, sections: Sequence[str], numbered_headings: bool, figure_p: float, table_p: float,
             list_p: float) -> None:
    """Numbered sections of justified paragraphs with lists, captioned figures and tables."""
    t, rng, body = d.text, d.rng, d.style.body
    font = d.font(REGULAR, body)
    align = "justify" if rng.random() < 0.7 else "left"
    fig = tab = 1
    for s in range(60):
        name = sections[s] if s < len(sections) else t.title(1, 4)
        d.heading(f"{s + 1} {name}" if numbered_headings else name, body + 3)
        for k in range(int(rng.integers(1, 4))):
            if k and rng.random() < 0.4:
                d.heading(f"{s + 1}.{k} {t.title(2, 5)}" if numbered_headings else t.title(2, 5), body + 1)
            d.block("paragraph", [t.paragraph(3, 7)], font, align=align, after=0.7)
            if d.done:
                return
            u = rng.random()
            if u < list_p:
                numbered = rng.random() < 0.4
                items = [(f"{i + 1}." if numbered else "*", t.sentence(25)) for i in range(int(rng.integers(2, 5)))]
                d.block("list", items, font, indent=body, item_gap=0.2, after=0.7)
            elif u < list_p + figure_p:
                d.figure(float(rng.uniform(0.25, 0.45)) * d.full_width, f"Figure {fig}: {t.sentence(30)}")
                fig += 1
            elif u < list_p + figure_p + table_p:
                size = body - 2
                d.ensure(size * 10)
                d.block("caption", [f"Table {tab}: {t.sentence(25)}"], d.font(REGULAR, size), after=0.3)
                d.table(_numeric_table(t, rng), size=size, numeric=_LABEL_THEN_NUMBERS)
                tab += 1
            if d.done:
                return


_LABEL_THEN_NUMBERS = (False,) + (True,) * 6  # column alignment of _numeric_table


def _numeric_table(t: _Text, rng: np.random.Generator) -> list[list[str]]:
    """A header of years, quarters or words, then rows of a label and formatted numbers."""
    ncol = int(rng.integers(2, 5))
    kind = int(rng.integers(3))
    if kind == 0:
        y = int(rng.integers(2010, 2021))
        head = [str(y + i) for i in range(ncol)]
    elif kind == 1:
        head = [f"Q{i + 1}" for i in range(ncol)]
    else:
        head = [t.title(1, 1) for _ in range(ncol)]
    fmt = ("{:,.0f}", "{:.1f}", "{:.2f}", "{:.1f}%")[int(rng.integers(4))]
    scale = float(10 ** rng.integers(0, 5))
    rows = [[t.title(1, 2)] + head]
    for _ in range(int(rng.integers(3, 9))):
        rows.append([t.sentence_case(1, 3)] + [fmt.format(float(rng.uniform(0, 1)) * scale) for _ in range(ncol)])
    return rows


def _paper(d: _Doc, columns: int) -> None:
    t, rng, body = d.text, d.rng, d.style.body
    running = t.title(2, 5)

    def header(d: _Doc) -> None:
        if d.index > 0:
            size = max(12, body - 3)
            d.page.fixed("header", running, d.left, d.top, d.full_width, d.font(ITALIC, size), d.style.ink, "center")
            d.y += size * 1.6
            d.rule(gap=body)

    def footer(d: _Doc) -> None:
        if d.index == 0 and rng.random() < 0.5:
            d.page.fixed("footer", t.pick(("Preprint. Under review.", "Technical report.", "Draft for discussion.")),
                         d.left, d.size[1] - d.bottom_margin + 4, d.full_width, d.font(ITALIC, max(12, body - 3)),
                         d.style.ink)
        _page_number(d, "center")

    d.header, d.footer = header, footer
    d.new_page()
    d.block("title", [t.title(5, 12)], d.font(BOLD, int(rng.integers(22, 28))), align="center", leading=1.3,
            after=0.5)
    authors = ", ".join(t.name() for _ in range(int(rng.integers(1, 5))))
    d.block("paragraph", [authors], d.font(REGULAR, body + 1), align="center", after=0.2)
    d.block("paragraph", [f"Department of {t.pick(_FIELDS_OF_STUDY)}, University of {t.pick(_CITIES).split(',')[0]}"],
            d.font(ITALIC, body), align="center", after=1.0)
    d.block("heading", ["Abstract"], d.font(BOLD, body + 1), align="center", after=0.3)
    inset = d.full_width * 0.08
    d.block("paragraph", [t.paragraph(4, 7)], d.font(REGULAR, body - 1), align="justify", indent=inset,
            width=d.full_width - 2 * inset, after=1.0)
    d.set_columns(columns, gutter=int(rng.integers(20, 32)))
    sections = ["Introduction", *(_PAPER_SECTIONS[i] for i in rng.permutation(len(_PAPER_SECTIONS))[:4]),
                "Conclusion"]
    _article(d, sections, True, figure_p=0.2, table_p=0.12, list_p=0.15)


def _report(d: _Doc) -> None:
    t, rng, body = d.text, d.rng, d.style.body
    org, title = t.company(), t.title(3, 7)

    def header(d: _Doc) -> None:
        size = max(12, body - 3)
        d.page.fixed("header", org, d.left, d.top, d.full_width / 2, d.font(BOLD, size), d.style.accent)
        d.page.fixed("header", title, d.left + d.full_width / 2, d.top, d.full_width / 2, d.font(REGULAR, size),
                     d.style.ink, "right")
        d.y += size * 1.7
        d.rule(d.style.accent, gap=body * 1.5)

    def footer(d: _Doc) -> None:
        size = max(12, body - 3)
        y = d.size[1] - d.bottom_margin / 2 - size / 2
        d.page.fixed("footer", t.pick(("Confidential", "Internal use only", "Draft", "Public")) + f"  {date}",
                     d.left, y, d.full_width / 2, d.font(REGULAR, size), d.style.ink)
        _page_number(d, "right", f"Page {d.index + 1}")

    date = t.date()
    d.header, d.footer = header, footer
    d.new_page()
    d.block("title", [title], d.font(BOLD, int(rng.integers(26, 34))), fill=d.style.accent, leading=1.25, after=0.3)
    d.block("paragraph", [f"Prepared by {t.name()} for {t.company()}", date], d.font(REGULAR, body + 1),
            after=1.0)
    d.heading("Executive Summary", body + 4)
    d.block("paragraph", [t.paragraph(3, 6)], d.font(REGULAR, body), align="justify")
    sections = [_REPORT_SECTIONS[i] for i in rng.permutation(len(_REPORT_SECTIONS))]
    _article(d, sections, rng.random() < 0.7, figure_p=0.3, table_p=0.3, list_p=0.2)


def _slide(d: _Doc) -> None:
    t, rng, body = d.text, d.rng, d.style.body
    deck = t.title(2, 5)
    bar = ("top", "left", "none")[int(rng.integers(3))]

    def header(d: _Doc) -> None:
        w, h = d.size
        if bar == "top":
            d.page.draw.rectangle((0, 0, w, 14), fill=d.style.accent)
        elif bar == "left":
            d.page.draw.rectangle((0, 0, 16, h), fill=d.style.accent)

    def footer(d: _Doc) -> None:
        size = 16
        y = d.size[1] - d.bottom_margin / 2 - size / 2
        d.page.fixed("footer", deck, d.left, y, d.full_width / 2, d.font(REGULAR, size), d.style.ink)
        _page_number(d, "right", size=size)

    d.header, d.footer = header, footer
    for i in range(d.n_pages):
        d.new_page()
        if i == 0:
            d.y = d.size[1] * 0.3
            d.block("title", [t.title(3, 7)], d.font(BOLD, int(rng.integers(40, 52))), fill=d.style.accent,
                    align="center", leading=1.2, after=0.4)
            d.block("paragraph", [t.sentence_case(4, 9)], d.font(REGULAR, body + 2), align="center", after=1.2)
            d.block("paragraph", [t.name(), t.date()], d.font(REGULAR, body - 2), align="center")
            continue
        d.block("title", [t.title(2, 6)], d.font(BOLD, int(rng.integers(32, 40))), fill=d.style.accent,
                leading=1.2, after=0.2)
        d.rule(d.style.accent, 2, gap=body)
        layout = ("bullets", "bullets_chart", "chart", "table")[int(rng.integers(4))]
        if layout == "table":
            d.table(_numeric_table(t, rng)[:6], size=body - 4, numeric=_LABEL_THEN_NUMBERS)
            continue
        if layout == "chart":
            d.figure(d.bottom - d.y - 60, t.sentence(15))
            continue
        if layout == "bullets_chart":
            d.set_columns(2, gutter=40)
        font = d.font(REGULAR, body)
        lh = round(body * 1.35)
        items = []
        for _ in range(int(rng.integers(3, 7))):
            text = t.sentence(14) if rng.random() < 0.5 else t.sentence_case(3, 8)
            need = (sum(len(_wrap(x.split(), font, d.width - body * 1.5)) for _, x in items + [("*", text)])
                    * lh + len(items) * lh * 0.5)
            if not d.fits(need + lh):
                break
            items.append(("*", text))
        d.block("list", items, font, leading=1.35, item_gap=0.5)
        if layout == "bullets_chart":
            d.next_column()
            d.figure(min(d.width * 0.9, d.bottom - d.y - 20))


_BUILDERS: dict[str, Callable[[_Doc], None]] = {
    "letter": _letter, "invoice": _invoice, "form": _form,
    "paper_1col": lambda d: _paper(d, 1), "paper_2col": lambda d: _paper(d, 2),
    "report": _report, "slide": _slide,
}


# ----------------------------------------------------------------------------- degradations


def _rotate_boxes(boxes: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Axis-aligned boxes enclosing the rotated corners of boxes [n, 4]."""
    x0, y0, x1, y1 = boxes.T
    corners = np.stack([np.stack([x0, y0], -1), np.stack([x1, y0], -1), np.stack([x0, y1], -1),
                        np.stack([x1, y1], -1)], 1)  # [n, 4, 2]
    moved = corners @ m[:, :2].T + m[:, 2]
    return np.concatenate([moved.min(1), moved.max(1)], -1)


def _degrade(rng: np.random.Generator, image: np.ndarray, boxes: np.ndarray, style: _Style
             ) -> tuple[np.ndarray, np.ndarray]:
    """Scan-like tilt, uneven light, blur, noise and JPEG; boxes follow the tilt."""
    h, w = image.shape[:2]
    if style.scan:
        angle = float(rng.uniform(-1.0, 1.0))
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        image = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=style.paper)
        if len(boxes):
            boxes = _rotate_boxes(boxes, m)
        light = np.linspace(1.0 - float(rng.uniform(0, 0.06)), 1.0, h if rng.random() < 0.5 else w, dtype=np.float32)
        light = light[:, None] if light.shape[0] == h else light[None, :]
        sigma = float(rng.uniform(0.3, 0.8))
        img = cv2.GaussianBlur(image, (0, 0), sigma).astype(np.float32) * light[..., None]
        img += rng.standard_normal((h, w), dtype=np.float32)[..., None] * float(rng.uniform(2, 7))
        image = np.clip(img, 0, 255).astype(np.uint8)
    if style.scan or rng.random() < 0.3:
        quality = int(rng.integers(45, 90) if style.scan else rng.integers(75, 95))
        ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        image = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    boxes = np.clip(boxes, 0, [w, h, w, h])
    return np.ascontiguousarray(image), np.round(boxes, 1)


# ----------------------------------------------------------------------------- entry point


def generate(index: int, seed: int = 0, *, min_pages: int = 1, max_pages: int = 4,
             category: str | None = None) -> tuple[Document, list[np.ndarray]]:
    """One synthetic document and its RGB uint8 page images, deterministic in (index, seed).

    The category is drawn from the same rng unless `category` forces one.
    """
    if index < 0 or seed < 0:
        raise ValueError(f"synth.generate: index and seed must be >= 0, got index={index}, seed={seed}")
    if not 1 <= min_pages <= max_pages:
        raise ValueError(f"synth.generate: need 1 <= min_pages <= max_pages, got {min_pages}, {max_pages}")
    if category is not None and category not in CATEGORIES:
        raise ValueError(f"synth.generate: category {category!r} is not one of {', '.join(CATEGORIES)}")
    rng = np.random.default_rng([seed, index])
    drawn = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
    category = category or drawn
    n_pages = int(rng.integers(min_pages, max_pages + 1))
    style = _style(rng, category)
    if category == "slide":
        size, margins, last_fill = _SLIDE_SIZE, (60, 50, 60, 60), 1.0
    else:
        size = _PAPER_SIZES[int(rng.integers(len(_PAPER_SIZES)))]
        m = int(rng.integers(56, 96))
        margins, last_fill = (m, int(rng.integers(50, 80)), m, int(rng.integers(60, 90))), float(rng.uniform(0.5, 1.0))
    doc = _Doc(rng, size, n_pages, style, margins, last_fill)
    try:
        _BUILDERS[category](doc)
    except _Full:
        pass
    doc.close_page()

    pages, images = [], []
    for p in doc.pages:
        boxes = np.array([b for _, b, _, _ in p.words] + [b for _, b in p.layout], dtype=np.float64).reshape(-1, 4)
        image, boxes = _degrade(rng, np.array(p.image), boxes, style)
        n = len(p.words)
        words = [Word(text, tuple(boxes[i].tolist()), 1.0, block, line, i)
                 for i, (text, _, block, line) in enumerate(p.words)]
        layout = [LayoutElement(cls, tuple(boxes[n + j].tolist())) for j, (cls, _) in enumerate(p.layout)]
        pages.append(Page(width=p.width, height=p.height, dpi=DPI, words=words, layout=layout))
        images.append(image)
    return Document(doc_id=f"synth-{seed}-{index:07d}", source="synth", pages=pages, category=category), images

"""Flowing content (paragraphs, lists, tables, figures) across columns and pages.

Category modules describe a document as a sequence of blocks; this module breaks them into
lines, columns and pages, and records each layout element.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from docjepa.data.ocr import Fact
from docjepa.data.synth.chart import _chart
from docjepa.data.synth.page import Box, _fit, _Page, _union, _wrap
from docjepa.data.synth.style import BOLD, ITALIC, REGULAR, Colour, _font, _Style
from docjepa.data.synth.text import _Text


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
        self.facts: list[Fact] = []

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

    def fact(self, text: str, question: str = "", entity: str = "") -> None:
        """Keep a value just drawn, for the stage-2 QA and NER tasks, with the page it landed on.

        The page is the current one or, for a block that moved on to a new page after drawing the
        value, the one before, whichever holds the value's text; a value that line fitting cut or
        dropped is not kept, so every kept value can be read on its page.
        """
        for i in range(len(self.pages) - 1, max(-1, len(self.pages) - 3), -1):
            if text in " ".join(w for w, _, _, _ in self.pages[i].words):
                self.facts.append(Fact(text, i, question, entity))
                return

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


# A category: fills a _Doc with pages (generate catches _Full when the page budget runs out).
Builder = Callable[[_Doc], None]


def _page_number(d: _Doc, align: str, text: str | None = None, size: int | None = None) -> None:
    size = size or max(12, d.style.body - 3)
    y = d.size[1] - d.bottom_margin / 2 - size / 2
    d.page.fixed("page_number", text or str(d.index + 1), d.left, y, d.full_width, d.font(REGULAR, size),
                 d.style.ink, align)

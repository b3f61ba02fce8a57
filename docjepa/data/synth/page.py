"""Drawing one page: line breaking, and words drawn one at a time so each has its exact ink box."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from docjepa.data.synth.style import Colour

Box = tuple[float, float, float, float]


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

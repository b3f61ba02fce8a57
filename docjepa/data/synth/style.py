"""A document's look (font family, sizes, ink, paper, scanned or not), drawn once per document.

Fonts come from the Debian packages fonts-dejavu-core and fonts-liberation (see the Makefile).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ImageFont

from docjepa.data.synth.text import _choice

Colour = tuple[int, int, int]

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


@functools.lru_cache(maxsize=64)
def _x_height_ratio(name: str) -> float:
    """x-height over the font size, measured on the rendered glyph (0.46 for Times-like faces,
    0.55 for DejaVu Sans)."""
    top, bottom = _font(name, 100).getbbox("x")[1::2]
    return (bottom - top) / 100


def _legible(style: _Style, min_x_height: float) -> _Style:
    """`style` with its body size raised, if needed, to an x-height of `min_x_height` canvas px."""
    body = math.ceil(min_x_height / _x_height_ratio(style.family[REGULAR]))
    return dataclasses.replace(style, body=max(style.body, body))

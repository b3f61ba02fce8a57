"""Synthetic multi-page documents with exact OCR ground truth: words, boxes, reading order, layout.

In the spirit of SynthDoG (Kim et al. 2022, "OCR-free Document Understanding Transformer"):
real sentences are typeset with real fonts into the layouts of seven document categories, so
every word's box, reading-order index and layout element are known exactly rather than
estimated by an OCR engine. The text is English prose from the docstrings of the Python standard
library, read from source with `ast` (nothing is imported, and `python -OO` does not matter).
Scan-like degradations (tilt <= 1 degree, blur, noise, uneven light, JPEG) are applied after
layout, and the word and layout boxes are carried through the tilt. The values the builders place
(totals, dates, names, section titles) are kept with their pages as `Document.facts`, from which
docjepa.data.tasks builds stage-2 question and entity pairs.

    doc, images = generate(index, seed)   # deterministic in (index, seed)

Shared pieces: text (words), style (fonts, colours), page (drawing words with their boxes),
chart, flow (blocks across columns and pages), article (sectioned prose), degrade. Each
category is one module with a BUILDERS entry; a new category is a new module plus one line below.
"""

from __future__ import annotations

import numpy as np

from docjepa.data.ocr import Document, LayoutElement, Page, Word
from docjepa.data.synth import form, invoice, letter, paper, report, slide
from docjepa.data.synth.degrade import _degrade, _rotate_boxes  # noqa: F401  (_rotate_boxes: tests)
from docjepa.data.synth.flow import Builder, _Doc, _Full
from docjepa.data.synth.style import _legible, _style

# The order is part of the output: generate draws an index into CATEGORIES from the document's rng.
_BUILDERS: dict[str, Builder] = {**letter.BUILDERS, **invoice.BUILDERS, **form.BUILDERS, **paper.BUILDERS,
                                 **report.BUILDERS, **slide.BUILDERS}
CATEGORIES: tuple[str, ...] = tuple(_BUILDERS)
# Categories whose body flows on for as many pages as asked (long documents: numbered sections
# continue across pages, the running header repeats the title and organisation).
LONG_CATEGORIES: tuple[str, ...] = ("report", "paper_1col", "paper_2col")

DPI = 96.0  # page sizes below are at 96 dpi
_PAPER_SIZES = ((816, 1056), (794, 1123))  # US letter, A4
_SLIDE_SIZE = (1024, 768)  # 4:3 slide


def generate(index: int, seed: int = 0, *, min_pages: int = 1, max_pages: int = 4,
             category: str | None = None, min_x_height: float = 0.0,
             page_width: int = 0) -> tuple[Document, list[np.ndarray]]:
    """One synthetic document and its RGB uint8 page images, deterministic in (index, seed).

    The category is drawn from the same rng unless `category` forces one. With `min_x_height`
    and `page_width`, the body text is set large enough that its x-height is at least
    `min_x_height` px once the page is resized to `page_width` px wide (an encoder cannot learn
    to read text a few pixels high; headings and tables scale with the body).
    """
    if index < 0 or seed < 0:
        raise ValueError(f"synth.generate: index and seed must be >= 0, got index={index}, seed={seed}")
    if not 1 <= min_pages <= max_pages:
        raise ValueError(f"synth.generate: need 1 <= min_pages <= max_pages, got {min_pages}, {max_pages}")
    if min_x_height < 0 or page_width < 0 or (min_x_height > 0) != (page_width > 0):
        raise ValueError(f"synth.generate: min_x_height and page_width go together and are >= 0, got "
                         f"{min_x_height}, {page_width}")
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
    if min_x_height:
        style = _legible(style, min_x_height * size[0] / page_width)
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
    return Document(doc_id=f"synth-{seed}-{index:07d}", source="synth", pages=pages, category=category,
                    facts=doc.facts), images

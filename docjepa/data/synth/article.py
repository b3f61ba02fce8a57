"""Sectioned prose with lists, figures and numeric tables: the body of papers and reports (slides reuse the tables)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from docjepa.data.synth.flow import _Doc
from docjepa.data.synth.style import REGULAR
from docjepa.data.synth.text import _Text


def _article(d: _Doc, sections: Sequence[str], numbered_headings: bool, figure_p: float, table_p: float,
             list_p: float) -> None:
    """Numbered sections of justified paragraphs with lists, captioned figures and tables."""
    t, rng, body = d.text, d.rng, d.style.body
    font = d.font(REGULAR, body)
    align = "justify" if rng.random() < 0.7 else "left"
    fig = tab = 1
    for s in range(400):  # sections until the document's pages are full
        name = sections[s] if s < len(sections) else t.title(1, 4)
        d.heading(f"{s + 1} {name}" if numbered_headings else name, body + 3)
        d.fact(name, f"What is the title of section {s + 1}?")  # the (s+1)-th, numbered on the page or not
        for k in range(int(rng.integers(1, 4))):
            if k and rng.random() < 0.4:
                sub = t.title(2, 5)
                d.heading(f"{s + 1}.{k} {sub}" if numbered_headings else sub, body + 1)
                if numbered_headings:
                    d.fact(sub, f"What is the title of section {s + 1}.{k}?")
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

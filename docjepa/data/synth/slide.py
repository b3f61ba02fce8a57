"""Category "slide": a 4:3 deck, a title slide then bullets, charts and tables."""

from __future__ import annotations

from docjepa.data.synth.article import _LABEL_THEN_NUMBERS, _numeric_table
from docjepa.data.synth.flow import Builder, _Doc, _page_number
from docjepa.data.synth.page import _wrap
from docjepa.data.synth.style import BOLD, REGULAR


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
            title = t.title(3, 7)
            d.block("title", [title], d.font(BOLD, int(rng.integers(40, 52))), fill=d.style.accent,
                    align="center", leading=1.2, after=0.4)
            d.fact(title, "What is the title of the presentation?")
            d.block("paragraph", [t.sentence_case(4, 9)], d.font(REGULAR, body + 2), align="center", after=1.2)
            speaker, date = t.name(), t.date()
            d.block("paragraph", [speaker, date], d.font(REGULAR, body - 2), align="center")
            d.fact(speaker, "Who is giving the presentation?", "PERSON")
            d.fact(date, "What is the date of the presentation?", "DATE")
            continue
        title = t.title(2, 6)
        d.block("title", [title], d.font(BOLD, int(rng.integers(32, 40))), fill=d.style.accent,
                leading=1.2, after=0.2)
        d.fact(title, f"What is the title of slide {i + 1}?")
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


BUILDERS: dict[str, Builder] = {"slide": _slide}

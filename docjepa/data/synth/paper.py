"""Categories "paper_1col" and "paper_2col": a scientific paper, one builder with a column count."""

from __future__ import annotations

from docjepa.data.synth.article import _article
from docjepa.data.synth.flow import Builder, _Doc, _page_number
from docjepa.data.synth.style import BOLD, ITALIC, REGULAR
from docjepa.data.synth.text import _CITIES

_FIELDS_OF_STUDY = ("Computer Science", "Mathematics", "Physics", "Statistics", "Linguistics",
                    "Electrical Engineering", "Economics", "Information Science")
_PAPER_SECTIONS = ("Related Work", "Background", "Method", "Approach", "Experiments", "Results",
                   "Discussion", "Analysis", "Limitations", "Implementation Details", "Evaluation")


def _paper(d: _Doc, columns: int) -> None:
    t, rng, body = d.text, d.rng, d.style.body
    running = t.title(2, 5)

    def header(d: _Doc) -> None:
        if d.index > 0:
            size = max(12, body - 3)
            d.page.fixed("header", running, d.left, d.top, d.full_width, d.font(ITALIC, size), d.style.ink, "center")
            d.fact(running, "What is the running head of the paper?")
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
    title = t.title(5, 12)
    d.block("title", [title], d.font(BOLD, int(rng.integers(22, 28))), align="center", leading=1.3, after=0.5)
    d.fact(title, "What is the title of the paper?")
    authors = [t.name() for _ in range(int(rng.integers(1, 5)))]
    d.block("paragraph", [", ".join(authors)], d.font(REGULAR, body + 1), align="center", after=0.2)
    d.fact(authors[0], "Who is the first author of the paper?", "PERSON")
    for name in authors[1:]:
        d.fact(name, entity="PERSON")
    department, university = t.pick(_FIELDS_OF_STUDY), f"University of {t.pick(_CITIES).split(',')[0]}"
    d.block("paragraph", [f"Department of {department}, {university}"], d.font(ITALIC, body), align="center",
            after=1.0)
    d.fact(university, "Which university are the authors from?", "ORG")
    d.block("heading", ["Abstract"], d.font(BOLD, body + 1), align="center", after=0.3)
    inset = d.full_width * 0.08
    d.block("paragraph", [t.paragraph(4, 7)], d.font(REGULAR, body - 1), align="justify", indent=inset,
            width=d.full_width - 2 * inset, after=1.0)
    d.set_columns(columns, gutter=int(rng.integers(20, 32)))
    sections = ["Introduction", *(_PAPER_SECTIONS[i] for i in rng.permutation(len(_PAPER_SECTIONS))[:4]),
                "Conclusion"]
    _article(d, sections, True, figure_p=0.2, table_p=0.12, list_p=0.15)


BUILDERS: dict[str, Builder] = {"paper_1col": lambda d: _paper(d, 1), "paper_2col": lambda d: _paper(d, 2)}

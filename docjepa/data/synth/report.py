"""Category "report": a business report with running header, executive summary and sectioned body."""

from __future__ import annotations

from docjepa.data.synth.article import _article
from docjepa.data.synth.flow import Builder, _Doc, _page_number
from docjepa.data.synth.style import BOLD, REGULAR

_REPORT_SECTIONS = ("Background", "Scope", "Methodology", "Findings", "Financial Overview", "Risk Assessment",
                    "Recommendations", "Next Steps", "Operations", "Market Review", "Appendix")


def _report(d: _Doc) -> None:
    t, rng, body = d.text, d.rng, d.style.body
    org, title = t.company(), t.title(3, 7)

    def header(d: _Doc) -> None:
        size = max(12, body - 3)
        d.page.fixed("header", org, d.left, d.top, d.full_width / 2, d.font(BOLD, size), d.style.accent)
        d.fact(org, "Which organisation issued the report?", "ORG")
        d.page.fixed("header", title, d.left + d.full_width / 2, d.top, d.full_width / 2, d.font(REGULAR, size),
                     d.style.ink, "right")
        d.y += size * 1.7
        d.rule(d.style.accent, gap=body * 1.5)

    def footer(d: _Doc) -> None:
        size = max(12, body - 3)
        y = d.size[1] - d.bottom_margin / 2 - size / 2
        d.page.fixed("footer", t.pick(("Confidential", "Internal use only", "Draft", "Public")) + f"  {date}",
                     d.left, y, d.full_width / 2, d.font(REGULAR, size), d.style.ink)
        d.fact(date, entity="DATE")
        _page_number(d, "right", f"Page {d.index + 1}")

    date = t.date()
    d.header, d.footer = header, footer
    d.new_page()
    d.block("title", [title], d.font(BOLD, int(rng.integers(26, 34))), fill=d.style.accent, leading=1.25, after=0.3)
    d.fact(title, "What is the title of the report?")
    author, client = t.name(), t.company()
    d.block("paragraph", [f"Prepared by {author} for {client}", date], d.font(REGULAR, body + 1), after=1.0)
    d.fact(author, "Who prepared the report?", "PERSON")
    d.fact(client, "Which company was the report prepared for?", "ORG")
    d.fact(date, "What is the date of the report?", "DATE")
    d.heading("Executive Summary", body + 4)
    d.block("paragraph", [t.paragraph(3, 6)], d.font(REGULAR, body), align="justify")
    sections = [_REPORT_SECTIONS[i] for i in rng.permutation(len(_REPORT_SECTIONS))]
    _article(d, sections, rng.random() < 0.7, figure_p=0.3, table_p=0.3, list_p=0.2)


BUILDERS: dict[str, Builder] = {"report": _report}

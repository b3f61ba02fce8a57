"""Category "letter": letterhead, addresses, prose body, closing and a scribbled signature."""

from __future__ import annotations

import numpy as np

from docjepa.data.synth.flow import Builder, _Doc, _page_number
from docjepa.data.synth.style import BOLD, REGULAR
from docjepa.data.synth.text import _JOBS

_CLOSINGS = ("Sincerely,", "Yours faithfully,", "Kind regards,", "Best regards,", "Yours truly,")


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
            d.fact(recipient, entity="PERSON")
            d.fact(date, entity="DATE")
            d.y += size * 3

    def footer(d: _Doc) -> None:
        if d.index == 0 and rng.random() < 0.6:
            size = max(12, body - 4)
            address, phone = t.address(), t.phone()
            d.page.fixed("footer", f"{company}  {' '.join(address)}  {phone}", d.left,
                         d.size[1] - d.bottom_margin + 6, d.full_width, d.font(REGULAR, size), d.style.accent, "center")
            d.fact(company, entity="ORG")
            d.fact(phone, entity="PHONE")
        if d.n_pages > 1:
            _page_number(d, "right", f"Page {d.index + 1} of {d.n_pages}")

    d.header, d.footer = header, footer
    d.new_page()
    head_align = ("left", "center")[int(rng.integers(2))]
    d.block("title", [company], d.font(BOLD, int(rng.integers(24, 32))), fill=d.style.accent, align=head_align,
            after=0.1)
    d.fact(company, "Which company is the letter from?", "ORG")
    address, phone = t.address(), t.phone()
    d.block("paragraph", [", ".join(address) + "  " + phone], d.font(REGULAR, body - 2),
            fill=d.style.accent, align=head_align, after=0.3)
    d.fact(phone, entity="PHONE")
    d.rule(d.style.accent, 2, gap=body * 2)
    d.block("paragraph", [date], font, align=("left", "right")[int(rng.integers(2))], after=1.0)
    d.fact(date, "What is the date of the letter?", "DATE")
    job, employer = t.pick(_JOBS), t.company()
    d.block("paragraph", [recipient, job, employer, *t.address()], font, after=1.0)
    d.fact(recipient, "Who is the letter addressed to?", "PERSON")
    d.fact(job, "What is the recipient's job title?")
    d.fact(employer, "Which company does the recipient work for?", "ORG")
    subject = t.title(3, 7)
    d.block("heading", [f"Re: {subject}"], d.font(BOLD, body), after=0.8)
    d.fact(subject, "What is the subject of the letter?")
    d.block("paragraph", [f"Dear {recipient.split()[0]},"], font, after=0.8)
    align = ("left", "justify")[int(rng.integers(2))]
    while not d.done:
        d.block("paragraph", [t.paragraph(2, 5)], font, align=align, after=0.9)
    closing = t.pick(_CLOSINGS)
    d.block("paragraph", [closing], font, after=0.5)
    d.fact(closing, "How does the letter close?")
    d.ensure(body * 3)
    _signature(d)
    sender_job = t.pick(_JOBS)
    d.block("paragraph", [sender, sender_job], font)
    d.fact(sender, "Who signed the letter?", "PERSON")
    d.fact(sender_job, "What is the sender's job title?")


def _signature(d: _Doc) -> None:
    """A handwritten-looking scribble (ink, but no words)."""
    n = 40
    xs = d.x + np.linspace(0, float(d.rng.uniform(120, 200)), n)
    ys = d.y + d.style.body + np.cumsum(d.rng.normal(0, 2.5, n)) + 8 * np.sin(np.linspace(0, 9, n))
    d.page.draw.line(list(zip(xs.tolist(), ys.tolist())), fill=(20, 30, 120), width=2)
    d.y += d.style.body * 3


BUILDERS: dict[str, Builder] = {"letter": _letter}

"""Category "form": numbered sections of labelled boxes filled in with plausible values, and checkboxes."""

from __future__ import annotations

from collections.abc import Sequence

from docjepa.data.synth.flow import Builder, _Doc, _page_number
from docjepa.data.synth.page import _fit, _union
from docjepa.data.synth.style import BOLD, ITALIC, REGULAR, Colour
from docjepa.data.synth.text import _CITIES, _JOBS, _Text

_FORM_SECTIONS = (
    ("Personal information", ("Full name", "Date of birth", "Email address", "Telephone")),
    ("Address", ("Street address", "City", "Postal code", "Country")),
    ("Employment", ("Employer", "Job title", "Start date", "Annual income")),
    ("Account details", ("Account number", "Reference number", "Amount requested", "Payment method")),
    ("Emergency contact", ("Contact name", "Relationship", "Telephone")),
)


def _form(d: _Doc) -> None:
    t, rng, body = d.text, d.rng, d.style.body
    label_font, value_font = d.font(BOLD, body - 2), d.font(REGULAR, body)
    pen = ((20, 40, 140), (15, 15, 15))[int(rng.integers(2))]
    form_no = f"Form {t.pick('ABCDEFGH')}-{int(rng.integers(10, 999))}"

    def footer(d: _Doc) -> None:
        size = max(12, body - 3)
        revised = t.date()
        d.page.fixed("footer", f"{form_no}  (Rev. {revised})", d.left, d.size[1] - d.bottom_margin + 4,
                     d.full_width, d.font(REGULAR, size), d.style.ink, "left")
        d.fact(form_no, "What is the form number?")
        d.fact(revised, entity="DATE")
        if d.n_pages > 1:
            _page_number(d, "right", f"Page {d.index + 1} of {d.n_pages}")

    d.footer = footer
    d.new_page()
    kind = t.pick(("Application Form", "Registration Form", "Request Form", "Claim Form", "Enrolment Form"))
    title = f"{t.title(1, 3)} {kind}"
    d.block("title", [title], d.font(BOLD, body + 10), fill=d.style.accent, align="center")
    d.fact(title, "What is the title of the form?")
    d.block("paragraph", [t.paragraph(2, 3)], d.font(ITALIC, body - 1))
    sections = [_FORM_SECTIONS[i] for i in rng.permutation(len(_FORM_SECTIONS))]
    for s in range(40):
        if s < len(sections):
            title, labels = sections[s]
        else:
            title, labels = t.title(1, 3), tuple(t.title(1, 2) for _ in range(int(rng.integers(2, 5))))
        d.heading(f"{s + 1}. {title}", body + 2)
        d.fact(title, f"What is the title of section {s + 1}?")
        per_row = int(rng.integers(1, 3))
        for i in range(0, len(labels), per_row):
            _field_row(d, labels[i:i + per_row], label_font, value_font, pen, f"section {s + 1}")
        if rng.random() < 0.6:
            options = [t.sentence_case(2, 5) for _ in range(int(rng.integers(3, 6)))]
            d.block("paragraph", [t.sentence(18)], d.font(REGULAR, body - 1), after=0.3)
            _checkboxes(d, options, value_font, pen)
        if d.done:
            break
    d.ensure(body * 4)
    _field_row(d, ("Signature", "Date"), label_font, value_font, pen, "the signature block",
               values=(("", ""), (t.date(), "DATE")))


def _field_value(t: _Text, label: str, name: str) -> tuple[str, str]:
    """A plausible value for the field `label`, and its entity type ("" if none)."""
    key = label.lower()
    if key == "employer":
        return t.company(), "ORG"
    if "name" in key:
        return name, "PERSON"
    if "date" in key:
        return t.date(), "DATE"
    if "email" in key:
        return t.email(name), "EMAIL"
    if "telephone" in key:
        return t.phone(), "PHONE"
    if "street" in key:
        return t.address()[0], ""
    if key == "city":
        return t.pick(_CITIES).split(",")[0], ""
    if "postal" in key or "number" in key:
        return str(int(t.rng.integers(10000, 99999999))), ""
    if "income" in key or "amount" in key:
        return t.money(100, 90000), "MONEY"
    if key == "country":
        return t.pick(("United States", "Canada", "Ireland", "Australia", "New Zealand")), ""
    if key == "relationship":
        return t.pick(("Spouse", "Parent", "Sibling", "Friend")), ""
    if "method" in key:
        return t.pick(("Bank transfer", "Cheque", "Credit card")), ""
    if "title" in key:
        return t.pick(_JOBS), ""
    return t.sentence_case(1, 4), ""


def _field_row(d: _Doc, labels: Sequence[str], label_font, value_font, pen: Colour, where: str,
               values: Sequence[tuple[str, str]] | None = None) -> None:
    """Labelled boxes side by side, each filled in with a value; each field is one element, and
    its value is kept as the answer to "what is entered as LABEL in WHERE?"."""
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
        value, entity = values[i] if values is not None else _field_value(d.text, label, name)
        ty = by + (rh_box - sum(value_font.getmetrics())) / 2
        drawn = _fit(value.split(), value_font, w - 12)
        boxes += d.page.text_line(drawn, x + 6, ty, value_font, pen, block)
        d.page.layout.append(("paragraph", _union(boxes + [tuple(float(v) for v in frame)])))
        if drawn and drawn == value.split():  # a value cut to fit its box is not the value
            d.fact(value, f"What is entered as {label} in {where}?", entity)
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


BUILDERS: dict[str, Builder] = {"form": _form}

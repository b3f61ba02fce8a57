"""Category "invoice": seller and buyer blocks, a long ruled table of line items, totals and notes."""

from __future__ import annotations

from docjepa.data.synth.flow import Builder, _Doc, _page_number
from docjepa.data.synth.style import BOLD, REGULAR


def _invoice(d: _Doc) -> None:
    t, rng, body = d.text, d.rng, d.style.body
    font, bold = d.font(REGULAR, body), d.font(BOLD, body)
    company, number = t.company(), f"INV-{int(rng.integers(2015, 2025))}-{int(rng.integers(1, 99999)):05d}"

    def footer(d: _Doc) -> None:
        size = max(12, body - 3)
        phone = t.phone()
        d.page.fixed("footer", f"{company}  {phone}  Thank you for your business.", d.left,
                     d.size[1] - d.bottom_margin + 4, d.full_width, d.font(REGULAR, size), d.style.accent, "left")
        d.fact(company, entity="ORG")
        d.fact(phone, entity="PHONE")
        if d.n_pages > 1:
            _page_number(d, "right", f"Page {d.index + 1} of {d.n_pages}")

    def header(d: _Doc) -> None:
        if d.index > 0:
            d.page.fixed("header", f"Invoice {number}", d.left, d.top, d.full_width, d.font(REGULAR, body - 2),
                         d.style.ink, "right")
            d.y += body * 2.5

    d.header, d.footer = header, footer
    d.new_page()
    y0, half = d.y, d.full_width / 2
    d.block("heading", [company], d.font(BOLD, body + 6), fill=d.style.accent, width=half, after=0.2)
    d.fact(company, "Which company issued the invoice?", "ORG")
    address, phone = t.address(), t.phone()
    d.block("paragraph", [*address, phone], font, width=half)
    d.fact(phone, entity="PHONE")
    y_left, d.y = d.y, y0
    d.block("title", ["INVOICE"], d.font(BOLD, int(rng.integers(28, 38))), fill=d.style.accent, indent=half,
            align="right", after=0.4)
    due = f"Net {t.pick((15, 30, 45, 60))}"
    date, customer = t.date(), str(int(rng.integers(100000, 999999)))
    d.block("paragraph", [f"Invoice number: {number}", f"Date: {date}", f"Terms: {due}", f"Customer ID: {customer}"],
            font, indent=half, align="right")
    d.fact(number, "What is the invoice number?")
    d.fact(date, "What is the date of the invoice?", "DATE")
    d.fact(due, "What are the payment terms?")
    d.fact(customer, "What is the customer ID?")
    d.y = max(d.y, y_left) + body
    y0 = d.y
    for i, (label, verb) in enumerate((("Bill to", "billed"), ("Ship to", "shipped"))):
        d.y = y0
        name = t.name()
        d.block("heading", [label], bold, indent=i * half, width=half, after=0.1)
        buyer = t.company()
        d.block("paragraph", [name, buyer, *t.address()], font, indent=i * half, width=half)
        d.fact(name, f"Who is the invoice {verb} to?", "PERSON")
        d.fact(buyer, f"Which company is the invoice {verb} to?", "ORG")
    rows = [["Item", "Description", "Qty", "Unit price", "Amount"]]
    total = 0.0
    for _ in range(int(rng.integers(3, 12)) + 28 * (d.n_pages - 1)):
        qty, price = int(rng.integers(1, 50)), float(rng.uniform(2, 900))
        total += qty * price
        rows.append([f"{int(rng.integers(1000, 9999))}", t.title(2, 5), str(qty), f"{price:,.2f}",
                     f"{qty * price:,.2f}"])
    d.y += body
    d.table(rows, size=body - 1, numeric=(False, False, True, True, True), weights=(1.1, 4.0, 0.8, 1.6, 1.8))
    tax = float(rng.choice((0.0, 0.05, 0.07, 0.1, 0.2)))
    d.ensure(body * 6)
    subtotal, tax_due, total_due = (f"${v:,.2f}" for v in (total, total * tax, total * (1 + tax)))
    d.block("paragraph", [f"Subtotal: {subtotal}", f"Tax ({tax:.0%}): {tax_due}"], font,
            indent=half, align="right", after=0.1)
    d.block("paragraph", [f"Total due: {total_due}"], bold, indent=half, align="right", after=1.0)
    d.fact(subtotal, "What is the subtotal?", "MONEY")
    d.fact(tax_due, "How much tax is charged?", "MONEY")
    d.fact(total_due, "What is the total amount due?", "MONEY")
    d.heading(t.pick(("Notes", "Terms and conditions", "Payment instructions")), body + 2)
    for _ in range(50):
        d.block("paragraph", [t.paragraph(1, 3)], d.font(REGULAR, body - 1))
        if d.done:
            break


BUILDERS: dict[str, Builder] = {"invoice": _invoice}

"""Small PDFs written byte by byte, for page-geometry regressions (no binary fixtures).

Each geometry case is a one-page PDF drawing one word in Helvetica (a standard font, so no
font file is embedded), with its page boxes, /Rotate or /UserUnit either on the page or
inherited from the /Pages node, as XeTeX and dvipdfmx write them.
"""

from __future__ import annotations

import numpy as np


# A CID font that is referenced, not embedded (Adobe-GB1, UCS-2 text): PDFium maps its codes
# to Unicode from its built-in CMaps; without a CJK font installed nothing is drawn.
CJK_FONT = (b"<< /Type /Font /Subtype /Type0 /BaseFont /STSong-Light /Encoding /UniGB-UCS2-H /DescendantFonts "
            b"[<< /Type /Font /Subtype /CIDFontType0 /BaseFont /STSong-Light /CIDSystemInfo << /Registry (Adobe) "
            b"/Ordering (GB1) /Supplement 4 >> /FontDescriptor << /Type /FontDescriptor /FontName /STSong-Light "
            b"/Flags 4 /FontBBox [-25 -254 1000 880] /ItalicAngle 0 /Ascent 880 /Descent -120 /CapHeight 880 "
            b"/StemV 93 >> /DW 1000 >>] >>")


def build_pdf(pages: list[tuple[bytes, bytes]], pages_node: bytes = b"") -> bytes:
    """A PDF from (extra page-dictionary entries, content stream) per page; `pages_node`: extra
    entries of the /Pages node, which its pages inherit. Fonts: /F1 Helvetica, /F2 CJK_FONT."""
    n = len(pages)
    kids = b" ".join(b"%d 0 R" % (4 + 2 * i) for i in range(n))
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [%s] /Count %d %s >>" % (kids, n, pages_node),
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"]
    for i, (extra, content) in enumerate(pages):
        objs.append(b"<< /Type /Page /Parent 2 0 R /Resources << /Font << /F1 3 0 R /F2 %s >> >> /Contents %d 0 R %s >>"
                    % (CJK_FONT, 5 + 2 * i, extra))
        objs.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content))
    return serialize(objs, version=b"1.6")


def serialize(objs: list[bytes], version: bytes = b"1.4", trailer: bytes = b"") -> bytes:
    """Objects 1..n (object 1 the catalog) as a PDF file with its cross-reference table;
    `trailer`: extra trailer entries (e.g. an /Encrypt reference)."""
    out, offsets = bytearray(b"%%PDF-%s\n" % version), []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (i, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R %s>>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, trailer, xref)
    return bytes(out)


def text(x: float, y: float, word: str, size: float = 24) -> bytes:
    """Content-stream operators drawing `word` with its baseline starting at (x, y), user space."""
    return b"BT /F1 %g Tf %g %g Td (%s) Tj ET" % (size, x, y, word.encode("latin-1"))


def cjk_text(x: float, y: float, line: str, size: float = 24) -> bytes:
    """As `text`, in CJK_FONT (any BMP characters; each advances by `size`)."""
    return b"BT /F2 %g Tf %g %g Td <%s> Tj ET" % (size, x, y, line.encode("utf-16-be").hex().encode())


# name -> (pages-node entries, page entries, content, expected render size at 72 dpi (w, h) in points)
GEOMETRY = {
    # A4 on the /Pages node, none on the page (XeTeX, dvipdfmx): get_cropbox() says US letter.
    "inherited_mediabox": (b"/MediaBox [0 0 595.28 841.89]", b"", text(72, 760, "Inherited"), (595.28, 841.89)),
    # A beamer-sized page inherited from /Pages: with a letter-sized guess the word is off the page.
    "inherited_small_page": (b"/MediaBox [0 0 364.19 273.14]", b"", text(30, 200, "Slide"), (364.19, 273.14)),
    "cropbox_smaller": (b"", b"/MediaBox [0 0 612 792] /CropBox [100 150 400 500]", text(150, 400, "Cropped"),
                        (300, 350)),
    "mediabox_origin": (b"", b"/MediaBox [-100 -50 200 350]", text(-60, 200, "Shifted"), (300, 400)),
    "rotate_90": (b"", b"/MediaBox [0 0 300 400] /Rotate 90", text(50, 300, "Turned"), (400, 300)),
    "rotate_270": (b"", b"/MediaBox [0 0 300 400] /Rotate 270", text(50, 300, "Turned"), (400, 300)),
    # Everything inherited at once: boxes and rotation on /Pages.
    "inherited_crop_rotate": (b"/MediaBox [0 0 595 842] /CropBox [50 60 545 800] /Rotate 90", b"",
                              text(100, 700, "Everything"), (740, 495)),
    # PDFium applies /UserUnit neither to rendering nor to text: both stay in user-space units.
    "user_unit": (b"", b"/MediaBox [0 0 300 400] /UserUnit 2", text(50, 300, "Unit"), (300, 400)),
}


def geometry_pdf(name: str) -> bytes:
    pages_node, page, content, _ = GEOMETRY[name]
    return build_pdf([(page, content)], pages_node)


def ink_box(image: np.ndarray, threshold: int = 128) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the pixels darker than `threshold`: where the text was drawn."""
    ys, xs = np.nonzero(np.asarray(image).min(-1) < threshold)
    assert len(xs), "no ink on the page"
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1

"""The OCR schema, the PDF and image readers on files made here, and the bad-file zoo."""

import json
import math
import struct
import zlib

import numpy as np
import pypdfium2 as pdfium
import pytest
from PIL import Image, ImageDraw, ImageFont

import pdf_factory
from docjepa.data import ocr
from docjepa.data.ocr import BadDocument, Document, LayoutElement, OcrSchemaError, Page, Word

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
CAPS = dict(dpi=100, max_pages=8, max_pixels=10_000_000)


def _doc():
    words = [Word("world", (60.0, 10.0, 110.5, 30.0), 0.9, 0, 0, 1), Word("hello", (5.0, 10.0, 50.0, 30.0), 1.0, 0, 0, 0)]
    pages = [Page(200, 100, 96.0, words, [LayoutElement("title", (0.0, 5.0, 120.0, 35.0))]),
             Page(200, 100, 96.0, [])]
    return Document("doc-1", "test", pages, category="letter")


# ----------------------------------------------------------------------------- schema


def test_json_round_trip_scaled_and_page_text():
    doc = _doc()
    back = Document.from_json(doc.to_json().encode())
    assert back == doc
    assert Document.from_json(Document("d", "s", []).to_json()) == Document("d", "s", [])  # category None
    assert doc.page_text(0) == "hello world" and doc.page_text(1) == ""
    half = doc.scaled([0.5, 2.0])
    assert (half.pages[0].width, half.pages[0].height, half.pages[1].width) == (100, 50, 400)
    assert half.pages[0].words[0].box == (30.0, 5.0, 55.25, 15.0)
    assert half.pages[0].layout[0].box == (0.0, 2.5, 60.0, 17.5)
    assert half.pages[0].dpi == 48.0 and doc.pages[0].width == 200  # the original is unchanged
    padded = doc.scaled([0.5, 0.5], sizes=[(100, 224), (100, 224)])
    assert padded.pages[0].height == 224 and Document.from_json(padded.to_json()) == padded
    with pytest.raises(ValueError, match="2 pages"):
        doc.scaled([1.0])


def _mutate(path, value):
    obj = json.loads(_doc().to_json())
    *head, last = path
    target = obj
    for k in head:
        target = target[k]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return json.dumps(obj)


@pytest.mark.parametrize(
    "path,value,message",
    [
        (["schema_version"], 2, "schema_version: unsupported version 2"),
        (["doc_id"], 7, "doc_id: expected str"),
        (["pages"], KeyError, "pages: missing"),
        (["pages", 0, "width"], "200", r"pages\[0\].width: expected int"),
        (["pages", 1, "height"], 0, r"pages\[1\].width: page size must be positive"),
        (["pages", 0, "words", "box", 1], [60, 10, 50, 30], r"pages\[0\].words\[1\].box: x1 < x0"),
        (["pages", 0, "words", "box", 0], [60, 10, 250, 30], r"pages\[0\].words\[0\].box: .* outside the 200x100 page"),
        (["pages", 0, "words", "box", 0], [1, 2, 3], r"pages\[0\].words\[0\].box: expected \[x0, y0, x1, y1\]"),
        (["pages", 0, "words", "conf", 1], 1.5, r"pages\[0\].words\[1\].conf: expected a number in \[0, 1\]"),
        (["pages", 0, "words", "text", 0], " ", r"pages\[0\].words\[0\].text: expected a non-empty string"),
        (["pages", 0, "words", "order", 0], -1, r"pages\[0\].words\[0\].order: expected an int >= 0"),
        (["pages", 0, "words", "line"], [0], r"pages\[0\].words.line: has 1 entries, words.text has 2"),
        (["pages", 0, "layout", 0, "cls"], "poster", r"pages\[0\].layout\[0\].cls: 'poster' is not one of"),
        (["pages", 0, "colour"], "red", r"pages\[0\].colour: unknown field"),
    ],
)
def test_validation_names_the_field(path, value, message):
    with pytest.raises(OcrSchemaError, match=message):
        Document.from_json(_mutate(path, value))


def test_validation_of_non_json():
    with pytest.raises(OcrSchemaError, match="<root>: not valid JSON"):
        Document.from_json(b"{nope")
    with pytest.raises(OcrSchemaError, match="<root>: expected an object"):
        Document.from_json("[1, 2]")


# ----------------------------------------------------------------------------- PDFs with a text layer


@pytest.fixture(scope="module")
def text_pdf(tmp_path_factory):
    """Three letter-size pages drawn by matplotlib, whose PDF backend writes a real text layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    path = tmp_path_factory.mktemp("pdf") / "report.pdf"
    with PdfPages(path) as pdf:
        for i in range(3):
            fig = plt.figure(figsize=(8.5, 11))
            fig.text(0.1, 0.9, f"Quarterly report page{i}", fontsize=20)  # baseline 1.1 in from the top
            fig.text(0.5, 0.3, "Second block here", fontsize=12)
            pdf.savefig(fig)
            plt.close(fig)
    return path


def _ink_inside(img, box):
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    return (img[y0:y1, x0:x1].min(-1) < 100).mean()


def test_read_pdf_text_layer(text_pdf):
    doc, images = ocr.read_pdf(text_pdf, dpi=100, max_pages=2, max_pixels=10_000_000)  # truncated to 2
    assert len(doc.pages) == len(images) == 2
    assert images[0].shape == (1100, 850, 3) and images[0].dtype == np.uint8
    page = doc.pages[0]
    assert (page.width, page.height, page.dpi) == (850, 1100, 100.0)
    assert doc.page_text(0) == "Quarterly report page0 Second block here"
    assert doc.page_text(1).startswith("Quarterly report page1")
    word = {w.text: w for w in page.words}
    x0, y0, x1, y1 = word["Quarterly"].box
    # fig.text(0.1, 0.9): left edge at 85 px, baseline at 110 px (descenders reach below it).
    assert abs(x0 - 85) < 6 and 100 < y1 < 120 and 15 < y1 - y0 < 40 and x1 - x0 > 80
    assert word["report"].box[0] > x1  # left to right
    assert _ink_inside(images[0], word["Quarterly"].box) > 0.1
    assert [w.order for w in page.words] == list(range(6))
    assert word["Quarterly"].line == word["page0"].line != word["Second"].line
    assert word["Quarterly"].block != word["Second"].block
    assert Document.from_json(doc.to_json()) == doc


def test_read_pdf_rotated_page(text_pdf, tmp_path):
    pdf = pdfium.PdfDocument(str(text_pdf))
    pdf[0].set_rotation(90)
    path = tmp_path / "rotated.pdf"
    pdf.save(str(path))
    pdf.close()
    doc, images = ocr.read_pdf(path, dpi=50, max_pages=1, max_pixels=10_000_000)
    assert images[0].shape == (425, 550, 3)  # landscape after rotation
    for w in doc.pages[0].words:
        assert _ink_inside(images[0], w.box) > 0.05, w


@pytest.mark.parametrize("name", sorted(pdf_factory.GEOMETRY))
def test_pdf_word_boxes_match_the_rendered_pixels(tmp_path, name):
    """Inherited /MediaBox and /CropBox, a CropBox inside the MediaBox, a shifted origin,
    /Rotate 90 and 270, /UserUnit: the word box is where the page image has the word's ink."""
    path = tmp_path / f"{name}.pdf"
    path.write_bytes(pdf_factory.geometry_pdf(name))
    doc, images = ocr.read_pdf(path, dpi=100, max_pages=1, max_pixels=10_000_000)
    w, h = pdf_factory.GEOMETRY[name][3]
    assert images[0].shape[:2] == (math.ceil(h * 100 / 72), math.ceil(w * 100 / 72))
    (word,) = doc.pages[0].words  # one word, not one per glyph (rotated pages) and not clipped away
    assert word.text == pdf_factory.GEOMETRY[name][2].split(b"(")[1].split(b")")[0].decode()
    np.testing.assert_allclose(word.box, pdf_factory.ink_box(images[0]), atol=1.0)
    doc.check()


def test_rotated_page_keeps_lines_and_words(tmp_path):
    """Lines are found in the page's own frame: on a /Rotate 90 page, two words on one baseline
    are one line, and a second baseline is the next line."""
    content = pdf_factory.text(50, 300, "first line") + b" " + pdf_factory.text(50, 270, "second")
    path = tmp_path / "turned.pdf"
    path.write_bytes(pdf_factory.build_pdf([(b"/MediaBox [0 0 300 400] /Rotate 90", content)]))
    doc, images = ocr.read_pdf(path, dpi=100, max_pages=1, max_pixels=10_000_000)
    words = {w.text: w for w in doc.pages[0].words}
    assert sorted(words) == ["first", "line", "second"]
    assert words["first"].line == words["line"].line != words["second"].line
    for w in words.values():
        assert _ink_inside(images[0], w.box) > 0.1, w


def test_unspaced_scripts_become_one_word_per_character(tmp_path):
    """A Chinese/Japanese run is split into characters (window texts then follow the pixels);
    Latin words next to it stay whole, and all stay on one line in reading order."""
    content = pdf_factory.cjk_text(20, 300, "文档理解ですab") + b" " + pdf_factory.text(20, 250, "Latin words")
    path = tmp_path / "cjk.pdf"
    path.write_bytes(pdf_factory.build_pdf([(b"/MediaBox [0 0 400 400]", content)]))
    doc, _ = ocr.read_pdf(path, dpi=72, max_pages=1, max_pixels=10_000_000)
    words = doc.pages[0].words
    assert [w.text for w in words] == ["文", "档", "理", "解", "で", "す", "ab", "Latin", "words"]
    assert len({w.line for w in words[:7]}) == 1 and words[7].line == words[8].line != words[0].line
    for k, w in enumerate(words[:6]):  # 24 pt advance each at 72 dpi; a box even without a CJK font
        assert w.box[0] == pytest.approx(20 + 24 * k, abs=0.5) and w.box[2] == pytest.approx(44 + 24 * k, abs=0.5)
        assert 15 < w.box[3] - w.box[1] < 30
    doc.check()


def test_read_pdf_pixel_cap(text_pdf):
    with pytest.raises(BadDocument, match="page 0 is 850x1100 > max_pixels=100000") as e:
        ocr.read_pdf(text_pdf, dpi=100, max_pages=3, max_pixels=100_000)
    assert e.value.reason == "too_many_pixels"


# ----------------------------------------------------------------------------- scans via Tesseract


def _scan(lines):
    font = ImageFont.truetype(FONT, 36)
    im = Image.new("RGB", (700, 90 * len(lines) + 40), "white")
    draw = ImageDraw.Draw(im)
    for k, line in enumerate(lines):
        draw.text((30, 30 + 90 * k), line, font=font, fill="black")
    return im


def _texts(page):
    return {w.text.lower() for w in page.words}


def test_read_image_png_and_two_page_tiff(tmp_path):
    first = _scan(["Invoice number 4711", "Total amount due"])
    first.save(tmp_path / "scan.png", dpi=(150, 150))
    doc, images = ocr.read_document(tmp_path / "scan.png", **CAPS)
    page = doc.pages[0]
    assert {"invoice", "number", "4711", "total", "amount", "due"} <= _texts(page)
    assert page.dpi == 150.0 and images[0].shape == (page.height, page.width, 3)
    word = {w.text.lower(): w for w in page.words}
    assert abs(word["invoice"].box[0] - 30) < 8 and abs(word["invoice"].box[1] - 37) < 8
    assert word["invoice"].line == word["4711"].line != word["total"].line
    assert word["invoice"].order < word["number"].order < word["total"].order
    assert all(0.0 <= w.conf <= 1.0 for w in page.words)

    second = _scan(["Shipping address Berlin"])
    first.save(tmp_path / "scan.tiff", save_all=True, append_images=[second])
    doc, images = ocr.read_document(tmp_path / "scan.tiff", **CAPS)
    assert len(doc.pages) == 2 and images[1].shape[0] == second.height
    assert {"shipping", "address", "berlin"} <= _texts(doc.pages[1])
    doc, _ = ocr.read_document(tmp_path / "scan.tiff", **CAPS | {"max_pages": 1})
    assert len(doc.pages) == 1


def test_pdf_without_text_layer_falls_back_to_tesseract(tmp_path):
    _scan(["Purchase order 2024"]).save(tmp_path / "scanned.pdf", resolution=100)
    doc, images = ocr.read_document(tmp_path / "scanned.pdf", **CAPS)
    assert images[0].shape == (130, 700, 3)
    assert {"purchase", "order", "2024"} <= _texts(doc.pages[0])
    assert any(w.conf < 1.0 for w in doc.pages[0].words)  # Tesseract, not the text layer


# ----------------------------------------------------------------------------- the bad-file zoo


def _minimal_pdf(pages=1, trailer=b"", extra_objects=()):
    kids = b" ".join(b"%d 0 R" % (3 + i) for i in range(pages))
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages)]
    objs += [b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 100] >>"] * pages
    objs += list(extra_objects)
    return pdf_factory.serialize(objs, trailer=trailer)


def _encrypted_pdf():
    """Standard security handler (RC4, R2) whose empty user password does not match /U."""
    enc = b"<< /Filter /Standard /V 1 /R 2 /Length 40 /P -4 /O <%s> /U <%s> >>" % (b"ab" * 32, b"cd" * 32)
    return _minimal_pdf(1, b"/Encrypt 4 0 R /ID [<%s> <%s>] " % (b"01" * 16, b"01" * 16), [enc])


def _png_header(width, height):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "name,content,reason",
    [
        ("empty.pdf", b"", "zero_bytes"),
        ("empty.png", b"", "zero_bytes"),
        ("random.pdf", bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)), "not_a_pdf"),
        ("random.png", bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)), "unreadable_image"),
        ("random.xyz", b"hello", "unreadable_image"),
        ("truncated.pdf", "truncate", "truncated_pdf"),
        ("locked.pdf", _encrypted_pdf(), "encrypted_pdf"),
        ("nopages.pdf", _minimal_pdf(0), "no_pages"),
        ("blank.pdf", _minimal_pdf(1), "no_text"),
        ("huge.png", _png_header(100_000, 100_000), "too_many_pixels"),
        ("big.png", _png_header(5000, 4000), "too_many_pixels"),  # under Pillow's guard, over our cap
        ("broken.png", _png_header(300, 200), "unreadable_image"),  # valid header, no pixel data
    ],
)
def test_bad_files(tmp_path, text_pdf, name, content, reason):
    if content == "truncate":
        content = text_pdf.read_bytes()[: text_pdf.stat().st_size // 3]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(BadDocument) as e:
        ocr.read_document(path, **CAPS)
    assert e.value.reason == reason, e.value
    assert str(path) in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(BadDocument, match="no such file|No such file"):
        ocr.read_document(tmp_path / "absent.pdf", **CAPS)

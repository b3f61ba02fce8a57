"""The synthetic document generator: determinism, exact word boxes, layout, reading order, real text."""

import re

import cv2
import numpy as np
import pytest

from docjepa.data import synth
from docjepa.data.ocr import LAYOUT_CLASSES, Document

# Frequent English function words; prose of any kind is full of them, random strings are not.
COMMON = set("""the a an of to and in is that it for be as with on by this or are not if from at
an which can will when all any no but its into then than used return returns also only such other
one two new given each so may must should use set get file object value default""".split())


@pytest.fixture(scope="module")
def docs():
    """One two-page document per category (two pages so running headers and page numbers show)."""
    return {c: synth.generate(i, 7, min_pages=2, max_pages=2, category=c) for i, c in enumerate(synth.CATEGORIES)}


def test_deterministic_in_index_and_seed():
    a_doc, a_img = synth.generate(11, 3, max_pages=2)
    b_doc, b_img = synth.generate(11, 3, max_pages=2)
    assert a_doc.doc_id == "synth-3-0000011"
    assert a_doc.to_json() == b_doc.to_json()
    assert len(a_img) == len(b_img) and all(np.array_equal(x, y) for x, y in zip(a_img, b_img))
    for other in (synth.generate(12, 3, max_pages=2), synth.generate(11, 4, max_pages=2)):
        assert other[0].page_text(0) != a_doc.page_text(0)


def test_page_count_and_category_drawn_by_rng():
    seen = set()
    for i in range(8):
        doc, images = synth.generate(i, 0, min_pages=1, max_pages=2)
        assert 1 <= len(doc.pages) == len(images) <= 2
        assert doc.category == synth.CATEGORIES[np.random.default_rng([0, i]).integers(len(synth.CATEGORIES))]
        seen.add(doc.category)
    assert len(seen) >= 3


@pytest.mark.parametrize("category", synth.CATEGORIES)
def test_category_generates_valid_document(docs, category):
    doc, images = docs[category]
    assert doc.category == category and doc.source == "synth"
    assert len(doc.pages) == len(images) == 2
    for page, image in zip(doc.pages, images):
        assert image.dtype == np.uint8 and image.shape == (page.height, page.width, 3)
        assert page.dpi == synth.DPI and len(page.words) >= 5
    if category == "slide":
        assert (doc.pages[0].width, doc.pages[0].height) == (1024, 768)
    # The JSON passes the schema validator (boxes inside the page, valid classes) and round-trips.
    assert Document.from_json(doc.to_json()).to_json() == doc.to_json()


@pytest.mark.parametrize("category", synth.CATEGORIES)
def test_word_boxes_cover_ink(docs, category):
    doc, images = docs[category]
    for page, image in zip(doc.pages, images):
        gray = image.astype(np.float32).mean(-1)
        background = float(np.median(gray))
        inside = np.zeros(gray.shape, bool)
        for w in page.words:
            x0, y0, x1, y1 = w.box
            assert 0 <= x0 < x1 <= page.width and 0 <= y0 < y1 <= page.height, (w.text, w.box)
            patch = gray[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))]
            assert patch.min() < background - 60, f"no ink under {w.text!r} at {w.box}"
            inside[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))] = True
        assert gray[inside].mean() < background - 20
        # Nothing is drawn unrecorded: away from the page edge (slide colour bars) and outside the
        # layout elements, only rules and signatures leave ink; a page of unrecorded text would be
        # several percent dark.
        for e in page.layout:
            x0, y0, x1, y1 = e.box
            inside[int(y0):int(np.ceil(y1)) + 1, int(x0):int(np.ceil(x1)) + 1] = True
        outside = ~inside
        outside[:20], outside[-20:], outside[:, :20], outside[:, -20:] = False, False, False, False
        assert (gray[outside] < background - 100).mean() < 0.01


@pytest.mark.parametrize("category", synth.CATEGORIES)
def test_layout_elements_contain_their_words(docs, category):
    doc, _ = docs[category]
    for page in doc.pages:
        assert page.layout and all(e.cls in LAYOUT_CLASSES for e in page.layout)
        boxes = np.array([e.box for e in page.layout])
        for w in page.words:
            x0, y0, x1, y1 = w.box
            holds = ((boxes[:, 0] <= x0 + 0.5) & (boxes[:, 1] <= y0 + 0.5)
                     & (boxes[:, 2] >= x1 - 0.5) & (boxes[:, 3] >= y1 - 0.5))
            assert holds.any(), f"{w.text!r} {w.box} lies in no layout element"


@pytest.mark.parametrize("category", synth.CATEGORIES)
def test_reading_order_and_lines(docs, category):
    doc, _ = docs[category]
    for page in doc.pages:
        order = sorted(w.order for w in page.words)
        assert order == list(range(len(page.words)))
        words = sorted(page.words, key=lambda w: w.order)
        for a, b in zip(words, words[1:]):
            if a.line == b.line:  # within a line: same block, left to right, same baseline
                assert a.block == b.block and b.box[0] > a.box[0]
                assert abs((a.box[1] + a.box[3]) - (b.box[1] + b.box[3])) / 2 < 0.6 * (a.box[3] - a.box[1]) + 4
            else:
                assert b.line > a.line and b.block >= a.block


@pytest.mark.parametrize("category", synth.CATEGORIES)
def test_multipage_pages_are_numbered(docs, category):
    doc, _ = docs[category]
    for i, page in enumerate(doc.pages):
        numbers = [e for e in page.layout if e.cls == "page_number"]
        assert len(numbers) == 1, f"page {i} has {len(numbers)} page numbers"
        x0, y0, x1, y1 = numbers[0].box
        text = [w.text for w in page.words if x0 <= w.box[0] and w.box[2] <= x1 and y0 <= w.box[1] and w.box[3] <= y1]
        assert str(i + 1) in text
        assert y0 > page.height * 0.8  # at the foot of the page
        last = max(page.words, key=lambda w: w.order)
        assert last.box[1] >= y0 - page.height * 0.1  # footers come last in reading order


def test_text_is_real_language(docs):
    for category in ("letter", "paper_1col", "paper_2col", "report", "form", "slide"):
        doc, _ = docs[category]
        tokens = [re.sub(r"[^a-z]", "", w.text.lower()) for p in doc.pages for w in p.words]
        tokens = [t for t in tokens if t]
        assert len(tokens) > 20
        common = sum(t in COMMON for t in tokens) / len(tokens)
        assert common > 0.12, f"{category}: only {common:.0%} common English words"


def test_bad_arguments_name_the_field():
    with pytest.raises(ValueError, match="category 'poster'"):
        synth.generate(0, category="poster")
    with pytest.raises(ValueError, match="min_pages <= max_pages"):
        synth.generate(0, min_pages=3, max_pages=2)
    with pytest.raises(ValueError, match="index"):
        synth.generate(-1)


def test_tilted_boxes_enclose_the_tilted_ink():
    """The box transform matches the pixel transform used for scan tilt."""
    image = np.full((300, 400), 255, np.uint8)
    box = np.array([[120.0, 100.0, 300.0, 140.0]])
    image[100:140, 120:300] = 0
    m = cv2.getRotationMatrix2D((200, 150), 1.0, 1.0)
    tilted = cv2.warpAffine(image, m, (400, 300), borderValue=255)
    x0, y0, x1, y1 = synth._rotate_boxes(box, m)[0]
    ys, xs = np.nonzero(tilted < 128)
    assert x0 - 1 <= xs.min() and xs.max() <= x1 + 1 and y0 - 1 <= ys.min() and ys.max() <= y1 + 1
    assert xs.min() - x0 < 2 and x1 - xs.max() < 2 and ys.min() - y0 < 2 and y1 - ys.max() < 2


def test_min_x_height_makes_body_text_legible_after_the_resize():
    """An 'x' of the body font is >= 8 px high once the page is 448 px wide, in every family."""
    from docjepa.data.synth import style

    for family in style._SERIF + style._SANS + style._MONO:
        base = style._Style(family, 15, (0, 0, 0), (0, 0, 0), (255, 255, 255), False)
        for width in (816, 1024):
            scale = 448 / width
            body = style._legible(base, 8.0 / scale).body
            top, bottom = style._font(family[0], body).getbbox("x")[1::2]
            assert (bottom - top) * scale >= 8.0 - 1.0, (family[0], width, body)  # 1 px: glyph rounding
    # The documents follow: median word height at 448 px wide grows in every category.
    for i, category in enumerate(synth.CATEGORIES):
        heights = []
        for legible in ({}, {"min_x_height": 8.0, "page_width": 448}):
            doc, _ = synth.generate(i, 5, category=category, **legible)
            heights.append(np.median([(w.box[3] - w.box[1]) * 448 / p.width for p in doc.pages for w in p.words]))
        assert heights[1] >= 10.0 and heights[1] > heights[0], (category, heights)
    with pytest.raises(ValueError, match="min_x_height and page_width"):
        synth.generate(0, min_x_height=8.0)

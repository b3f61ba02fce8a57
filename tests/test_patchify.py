"""Windows, word assignment and the page viewer, on hand-made pages."""

import json

import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordWriter

from docjepa.data import patchify, pseudo_layout, show
from docjepa.data.ocr import Document, LayoutElement, Page, Word
from docjepa.data.record import encode_record


@pytest.mark.parametrize(
    "height,width,xs,ys",
    [
        (224, 224, [0], [0]),
        (224, 448, [0, 160, 224], [0]),
        (384, 384, [0, 160], [0, 160]),  # stride fits exactly: no extra edge window
        (300, 500, [0, 160, 276], [0, 76]),
        (1000, 448, [0, 160, 224], [0, 160, 320, 480, 640, 776]),
    ],
)
def test_window_boxes_positions(height, width, xs, ys):
    boxes = patchify.window_boxes(height, width)
    assert boxes.dtype == np.int32 and boxes.shape == (len(xs) * len(ys), 4)
    expected = [(x, y, x + 224, y + 224) for y in ys for x in xs]  # row-major
    np.testing.assert_array_equal(boxes, expected)
    assert boxes[:, 2].max() == width and boxes[:, 3].max() == height
    # Every pixel is covered.
    cover = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in boxes:
        cover[y0:y1, x0:x1] = True
    assert cover.all()


def test_window_boxes_other_size_and_errors():
    np.testing.assert_array_equal(patchify.window_boxes(10, 25, size=10, stride=10), [(0, 0, 10, 10), (10, 0, 20, 10), (15, 0, 25, 10)])
    with pytest.raises(ValueError, match="smaller than the 224x224 window"):
        patchify.window_boxes(223, 500)
    with pytest.raises(ValueError, match="stride"):
        patchify.window_boxes(300, 300, stride=0)


def _w(text, cx, cy, order, half=5.0):
    return Word(text, (cx - half, cy - half, cx + half, cy + half), order=order)


def test_assign_words_by_centre_borders_overlap_and_order():
    windows = patchify.window_boxes(224, 448)  # x ranges [0,224) [160,384) [224,448)
    words = [
        _w("late", 50, 100, order=3),
        _w("early", 100, 100, order=0),
        _w("overlap", 200, 50, order=1),  # in windows 0 and 1
        _w("border", 224, 50, order=2),  # centre on x=224: not in window 0 ([0, 224)), in 1 and 2
        _w("edge", 447.5, 223.5, order=4, half=0.5),  # last pixel of the page
        Word("wide", (100, 10, 300, 20), order=5),  # centre x=200, although it spans windows 0..2
    ]
    idx = patchify.assign_words(words, windows)
    assert idx == [[1, 2, 0, 5], [2, 3, 5], [3, 4]]
    assert patchify.window_texts(words, windows) == ["early overlap late wide", "overlap border wide", "border edge"]
    assert patchify.assign_words([], windows) == [[], [], []]
    # A word whose centre lies on the bottom edge of the page belongs to no window.
    assert patchify.assign_words([_w("out", 10, 224, 0)], windows) == [[], [], []]


def test_resize_to_width_scales_and_pads():
    img = np.zeros((100, 400, 3), np.uint8)
    img[:, 200:] = 200
    out, scale = patchify.resize_to_width(img, 200)
    assert scale == 0.5 and out.shape == (224, 200, 3) and out.dtype == np.uint8
    assert (out[50:, :] == 255).all()  # white padding below the 50 resized rows
    assert out[:50, :90].max() == 0 and out[:50, 110:].min() == 200
    tall = np.full((1000, 300, 3), 7, np.uint8)
    out, scale = patchify.resize_to_width(tall, 450)
    assert scale == 1.5 and out.shape == (1500, 450, 3) and (out == 7).all()
    with pytest.raises(ValueError, match="image: expected uint8"):
        patchify.resize_to_width(np.zeros((10, 10), np.uint8), 5)


def test_cut_windows_matches_slices():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (300, 500, 3), dtype=np.uint8)
    wins = patchify.window_boxes(300, 500)
    crops = patchify.cut_windows(img, wins)
    assert crops.shape == (len(wins), 224, 224, 3) and crops.dtype == np.uint8
    for crop, (x0, y0, x1, y1) in zip(crops, wins):
        np.testing.assert_array_equal(crop, img[y0:y1, x0:x1])
    with pytest.raises(ValueError, match="outside"):
        patchify.cut_windows(img, np.array([[400, 0, 624, 224]]))


def _page_and_doc():
    img = np.full((300, 448, 3), 255, np.uint8)
    words = [Word("alpha", (20, 20, 80, 40), order=0), Word("beta", (300, 250, 360, 270), order=1)]
    layout = [LayoutElement("title", (10, 10, 200, 50))]
    doc = Document("d0", "test", [Page(448, 300, 96.0, words, layout)], category="letter")
    return img, doc


def test_draw_page_marks_windows_words_and_layout():
    img, doc = _page_and_doc()
    wins = patchify.window_boxes(300, 448)
    out = show.draw_page(img, wins, doc.pages[0].words, doc.pages[0].layout)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (img == 255).all()  # the input is not modified
    changed = (out != 255).any(-1)
    assert changed[250, 300] and changed[20, 50]  # word box outlines
    assert changed[10, 150]  # layout box top edge
    assert not changed[150, 120]  # away from every box


def test_show_cli_on_a_tiny_record(tmp_path):
    import cv2

    img, doc = _page_and_doc()
    img[22:38, 22:78] = 0  # ink where the first word is, for the pseudo-layout mask
    wins = patchify.window_boxes(300, 448)
    ok, png = cv2.imencode(".png", img)
    rec = {
        "doc_id": doc.doc_id, "source": doc.source, "split": "train", "category": "letter", "category_id": 0,
        "pages_png": [png.tobytes()], "ocr_json": doc.to_json().encode(),
        "windows": np.concatenate([np.zeros((len(wins), 1), np.int32), wins], 1),
        "window_text": patchify.window_texts(doc.pages[0].words, wins),
    }
    for name in ("train-00000.array_record", "train-00001.array_record"):
        writer = ArrayRecordWriter(str(tmp_path / name), "group_size:1")
        writer.write(encode_record(rec | {"doc_id": name}))
        writer.close()
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"splits": {"train": {"files": ["train-00000.array_record", "train-00001.array_record"]}}}))
    out = tmp_path / "page.png"
    show.main([str(tmp_path), "--index", "1", "--out", str(out)])
    drawn = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(drawn, show.draw_page(img, wins, doc.pages[0].words, doc.pages[0].layout))
    assert show.read_record(show.record_files(tmp_path), 1)["doc_id"] == "train-00001.array_record"
    # --pseudo_layout tints the page's pseudo-layout regions, and only them.
    show.main([str(tmp_path), "--index", "1", "--out", str(out), "--pseudo_layout"])
    tinted = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    regions = pseudo_layout.page_mask(img).astype(bool)
    assert regions.any() and (tinted != drawn).any(axis=-1).sum() >= 0.5 * regions.sum()
    np.testing.assert_array_equal(tinted, show.draw_page(img, wins, doc.pages[0].words, doc.pages[0].layout,
                                                         pseudo_layout.page_mask(img)))
    with pytest.raises(SystemExit, match="--index 2: out of range"):
        show.main([str(tmp_path), "--index", "2", "--out", str(out)])
    with pytest.raises(SystemExit, match="--page 3: out of range"):
        show.main([str(tmp_path / "train-00000.array_record"), "--page", "3", "--out", str(out)])

"""Draw one stored page with its windows, word boxes and layout, to check a prepared data set by eye.

    python -m docjepa.data.show RECORD_FILE_OR_DATA_DIR --index i --out page.png [--page p] [--pseudo_layout]

A data directory is read through its manifest.json (`--split`, default train); `--index`
counts records across the split's files in manifest order.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from docjepa import cli
from docjepa.data import pseudo_layout
from docjepa.data.ocr import Document, LayoutElement, Word
from docjepa.data.record import decode_record

# RGB, distinct on white paper.
_PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 160, 160), (240, 50, 230), (128, 128, 0), (170, 110, 40), (0, 0, 128)]
_WORD_COLOUR = (150, 150, 150)
_LAYOUT_COLOUR = (200, 0, 0)
_REGION_TINT = (255, 200, 0)


def _label(img: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int]) -> None:
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
    y = max(y, th + 2)
    cv2.rectangle(img, (x, y - th - 2), (x + tw + 2, y + 1), colour, -1)
    cv2.putText(img, text, (x + 1, y - 1), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)


def draw_page(image: np.ndarray, windows: np.ndarray, words: Sequence[Word],
              layout: Sequence[LayoutElement], regions: np.ndarray | None = None) -> np.ndarray:
    """A copy of the RGB page with word boxes (thin grey), layout boxes (labelled with their
    class) and windows (one colour each, labelled with their index within the page); with
    `regions` (a pseudo-layout mask, data/pseudo_layout.py) its regions tinted."""
    out = np.ascontiguousarray(image[..., :3], dtype=np.uint8).copy()
    if regions is not None:
        inside = regions.astype(bool)
        out[inside] = (0.6 * out[inside] + 0.4 * np.array(_REGION_TINT)).astype(np.uint8)
    for w in words:
        x0, y0, x1, y1 = (int(round(v)) for v in w.box)
        cv2.rectangle(out, (x0, y0), (x1, y1), _WORD_COLOUR, 1)
    for e in layout:
        x0, y0, x1, y1 = (int(round(v)) for v in e.box)
        cv2.rectangle(out, (x0, y0), (x1, y1), _LAYOUT_COLOUR, 1, cv2.LINE_4)
        _label(out, e.cls, x0, y1 + 14 if y0 < 16 else y0, _LAYOUT_COLOUR)
    for i, (x0, y0, x1, y1) in enumerate(np.asarray(windows).reshape(-1, 4).tolist()):
        colour = _PALETTE[i % len(_PALETTE)]
        cv2.rectangle(out, (x0 + 1, y0 + 1), (x1 - 2, y1 - 2), colour, 2)
        _label(out, str(i), x0 + 3, y0 + 16, colour)
    return out


def record_files(path: str | Path, split: str = "train") -> list[Path]:
    """The ArrayRecord files behind a record file or a prepared data directory."""
    path = Path(path)
    if path.is_file():
        return [path]
    manifest = path / "manifest.json"
    if manifest.is_file():
        splits = json.loads(manifest.read_text())["splits"]
        if split not in splits:
            raise SystemExit(f"{manifest}: no split {split!r} (have {', '.join(splits)})")
        return [path / f for f in splits[split]["files"]]
    files = sorted(path.glob(f"{split}*.array_record*")) or sorted(path.glob("*.array_record*"))
    if not files:
        raise SystemExit(f"{path}: neither a record file nor a directory with manifest.json or *.array_record files")
    return files


def read_record(files: Sequence[Path], index: int) -> dict[str, Any]:
    """Decode record `index`, counting across `files` in order."""
    from array_record.python.array_record_module import ArrayRecordReader

    start = index
    for f in files:
        reader = ArrayRecordReader(str(f))
        try:
            n = reader.num_records()
            if index < n:
                return decode_record(reader.read([index])[0])
            index -= n
        finally:
            reader.close()
    raise SystemExit(f"--index {start}: out of range ({start - index} records)")


def render_record(rec: dict[str, Any], page: int, pseudo: bool = False) -> np.ndarray:
    """draw_page for page `page` of a decoded record; with `pseudo`, its pseudo-layout mask."""
    pages = rec["pages_png"]
    if not 0 <= page < len(pages):
        raise SystemExit(f"--page {page}: out of range (document {rec.get('doc_id')!r} has {len(pages)} pages)")
    bgr = cv2.imdecode(np.frombuffer(pages[page], np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"pages_png[{page}]: not a decodable image")
    doc = Document.from_json(rec["ocr_json"])
    windows = np.asarray(rec["windows"]).reshape(-1, 5)
    p = doc.pages[page]
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    regions = pseudo_layout.page_mask(rgb) if pseudo else None
    return draw_page(rgb, windows[windows[:, 0] == page, 1:], p.words, p.layout, regions)


def main(argv: Sequence[str] | None = None) -> None:
    ap = cli.ArgumentParser(prog="python -m docjepa.data.show", description=__doc__.splitlines()[0])
    ap.add_argument("path", help="an ArrayRecord file or a prepared data directory")
    ap.add_argument("--index", type=int, default=0, help="record index (across the split's files)")
    ap.add_argument("--page", type=int, default=0, help="page within the document")
    ap.add_argument("--split", default="train", help="split to read from a data directory")
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("--pseudo_layout", action="store_true", help="tint the page's pseudo-layout regions "
                    "(the targets of loss.layout_weight)")
    args = ap.parse_args(argv)
    rec = read_record(record_files(args.path, args.split), args.index)
    img = render_record(rec, args.page, args.pseudo_layout)
    if not cv2.imwrite(args.out, cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
        raise SystemExit(f"--out {args.out}: cannot write")
    texts = rec.get("window_text", [])
    rows = np.asarray(rec["windows"]).reshape(-1, 5)
    print(f"{rec.get('doc_id')} page {args.page}: {img.shape[1]}x{img.shape[0]} -> {args.out}")
    for k, w in enumerate(np.flatnonzero(rows[:, 0] == args.page)):
        print(f"  window {k}: {texts[w] if w < len(texts) else ''!r:.100}")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Prepare on a folder of real PDFs, then check the stored word boxes against the stored pixels.

Synthetic documents and the test PDFs are made by code that also knows where their words
are; real PDFs (TeX output, Type 1/OpenType fonts, slides, right-to-left and CJK scripts) are
where text-layer extraction can go wrong unseen. This runs the real prepare on DIR (timed),
reads every stored page back through docjepa.data.pipeline, and measures, without any of the
extraction code, whether each word box holds ink: pixels that differ from the page's paper
(its most frequent colour) by more than --contrast in some channel, in at least --min-ink of
the box (rounded outward to whole pixels). A page counts as checked when at least
--page-share of its words hold ink. The contrast is low because pages are stored
`prepare.page_width` wide: at 448 px an A4 page has 0.75 px per point, so the strokes of
10-point text average to grays of about 100-160 on white, and the periods of dotted leaders
(each one word of the text layer) to 150-220; the default 32 counts anything darker than 223.
Also reported: the share of a page's ink inside some word box (rules, figures and text
without a text layer lower it), and, as a control, the share of the same boxes that hold ink
when moved to random places on their page.

    PYTHONPATH=. .venv/bin/python bench/real_pdfs.py --source DIR --out OUT [--max-pages 8] [--workers 1]

Prints one JSON line and a markdown table; OUT must not hold a prepared corpus yet (a resumed
run would not be timed).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench import common
from docjepa import prepare as prepare_cli
from docjepa.data import pipeline, prepare


def ink_mask(image: np.ndarray, contrast: int) -> np.ndarray:
    """Pixels that differ from the page's most frequent colour by more than `contrast`."""
    colours, counts = np.unique(image.reshape(-1, 3), axis=0, return_counts=True)
    paper = colours[counts.argmax()].astype(np.int16)
    return np.abs(image.astype(np.int16) - paper).max(-1) > contrast


def ink_shares(ink: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, float]:
    """The ink share of each box, and the share of the page's ink inside any box."""
    h, w = ink.shape
    covered = np.zeros_like(ink)
    shares = np.zeros(len(boxes))
    for j, (x0, y0, x1, y1) in enumerate(boxes):
        c0, r0 = min(max(math.floor(x0), 0), w - 1), min(max(math.floor(y0), 0), h - 1)
        c1, r1 = max(min(math.ceil(x1), w), c0 + 1), max(min(math.ceil(y1), h), r0 + 1)
        shares[j] = ink[r0:r1, c0:c1].mean()
        covered[r0:r1, c0:c1] = True
    total = int(ink.sum())
    return shares, float((ink & covered).sum() / total) if total else 1.0


def moved(boxes: np.ndarray, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """The same boxes, each moved to a random place on the page."""
    size = boxes[:, 2:] - boxes[:, :2]
    corner = rng.uniform(0, 1, size.shape) * np.maximum(np.array([width, height]) - size, 0)
    return np.concatenate([corner, corner + size], axis=1)


def check_pages(out: str, contrast: int, min_ink: float) -> list[dict[str, Any]]:
    """One row per stored page: doc_id, page, words, words holding ink, the same boxes moved at
    random holding ink, and the share of the page's ink inside word boxes."""
    rows = []
    for split, info in pipeline.read_manifest(out)["splits"].items():
        if not info["files"]:
            continue
        for rec in pipeline.records(out, split, {"doc_id", "pages_png", "ocr_json"}):
            pages = json.loads(rec["ocr_json"])["pages"]
            for p, (png, page) in enumerate(zip(rec["pages_png"], pages, strict=True)):
                image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
                if image.shape[:2] != (page["height"], page["width"]):
                    raise ValueError(f"{rec['doc_id']} page {p}: image {image.shape[:2]} vs OCR "
                                     f"{page['height']}x{page['width']}")
                ink = ink_mask(image, contrast)
                boxes = np.asarray(page["words"]["box"], np.float64).reshape(-1, 4)
                shares, coverage = ink_shares(ink, boxes)
                rng = np.random.default_rng([len(rows)])
                control, _ = ink_shares(ink, moved(boxes, page["width"], page["height"], rng))
                rows.append({"doc_id": rec["doc_id"], "page": p, "words": len(boxes),
                             "inked": int((shares >= min_ink).sum()), "moved_inked": int((control >= min_ink).sum()),
                             "ink_in_boxes": round(coverage, 3)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="a directory of PDFs")
    parser.add_argument("--out", required=True, help="a new output directory for the prepared corpus")
    parser.add_argument("--config", default="configs/demo.py")
    parser.add_argument("--max-pages", type=int, default=8, help="prepare.max_pages")
    parser.add_argument("--workers", type=int, default=1, help="prepare.workers")
    parser.add_argument("--contrast", type=int, default=32, help="ink: differs from the paper by more than this")
    parser.add_argument("--min-ink", type=float, default=0.02, help="a box holds ink from this share of ink pixels")
    parser.add_argument("--page-share", type=float, default=0.95, help="a page is checked from this share of words")
    parser.add_argument("--worst", type=int, default=8, help="pages listed, lowest share of words holding ink")
    args = parser.parse_args()
    if (Path(args.out) / "manifest.json").exists():
        parser.error(f"--out: {args.out} already holds a prepared corpus (a resumed run is not timed)")

    cfg = common.load_config(args.config)
    cfg.prepare.source, cfg.prepare.max_pages, cfg.prepare.workers = args.source, args.max_pages, args.workers
    start = time.perf_counter()
    manifest = prepare.prepare(cfg, args.out)
    seconds = time.perf_counter() - start
    run = prepare_cli.summary(manifest, args.out, seconds)
    rejected = [json.loads(line) for line in (Path(args.out) / "rejected.jsonl").read_text().splitlines()]

    rows = check_pages(args.out, args.contrast, args.min_ink)
    words = sum(r["words"] for r in rows)
    inked = sum(r["inked"] for r in rows)
    moved_inked = sum(r["moved_inked"] for r in rows)
    checked = [r for r in rows if r["inked"] >= args.page_share * r["words"]]
    for r in rows:
        r["share"] = round(r["inked"] / r["words"], 3) if r["words"] else 1.0
    worst = sorted(rows, key=lambda r: (r["share"], r["ink_in_boxes"]))[:args.worst]
    result = {
        "machine": common.machine(), "date": common.today(), "command": common.command(),
        "source": args.source, "files": len(prepare.make_source(args.source).items()),
        "documents": run["documents"], "rejected": run["rejected"], "rejected_jsonl": rejected,
        "pages": run["pages"], "dropped_pages": run["dropped_pages"], "truncated": run["truncated"],
        "words": words, "seconds": run["seconds"], "pages_per_s": round(run["pages"]["kept"] / seconds, 2),
        "check": {"contrast": args.contrast, "min_ink": args.min_ink, "page_share": args.page_share},
        "pages_checked": len(checked), "pages_checked_share": round(len(checked) / len(rows), 4) if rows else 0.0,
        "words_inked": inked, "words_inked_share": round(inked / words, 4) if words else 0.0,
        "moved_inked_share": round(moved_inked / words, 4) if words else 0.0,
        "median_ink_in_boxes": round(statistics.median(r["ink_in_boxes"] for r in rows), 3) if rows else 0.0,
        "worst_pages": worst,
    }
    print(json.dumps(result))
    table = [
        ("PDFs in the folder", result["files"]),
        ("documents kept / rejected", f"{run['documents']['kept']} / {run['documents']['rejected']}"),
        ("rejected, by reason", ", ".join(f"{k}: {v}" for k, v in run["rejected"].items()) or "-"),
        ("pages kept / dropped", f"{run['pages']['kept']} / {run['pages']['dropped']}"),
        ("pages dropped, by reason", ", ".join(f"{k}: {v}" for k, v in run["dropped_pages"].items()) or "-"),
        (f"documents cut at max_pages={args.max_pages}", run["truncated"]["documents"]),
        ("words on kept pages", words),
        ("prepare wall time", f"{run['seconds']} s"),
        ("kept pages / s", result["pages_per_s"]),
        (f"pages with >= {args.page_share:.0%} of word boxes holding ink",
         f"{len(checked)} / {len(rows)} ({result['pages_checked_share']:.1%})"),
        ("word boxes holding ink", f"{inked} / {words} ({result['words_inked_share']:.2%})"),
        ("control: the same boxes moved at random, holding ink", f"{result['moved_inked_share']:.2%}"),
        ("median share of a page's ink inside word boxes", result["median_ink_in_boxes"]),
    ]
    print("\n| measure | value |\n|---|---|")
    print("\n".join(f"| {k} | {v} |" for k, v in table))
    print("\n| worst pages | page | words | holding ink | ink inside boxes |\n|---|---|---|---|---|")
    print("\n".join(f"| {r['doc_id']} | {r['page']} | {r['words']} | {r['share']:.1%} | {r['ink_in_boxes']} |"
                    for r in worst))


if __name__ == "__main__":
    main()

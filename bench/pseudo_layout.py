"""Pseudo-layout masks (docjepa/data/pseudo_layout.py) on a prepared corpus: the cost per page
and, where the records hold true layout boxes (synthetic documents), the mean IoU of the mask
against the union of those boxes, per category. Appends its rows to BENCHMARKS.md under
"## Pseudo-layout masks".

    PYTHONPATH=. .venv/bin/python bench/pseudo_layout.py --data data/demo [--split train] [--docs 60]
"""

from __future__ import annotations

import argparse
import collections
import time
from pathlib import Path

import numpy as np

from bench import common
from docjepa.data import ocr, pipeline, pseudo_layout
from docjepa.evals.common import mean_iou

TITLE = "Pseudo-layout masks"
COLUMNS = ("date", "machine", "command", "category", "pages", "ms/page", "mIoU vs true layout", "all-background mIoU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a prepared data directory")
    parser.add_argument("--split", default="train")
    parser.add_argument("--docs", type=int, default=60, help="documents read (from the start of the split)")
    parser.add_argument("--out", default=str(common.BENCHMARKS))
    args = parser.parse_args()

    n = pipeline.read_manifest(args.data)["splits"][args.split]["documents"]
    seconds, ious, blank = collections.defaultdict(list), collections.defaultdict(list), collections.defaultdict(list)
    for i in range(min(args.docs, n)):
        rec = pipeline.load_record(args.data, args.split, i)
        doc = ocr.Document.from_json(rec["ocr_json"])
        for p, image in enumerate(rec["pages"]):
            t0 = time.perf_counter()
            mask = pseudo_layout.page_mask(image)
            seconds[rec["category"]].append(time.perf_counter() - t0)
            if doc.pages[p].layout:
                true = pseudo_layout.true_mask([el.box for el in doc.pages[p].layout], mask.shape)
                ious[rec["category"]].append(mean_iou(mask, true, 2)[0])
                blank[rec["category"]].append(mean_iou(np.zeros_like(true), true, 2)[0])
    rows = []
    for cat in sorted(seconds) + ["all"]:
        pick = (lambda d: sum(d.values(), [])) if cat == "all" else (lambda d: d.get(cat, []))  # noqa: E731
        t, iou, base = pick(seconds), pick(ious), pick(blank)
        rows.append((common.today(), common.machine(), common.command(), cat, len(t), f"{1000 * np.mean(t):.1f}",
                     f"{np.mean(iou):.3f}" if iou else "-", f"{np.mean(base):.3f}" if base else "-"))
    common.print_table(COLUMNS[3:], [r[3:] for r in rows])
    common.append_rows(TITLE, COLUMNS, rows, path=Path(args.out),
                       note="Masks of the pages as stored (`prepare.page_width` wide), against the union of the "
                            "synthetic generator's layout boxes; mIoU over {background, region}.")


if __name__ == "__main__":
    main()

"""What a batch of document streams holds: how many documents, and how many places on the page.

Rows that start together read their documents in step: most pages have the same number of
windows, so with short chunks every row reads the same place on its page at the same step and a
batch is mostly one window position (all top-left windows, then all the next ones, ...).
`data.stagger` starts each row inside its first document. For each training batch this prints
the share of its real windows at the batch's most common window position (the window's column
and row on its page) and the number of documents:

    PYTHONPATH=. python bench/stream_mix.py --data data/demo --batch 60 --max_steps 1 --steps 150
    PYTHONPATH=. python bench/stream_mix.py --data data/demo --batch 60 --max_steps 1 --steps 150 --stagger
"""

from __future__ import annotations

import argparse

import numpy as np

from bench import common
from configs import demo
from docjepa.data import pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--batch", type=int, default=60, help="streams (rows)")
    parser.add_argument("--max_steps", type=int, default=1, help="windows per chunk")
    parser.add_argument("--max_pages", type=int, default=1)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--stagger", action="store_true", help="data.stagger")
    args = parser.parse_args()
    cfg = demo.get_config().data
    cfg.update(dir=args.data, augment=False, stagger=args.stagger, batch_size=args.batch,
               max_steps=args.max_steps, max_pages=args.max_pages)
    it = pipeline.make_train_iterator(cfg, seed=0, local_batch_size=args.batch, process_index=0, process_count=1)
    top, docs = [], []
    for _ in range(args.steps):
        b = next(it)
        real = b["step_mask"]
        step = min(np.diff(np.unique(b["window_rows"][real][:, 1])), default=1)  # the window stride, px
        place = b["window_rows"][..., 1] // step * 1000 + b["window_rows"][..., 2] // step
        top.append(np.unique(place[real], return_counts=True)[1].max() / real.sum())
        docs.append(len(np.unique(b["record_index"][real.any(axis=1)])))
    print(f"{args.batch} streams x {args.max_steps} windows, stagger {args.stagger}, {args.steps} batches: "
          f"share at the most common place {np.mean(top):.2f} (first 10 batches {np.mean(top[:10]):.2f}, "
          f"last 50 {np.mean(top[-50:]):.2f}), documents per batch {np.mean(docs):.1f}; {common.machine()}")


if __name__ == "__main__":
    main()

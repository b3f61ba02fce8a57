"""What a window budget (`data.window_capacity`) does to the training streams of a corpus.

    PYTHONPATH=. python bench/window_budget.py --data DIR [--rows 8] [--max_steps 16] [--max_pages 4]
        [--capacity 1.0 0.9 0.8 0.75] [--batches 100] [--no_write]

For each capacity, the real training iterator (`pipeline.make_train_iterator`, one process, the
budget of one batch shard) runs `batches` steps and reports: the fraction of the step's window
slots that hold a real window (what a dense step encodes in vain is the rest), the fraction of
the encoded slots that do, the fraction of row-steps spent waiting for room, and the real
windows read per step (the streams' progress). Hiera's work per step is the encoded slots, so
encoded slots / all slots is its FLOP ratio to the dense step. Appends rows to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse

import numpy as np

from bench import common
from configs import demo
from docjepa.data import pipeline

TITLE = "Window budget: stream fill and waits"
COLUMNS = ("date", "machine", "command", "rows x steps", "capacity", "encoded slots", "real / slots",
           "real / encoded", "row-steps waiting", "real windows per step")
NOTE = ("The real training streams over the corpus for the given number of steps; 'encoded slots' is what Hiera "
        "runs per step (all slots without a budget), so its ratio to rows x steps is the encoder's FLOP ratio.")


def stream_stats(data_dir: str, rows: int, max_steps: int, max_pages: int, capacity: float, batches: int) -> dict:
    cfg = demo.get_config().data
    cfg.dir, cfg.max_steps, cfg.max_pages, cfg.worker_count = data_dir, max_steps, max_pages, 2
    budget = pipeline.window_budget(capacity, rows, max_steps)
    it = pipeline.make_train_iterator(cfg, seed=0, local_batch_size=rows, process_index=0, process_count=1,
                                      budget=budget)
    real = waits = 0
    try:
        for _ in range(batches):
            b = next(it)
            real += int(b["step_mask"].sum())
            waits += int((~b["example_mask"] & ~b["reset"]).sum())
    finally:
        it.close()
    slots = rows * max_steps
    encoded = slots if budget is None else rows // budget.rows * budget.windows
    return {"encoded": encoded, "fill": real / (batches * slots), "encoded_fill": real / (batches * encoded),
            "waiting": waits / (batches * rows), "per_step": real / batches}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a prepared data directory")
    parser.add_argument("--rows", type=int, default=8, help="stream rows (one batch shard's)")
    parser.add_argument("--max_steps", type=int, default=16)
    parser.add_argument("--max_pages", type=int, default=4)
    parser.add_argument("--capacity", type=float, nargs="+", default=[1.0, 0.9, 0.8, 0.75])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--no_write", action="store_true", help="print only, do not touch BENCHMARKS.md")
    args = parser.parse_args()
    rows = []
    for capacity in args.capacity:
        r = stream_stats(args.data, args.rows, args.max_steps, args.max_pages, capacity, args.batches)
        rows.append((common.today(), common.machine(), common.command(), f"{args.rows} x {args.max_steps}",
                     capacity, r["encoded"], f"{r['fill']:.3f}", f"{r['encoded_fill']:.3f}", f"{r['waiting']:.3f}",
                     f"{r['per_step']:.1f}"))
    common.print_table(COLUMNS[3:], [row[3:] for row in rows])
    if not args.no_write:
        common.append_rows(TITLE, COLUMNS, rows, note=NOTE)


if __name__ == "__main__":
    main()

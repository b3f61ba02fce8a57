"""Training-pipeline throughput (patches/s): read, PNG decode, cut windows, augment, batch.

Times `make_train_iterator` with grain worker_count 0, 1 and 2 on a prepared corpus (one is
prepared from synth:N into a temporary directory when --data is not given). The first
batches of each run, which pay for worker start-up, are not timed. Prints a table and
appends its rows to BENCHMARKS.md under "## Data pipeline throughput" (bench/common.py).

    PYTHONPATH=. .venv/bin/python bench/data_pipeline.py [--data DIR] [--batches 20] [--batch 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import common
from configs import demo
from docjepa.data import pipeline, prepare

TITLE = "Data pipeline throughput"
COLUMNS = ("date", "machine", "command", "workers", "patches/s")


def patches_per_second(data_dir: str, workers: int, batch: int, batches: int, warmup: int) -> float:
    cfg = demo.get_config().data
    cfg.dir, cfg.worker_count = data_dir, workers
    it = pipeline.make_train_iterator(cfg, seed=0, local_batch_size=batch, process_index=0, process_count=1)
    try:
        for _ in range(warmup):
            next(it)
        start = time.perf_counter()
        steps = sum(int(np.sum(next(it)["step_mask"])) for _ in range(batches))
        return steps / (time.perf_counter() - start)
    finally:
        if hasattr(it, "close"):
            it.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="", help="a prepared data dir; empty = prepare synth:N into a temp dir")
    parser.add_argument("--synth", type=int, default=24, help="N for the temporary corpus")
    parser.add_argument("--batch", type=int, default=8, help="examples per batch (16 patches each)")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per setting")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=str(common.BENCHMARKS))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if not data:
            cfg = demo.get_config()
            cfg.prepare.source, cfg.prepare.val_fraction = f"synth:{args.synth}", 0.0
            prepare.prepare(cfg, tmp)
            data = tmp
        rows = []
        for workers in args.workers:
            rate = patches_per_second(data, workers, args.batch, args.batches, args.warmup)
            print(f"worker_count={workers}: {rate:.1f} patches/s")
            rows.append((common.today(), common.machine(), common.command(), workers, f"{rate:.1f}"))
    common.print_table(COLUMNS, rows)
    common.append_rows(TITLE, COLUMNS, rows, path=Path(args.out))


if __name__ == "__main__":
    main()

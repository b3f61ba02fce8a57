"""prepare's documents/s on the local process pool against the Beam DirectRunner, same workers.

    PYTHONPATH=. python bench/prepare_runners.py [--config configs/demo.py] [--synth 40] [--workers 2]
        [--shard_docs 10] [--no_write]

Both runs start cold in fresh output directories and are timed end to end as a user sees them
(listing, reading, rendering, the text encoder's loading and compilation, embedding, writing,
manifest and text bank): the pool with `prepare.workers` spawn processes, Beam with the
DirectRunner in multi_processing mode on as many workers (each loads its own encoder). The
shards of the two runs are compared byte for byte. The load average before and after each run
is recorded, since a shared machine slows both. Appends one row per path to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from bench import common
from docjepa.data import prepare, prepare_beam

TITLE = "prepare: local pool vs Beam DirectRunner"
COLUMNS = ("date", "machine", "command", "path", "documents kept", "shards", "seconds", "documents/s",
           "load avg before / after", "shards = pool's")
NOTE = ("Cold runs, end to end (encoder load and compile, embedding, manifest and text bank included), "
        "into fresh directories; `pool` is prepare.prepare with prepare.workers spawn processes, "
        "`DirectRunner` is python -m docjepa.prepare --runner DirectRunner -- --direct_num_workers=N "
        "--direct_running_mode=multi_processing (docjepa/data/prepare_beam.py). Load averages are "
        "os.getloadavg()'s 1-minute figure: other work on the machine slows both paths.")


def timed(run: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], float, str]:
    """run()'s manifest, its wall seconds and the 1-minute load average before / after it."""
    before = os.getloadavg()[0]
    start = time.perf_counter()
    manifest = run()
    seconds = time.perf_counter() - start
    return manifest, seconds, f"{before:.1f} / {os.getloadavg()[0]:.1f}"


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.array_record"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.py")
    parser.add_argument("--synth", type=int, default=40, help="documents: synth:N")
    parser.add_argument("--workers", type=int, default=2, help="pool processes = DirectRunner workers")
    parser.add_argument("--shard_docs", type=int, default=10)
    parser.add_argument("--no_write", action="store_true", help="print only, do not touch BENCHMARKS.md")
    args = parser.parse_args()
    if args.synth < 1 or args.workers < 1 or args.shard_docs < 1:
        parser.error("--synth, --workers and --shard_docs must be positive")

    cfg = common.load_config(args.config)
    cfg.prepare.source = f"synth:{args.synth}"
    cfg.prepare.workers = args.workers
    cfg.prepare.shard_docs = args.shard_docs
    beam_args = ["--runner=DirectRunner", f"--direct_num_workers={args.workers}",
                 "--direct_running_mode=multi_processing", "--default_sdk_harness_log_level=WARNING"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_prepare_") as tmp:
        pool_out, beam_out = Path(tmp, "pool"), Path(tmp, "beam")
        runs = {
            f"pool, {args.workers} workers": (pool_out, lambda: prepare.prepare(cfg, str(pool_out), progress=False)),
            f"DirectRunner multi_processing, {args.workers} workers":
                (beam_out, lambda: prepare_beam.prepare_beam(cfg, str(beam_out), beam_args)[0]),
        }
        for name, (out, run) in runs.items():
            manifest, seconds, load = timed(run)
            kept = sum(s["documents"] for s in manifest["splits"].values())
            same = "-" if out == pool_out else ("yes" if shard_bytes(out) == shard_bytes(pool_out) else "NO")
            rows.append((common.today(), common.machine(), common.command(), name, kept,
                         len(list(out.glob("*.array_record"))), f"{seconds:.1f}", f"{kept / seconds:.3f}", load, same))
    common.print_table(COLUMNS[3:], [r[3:] for r in rows])
    if not args.no_write:
        common.append_rows(TITLE, COLUMNS, rows, note=NOTE)


if __name__ == "__main__":
    main()

"""texts/s of the embedding stage, `python -m docjepa.embed`, on this CPU: 1 device and 8 simulated.

    PYTHONPATH=. python bench/embed.py [--config configs/demo.py] [--synth 12] [--shard_docs 4]
        [--devices 1 8] [--no_write]

prepare writes synth:N once without embeddings (`prepare.embed=False`); each device count then
embeds a fresh copy of it with the real command in a subprocess (`--xla_force_host_platform_device_count`).
Its summary line gives the texts it embedded (the window and page texts of the shards, repeats
included: each shard embeds its unique texts once) and the seconds from reading the corpus to the
manifest (encoder loading and compilation included); the wall column adds the interpreter's
start. The shards of each run are compared byte for byte with the first run's. Appends one row per
device count to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import common
from docjepa.data import prepare

TITLE = "Embedding stage (python -m docjepa.embed)"
COLUMNS = ("date", "machine", "command", "devices", "shards", "texts", "embed s", "wall s", "texts/s",
           "load avg before / after", "files = first run's")
NOTE = ("A texts-only corpus (prepare.embed=False) embedded by `python -m docjepa.embed --data DIR` in a "
        "subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=D; texts are the shards' window and "
        "page texts (repeats included), `embed s` the command's own seconds (encoder load and compile included), "
        "texts/s = texts / embed s. Each device computes whole slices of text.batch_size texts, so every "
        "device count writes the same bytes. `files = first run's`: every file of the directory equal to the "
        "first device count's (docs/data.md, 'Embedding as its own stage'); rows before 2026-12-03 13:00 split "
        "a batch of text.batch_size over the D devices, and 8 devices were within one float16 ulp of 1. "
        "A call fills every device with a slice, padding slices included: these shards hold about 53 texts "
        "each, one slice, so on 8 devices a call computes one slice of text and seven of padding, which the "
        "8 simulated devices pay for on the same 2 cores; shards of thousands of texts pad at most 7 slices per "
        "length bucket.")
ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.py")
    parser.add_argument("--synth", type=int, default=12, help="documents: synth:N")
    parser.add_argument("--shard_docs", type=int, default=4)
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--no_write", action="store_true", help="print only, do not touch BENCHMARKS.md")
    args = parser.parse_args()
    if args.synth < 1 or args.shard_docs < 1 or min(args.devices) < 1:
        parser.error("--synth, --shard_docs and --devices must be positive")

    cfg = common.load_config(args.config)
    cfg.prepare.source = f"synth:{args.synth}"
    cfg.prepare.shard_docs = args.shard_docs
    cfg.prepare.embed = False
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_embed_") as tmp:
        texts_only = Path(tmp, "texts")
        prepare.prepare(cfg, str(texts_only), progress=False)
        first = None
        for devices in args.devices:
            out = Path(tmp, f"devices_{devices}")
            shutil.copytree(texts_only, out)
            env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu",
                       XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
            before = os.getloadavg()[0]
            start = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "docjepa.embed", f"--data={out}"], cwd=ROOT, env=env,
                               capture_output=True, text=True)
            wall = time.perf_counter() - start
            if r.returncode:
                sys.exit(f"error: docjepa.embed on {devices} devices failed: {r.stderr.strip().splitlines()[-1:]}")
            summary = json.loads(r.stdout.strip().splitlines()[-1])
            files = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
            same = "-" if first is None else ("yes" if files == first else "NO")
            first = files if first is None else first
            rows.append((common.today(), common.machine(), common.command(), summary["devices"], summary["shards"],
                         summary["texts"], f"{summary['seconds']:.1f}", f"{wall:.1f}",
                         f"{summary['texts'] / summary['seconds']:.1f}",
                         f"{before:.1f} / {os.getloadavg()[0]:.1f}", same))
    common.print_table(COLUMNS[3:], [r[3:] for r in rows])
    if not args.no_write:
        common.append_rows(TITLE, COLUMNS, rows, note=NOTE)


if __name__ == "__main__":
    main()

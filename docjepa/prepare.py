"""Entry point: python -m docjepa.prepare --config configs/demo.py --out DIR [--source S].

`--source` overrides config.prepare.source: synth:N, a directory of PDFs/images, or
tfds:NAME[:SPLIT][@DATA_DIR]. Re-running with the same --out completes an interrupted run.
"""

from __future__ import annotations

import json
import sys
import time

from absl import app, flags
from ml_collections import config_flags

from docjepa.data import prepare

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (ml_collections).", lock_config=True)
_OUT = flags.DEFINE_string("out", None, "Output directory for the shards and manifest.json.")
_SOURCE = flags.DEFINE_string("source", None, "Overrides config.prepare.source.")


def main(argv: list[str]) -> None:
    del argv
    if _CONFIG.value is None:
        sys.exit("error: --config: required (e.g. --config configs/demo.py)")
    if not _OUT.value:
        sys.exit("error: --out: required (the output directory)")
    cfg = _CONFIG.value
    if _SOURCE.value:
        with cfg.unlocked():
            cfg.prepare.source = _SOURCE.value
    start = time.perf_counter()
    try:
        manifest = prepare.prepare(cfg, _OUT.value)
    except prepare.PrepareError as e:
        sys.exit(f"error: {e}")
    counts = {k: {c: v[c] for c in ("documents", "pages", "windows")} for k, v in manifest["splits"].items()}
    print(json.dumps({"out": _OUT.value, "splits": counts, "rejected": manifest["rejected"],
                      "seconds": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    app.run(main)

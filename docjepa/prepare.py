"""Entry point: python -m docjepa.prepare --config configs/demo.py --out DIR [--source S].

`--source` overrides config.prepare.source: synth:N, a directory of PDFs/images, or
tfds:NAME[:SPLIT][@DATA_DIR]. Re-running with the same --out completes an interrupted run.
Prints one JSON summary line on stdout; exits 1 when no document was kept, 2 for a bad
command line.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from absl import app, flags, logging
from ml_collections import config_flags

from docjepa import cli
from docjepa.data import prepare

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (ml_collections).", lock_config=True)
_OUT = flags.DEFINE_string("out", None, "Output directory for the shards and manifest.json.")
_SOURCE = flags.DEFINE_string("source", None, "Overrides config.prepare.source.")


def summary(manifest: dict[str, Any], out: str, seconds: float) -> dict[str, Any]:
    """The run in numbers: kept and rejected documents, kept and dropped pages apart, each
    rejection and drop by reason, and documents cut at max_pages."""
    splits = manifest["splits"]
    return {
        "out": out,
        "documents": {"kept": sum(s["documents"] for s in splits.values()),
                      "rejected": sum(manifest["rejected"].values())},
        "pages": {"kept": sum(s["pages"] for s in splits.values()),
                  "dropped": sum(manifest["dropped_pages"].values())},
        "rejected": manifest["rejected"], "dropped_pages": manifest["dropped_pages"],
        "truncated": manifest["truncated"],
        "splits": {k: {c: v[c] for c in ("documents", "pages", "windows")} for k, v in splits.items()},
        "seconds": round(seconds, 1),
    }


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.usage_error(f"unexpected argument {argv[1]!r} (flags are --config, --out, --source)")
    if _CONFIG.value is None:
        cli.usage_error("--config: required (e.g. --config configs/demo.py)")
    if not _OUT.value:
        cli.usage_error("--out: required (the output directory)")
    if not flags.FLAGS["verbosity"].present:  # per-shard INFO lines would break up the progress bars
        logging.set_verbosity(logging.WARNING)
    cfg = _CONFIG.value
    if _SOURCE.value:
        with cfg.unlocked():
            cfg.prepare.source = _SOURCE.value
    start = time.perf_counter()
    try:
        manifest = prepare.prepare(cfg, _OUT.value)
    except prepare.PrepareError as e:
        sys.exit(f"error: {e}")
    result = summary(manifest, _OUT.value, time.perf_counter() - start)
    print(json.dumps(result))
    if not result["documents"]["kept"]:
        sys.exit(f"error: no document kept ({result['documents']['rejected']} rejected, "
                 f"reasons in {_OUT.value}/rejected.jsonl)")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)

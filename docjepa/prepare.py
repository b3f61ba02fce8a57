"""Entry point: python -m docjepa.prepare --config configs/demo.py --out DIR [--source S]
[--runner R -- BEAM_OPTIONS...].

`--source` overrides config.prepare.source: synth:N, a directory of PDFs/images, or
tfds:NAME[:SPLIT][@DATA_DIR]. Re-running with the same --out completes an interrupted run.
`--runner` (e.g. DirectRunner) runs the same work as an Apache Beam pipeline on that runner
(docjepa.data.prepare_beam), with the Beam pipeline options given after `--`; without it the
local process pool of config.prepare.workers does. Prints one JSON summary line on stdout;
exits 1 when no document was kept, 2 for a bad command line.
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
_RUNNER = flags.DEFINE_string("runner", "", "An Apache Beam runner (DirectRunner, DataflowRunner, FlinkRunner, "
                              "SparkRunner, ...) to run prepare on, with the pipeline options given after `--`; "
                              "empty: the local process pool (config.prepare.workers).")


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


def _prepare_beam(cfg: Any, options: list[str]) -> tuple[dict[str, Any], dict[str, int]]:
    """prepare on the --runner Beam runner with the pipeline `options` given after `--`."""
    try:
        from docjepa.data import prepare_beam  # Apache Beam is needed on this path only
    except ImportError as e:
        sys.exit(f"error: --runner: needs Apache Beam ({e}); pip install -r requirements-dev.txt")
    args = [f"--runner={_RUNNER.value}", *options]
    if not any(a.startswith("--default_sdk_harness_log_level") for a in args):
        args.append("--default_sdk_harness_log_level=WARNING")  # workers as quiet as the local path
    try:
        prepare_beam.pipeline_options(args)
    except prepare.PrepareError as e:
        cli.usage_error(e)
    return prepare_beam.prepare_beam(cfg, _OUT.value, args)


def main(argv: list[str]) -> None:
    if len(argv) > 1 and not _RUNNER.value:
        cli.usage_error(f"unexpected argument {argv[1]!r} (flags are --config, --out, --source, --runner; "
                        "Beam pipeline options go after --runner R --)")
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
    counters = None
    try:
        if _RUNNER.value:
            manifest, counters = _prepare_beam(cfg, argv[1:])
        else:
            manifest = prepare.prepare(cfg, _OUT.value)
    except prepare.PrepareError as e:
        sys.exit(f"error: {e}")
    result = summary(manifest, _OUT.value, time.perf_counter() - start)
    if counters is not None:
        result["beam_counters"] = counters
    print(json.dumps(result))
    if not result["documents"]["kept"]:
        sys.exit(f"error: no document kept ({result['documents']['rejected']} rejected, "
                 f"reasons in {_OUT.value}/rejected.jsonl)")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)

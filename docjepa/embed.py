"""Embedding as its own stage: python -m docjepa.embed --data DIR [--config CONFIG] [--config.FIELD=VALUE ...].

Fills in the text embeddings of a corpus written by `python -m docjepa.prepare
--config.prepare.embed=False`, where the frozen text encoder is the bottleneck of a CPU host:
each shard's window and page texts go through the Flax text encoder (docjepa.text: jitted,
every batch split over the process's devices), the shard is replaced (temporary file, rename)
by the records an inline prepare writes, bytes for bytes, and manifest.json, rejected.jsonl,
the text bank and the target mean are written as prepare writes them (prepare.embed_corpus).

Run it once per host like training (docs/launching.md): process i embeds every
process-count-th shard from the i-th, on its own devices, and process 0 writes the manifest
once all are done; DIR must be one directory all hosts see. A rerun skips the shards already
embedded. `--config` defaults to the config DIR was prepared with (docjepa/corpus_config.py);
one that differs from it (another text encoder) is refused. Prints one JSON summary line on
stdout; exits 2 for a bad command line, 1 for a directory that cannot be embedded.
"""

from __future__ import annotations

import json
import sys
import time

import jax
from absl import app, flags, logging
from jax.experimental import multihost_utils
from ml_collections import config_flags

from docjepa import cli, corpus_config, sharding
from docjepa.data import prepare

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Command-line flags, defined only when this module is the program (not on import)."""
    config_flags.DEFINE_config_file("config", None, "Config file (default: the config DIR was prepared with, "
                                    "docjepa/corpus_config.py).", lock_config=True)
    flags.DEFINE_string("data", None, "A directory written by python -m docjepa.prepare --config.prepare.embed=False.")


def parse_flags(argv: list[str]) -> list[str]:
    """`cli.parse_flags`, with `--config` defaulting to the corpus's own (DIR/manifest.json), and
    one line for a --data that is not a prepared corpus."""
    data = cli.flag_argument(argv[1:], "data")
    if not data:
        cli.usage_error("--data: required (a directory written by python -m docjepa.prepare)")
    if cli.flag_argument(argv[1:], "config") is None:
        try:
            prepare.read_corpus(data)
        except prepare.PrepareError as e:
            sys.exit(f"error: {e}")
        argv = [argv[0], f"--config={corpus_config.__file__}:{data}", *argv[1:]]
    return cli.parse_flags(argv)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.usage_error(f"unexpected argument {argv[1]!r} (flags are --data and --config)")
    if not flags.FLAGS["verbosity"].present:  # per-shard INFO lines would break up the progress bars
        logging.set_verbosity(logging.WARNING)
    sharding.maybe_initialize_distributed()
    count, index = jax.process_count(), jax.process_index()
    start = time.perf_counter()
    try:
        manifest, written = prepare.embed_corpus(
            FLAGS.config, FLAGS.data, process_index=index, process_count=count, progress=index == 0,
            barrier=multihost_utils.sync_global_devices if count > 1 else None)
    except prepare.PrepareError as e:
        sys.exit(f"error: {e}")
    seconds = time.perf_counter() - start
    texts = sum(s["windows"] + s["pages"] for s in written)
    print(json.dumps({"data": FLAGS.data, "process": index, "devices": jax.local_device_count(),
                      "shards": len(written), "texts": texts, "seconds": round(seconds, 1),
                      "texts_per_s": round(texts / max(seconds, 1e-9), 1),
                      "encoder": manifest["encoder"],
                      "splits": {k: {c: v[c] for c in ("documents", "pages", "windows")}
                                 for k, v in manifest["splits"].items()}}))


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags)

"""The config a corpus was prepared with, as a config file for ml_collections:
`--config docjepa/corpus_config.py:DIR` is the `config` of DIR/manifest.json (seed, prepare and
text, as prepare stored them) with every other field from `configs/common.base()`.
`python -m docjepa.embed` uses it when `--config` is not given, so a corpus is embedded with the
text encoder it was prepared for; overrides apply on top as they do to any config file.
"""

from __future__ import annotations

import ml_collections as mlc

from docjepa import run_config
from docjepa.data import prepare


def get_config(data_dir: str) -> mlc.ConfigDict:
    manifest, _ = prepare.read_corpus(data_dir)
    return run_config.resolve({k: manifest["config"][k] for k in ("seed", "prepare", "text")})

"""The config a training run saved (WORKDIR/config.json), as a config file for ml_collections:
`--config docjepa/run_config.py:WORKDIR`. `python -m docjepa.eval` uses it when `--config` is
not given, so a run is evaluated with the config it was trained with, and overrides
(`--config.evals.max_examples=64`) apply on top as they do to any config file. Fields the run
predates take `configs/common.base()`'s defaults, so older workdirs still validate.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections as mlc

from configs import common
from docjepa.checkpoint import workdir_path


def _tuples(x: Any) -> Any:
    """JSON lists back to the tuples the config files use (mesh axes, evaluator names), so that
    overrides such as --config.evals.names=('retrieval',) keep their type."""
    if isinstance(x, dict):
        return {k: _tuples(v) for k, v in x.items()}
    return tuple(_tuples(v) for v in x) if isinstance(x, list) else x


def _fill(saved: dict, defaults: dict) -> dict:
    """`saved` with the fields it lacks taken from `defaults`, at every depth."""
    out = dict(defaults)
    for k, v in saved.items():
        out[k] = _fill(v, defaults[k]) if isinstance(v, dict) and isinstance(defaults.get(k), dict) else v
    return out


def resolve(saved: dict[str, Any]) -> mlc.ConfigDict:
    """A config saved as JSON (all of it, or some sections) as a config: lists back to tuples,
    the fields it lacks from `configs/common.base()`."""
    return mlc.ConfigDict(_fill(_tuples(saved), common.base().to_dict()))


def load(workdir: str | os.PathLike) -> mlc.ConfigDict:
    """The resolved config the run in `workdir` was trained with."""
    path = workdir_path(workdir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing (is {workdir} a docjepa workdir?)")
    return resolve(json.loads(path.read_text()))


def get_config(workdir: str) -> mlc.ConfigDict:
    return load(workdir)

"""Evaluators in the style of big_vision: one module each, chosen by name in the config
(`config.evals.names` for `python -m docjepa.eval`, `config.evals.in_train` inside training).

An evaluator module declares `NEEDS` (a `features.Needs`: train-split features? Hiera stage
maps?) and `evaluate(train, val, cfg) -> {metric: value}`. `Evaluation` runs one forward pass
per split that covers the union of the chosen evaluators' needs, and nothing more.
To add one: write the module, add it to EVALUATORS.
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

import jax
import ml_collections as mlc
from flax import nnx

from docjepa import validate
from docjepa.data import pipeline
from docjepa.evals import category, layout, memory, prior, retrieval
from docjepa.evals.features import FeatureExtractor, Features, Needs

log = logging.getLogger("docjepa.evals")

EVALUATORS: dict[str, ModuleType] = {"retrieval": retrieval, "category": category, "layout": layout, "prior": prior,
                                     "memory": memory}


def check_names(names: list[str], field: str = "config.evals.names") -> None:
    """Raise ConfigError, naming `field`, if any evaluator name is not registered."""
    unknown = [n for n in names if n not in EVALUATORS]
    if unknown:
        raise validate.ConfigError(f"{field}: unknown evaluator(s) {unknown}; known: {sorted(EVALUATORS)}")


def resolve_splits(data_dir: str, val: str, train: str, need_train: bool) -> tuple[str, str]:
    """The (val, train) splits to read. An empty one is replaced by the other, with a warning:
    metrics on the training split are not held out, and probes fitted on the split they are
    scored on flatter the model."""
    splits = pipeline.read_manifest(data_dir)["splits"]
    has = lambda s: splits.get(s, {}).get("documents", 0) > 0  # noqa: E731
    if not has(val):
        log.warning("%s: split %r has no documents: evaluating on split %r, the training data (metrics are "
                    "not held out)", data_dir, val, train)
        val = train
    if need_train and not has(train):
        log.warning("%s: split %r has no documents: probes and the prior are fitted on split %r, the split "
                    "they are scored on", data_dir, train, val)
        train = val
    return val, train


class Evaluation:
    """Runs the named evaluators on one model (graphdef + params) over one data directory."""

    def __init__(self, cfg: mlc.ConfigDict, graphdef: nnx.GraphDef, mesh: jax.sharding.Mesh, param_sh: Any,
                 names: list[str], data_dir: str):
        check_names(names)
        self.cfg, self.data_dir = cfg, data_dir
        self.evaluators = [EVALUATORS[n] for n in names]
        self.needs = Needs.union(e.NEEDS for e in self.evaluators)
        self.extract = FeatureExtractor(cfg, graphdef, mesh, param_sh, layout=self.needs.layout, trace=self.needs.trace)
        self.val_split, self.train_split = resolve_splits(data_dir, cfg.data.val_split, cfg.data.train_split,
                                                          self.needs.train)

    def run(self, params: Any, tag: str = "eval") -> tuple[dict[str, float], Features]:
        """All metrics (with `val/loss`) and the val features they came from (for plots)."""
        n = self.cfg.evals.max_examples
        val = self.extract(params, self.data_dir, self.val_split, n, desc=f"{tag}:val")
        train = None
        if self.needs.train:
            train = self.extract(params, self.data_dir, self.train_split, n, desc=f"{tag}:train")
        results = {"val/loss": val.val_loss}
        for evaluator in self.evaluators:
            results.update(evaluator.evaluate(train, val, self.cfg))
        return results, val

"""Config validation: every entry point checks its fields before anything compiles.

A bad value produces one line naming the field, e.g.
`config.data.batch_size: must be a positive integer (got 0)`.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Iterable

import ml_collections as mlc


class ConfigError(ValueError):
    """A config field with a bad value; str() is the one-line message for the user."""


def _pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _nonneg_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _pos_float(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _nonneg_float(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _one_of(*choices: Any) -> Callable[[Any], bool]:
    return lambda v: v in choices


def _fraction(v: Any) -> bool:
    return _nonneg_float(v) and v < 1


Rule = tuple[Callable[[Any], bool], str]
_FLAG: Rule = (lambda v: isinstance(v, bool), "must be True or False")

RULES: dict[str, Rule] = {
    "seed": (_nonneg_int, "must be a non-negative integer"),
    "prepare.page_width": (lambda v: _pos_int(v) and v >= 224, "must be an integer >= 224"),
    "prepare.window": (_one_of(224), "must be 224 (the Hiera input size)"),
    "prepare.stride": (_pos_int, "must be a positive integer"),
    "prepare.dpi": (_pos_float, "must be a positive number"),
    "prepare.max_pages": (_pos_int, "must be a positive integer"),
    "prepare.source": (lambda v: isinstance(v, str) and bool(v), "must be a non-empty string"),
    "prepare.max_pixels": (lambda v: _pos_int(v) and v >= 224 * 224, "must be an integer >= 224 * 224"),
    "prepare.val_fraction": (_fraction, "must be in [0, 1)"),
    "prepare.synth_long": (lambda v: isinstance(v, (int, float)) and 0 <= v <= 1, "must be a fraction in [0, 1]"),
    "prepare.synth_long_pages": (lambda v: isinstance(v, tuple) and len(v) == 2 and all(_pos_int(x) for x in v)
                                 and v[0] <= v[1], "must be (min, max) pages with 1 <= min <= max"),
    "prepare.synth_long_splits": (lambda v: isinstance(v, tuple) and set(v) <= {"train", "val"},
                                  "must be a tuple of split names among ('train', 'val')"),
    "prepare.synth_min_x_height": (lambda v: isinstance(v, (int, float)) and v >= 0, "must be a number >= 0"),
    "prepare.shard_docs": (_pos_int, "must be a positive integer"),
    "prepare.workers": (_nonneg_int, "must be a non-negative integer"),
    "prepare.embed": _FLAG,
    "text.pooling": (_one_of("mean", "cls"), "must be 'mean' or 'cls'"),
    "text.max_length": (lambda v: _pos_int(v) and v >= 2, "must be an integer >= 2"),
    "text.batch_size": (_pos_int, "must be a positive integer"),
    "data.dir": (lambda v: isinstance(v, str) and bool(v), "must be a non-empty path"),
    "data.max_steps": (_pos_int, "must be a positive integer"),
    "data.max_pages": (_pos_int, "must be a positive integer"),
    "data.min_words": (_nonneg_int, "must be a non-negative integer"),
    "data.batch_size": (_pos_int, "must be a positive integer"),
    "data.window_capacity": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1,
                              "must be a fraction in (0, 1]"),
    "data.worker_count": (_nonneg_int, "must be a non-negative integer"),
    "data.stream_groups": (_pos_int, "must be a positive integer (1 = every stream every step)"),
    "data.center_targets": _FLAG,
    "data.layout_grid": (_nonneg_int, "must be a non-negative integer (0 = no pseudo-layout targets)"),
    # Hiera implements stochastic depth, but the train step runs the model deterministically
    # (no dropout RNG is threaded through the state yet): refuse rather than silently ignore.
    "model.hiera.drop_path_rate": (lambda v: v == 0, "must be 0 (stochastic depth is not wired into training)"),
    "model.hiera.init_from": (lambda v: v == "" or (isinstance(v, str) and v.endswith(".safetensors")
                                                    and os.path.isfile(v)),
                              "must be '' or an existing .safetensors file of Meta's Hiera weights"),
    "model.ttm.memory_size": (_pos_int, "must be a positive integer"),
    "model.ttm.num_read": (_pos_int, "must be a positive integer"),
    "model.ttm.process": (_one_of("transformer", "mixer", "mlp"), "must be one of transformer, mixer, mlp"),
    "model.ttm.num_layers": (_pos_int, "must be a positive integer"),
    "model.ttm.num_heads": (_pos_int, "must be a positive integer"),
    "model.ttm.dim": (_nonneg_int, "must be a non-negative integer (0 = Hiera's width)"),
    "model.layout_stage": (_one_of(0, 1, 2, 3), "must be a Hiera stage index in 0..3"),
    "model.window_position": _FLAG,
    "model.center_features": _FLAG,
    "model.center_momentum": (_fraction, "must be in [0, 1)"),
    "model.embed_dim": (_nonneg_int, "must be a non-negative integer (0 = the text encoder's width)"),
    "model.dtype": (_one_of("float32", "bfloat16"), "must be 'float32' or 'bfloat16'"),
    "model.pixels": (_one_of("imagenet", "ink"), "must be 'imagenet' or 'ink'"),
    "model.pool": (_one_of("mean", "flatten"), "must be 'mean' or 'flatten'"),
    "loss.window_weight": (_nonneg_float, "must be a finite number >= 0"),
    "loss.page_weight": (_nonneg_float, "must be a finite number >= 0"),
    "loss.doc_weight": (_nonneg_float, "must be a finite number >= 0"),
    "loss.doc_running_weight": (_nonneg_float, "must be a finite number >= 0"),
    "loss.layout_weight": (_nonneg_float, "must be a finite number >= 0"),
    "loss.flip_weight": (_nonneg_float, "must be a finite number >= 0"),
    "loss.sort_weight": (_nonneg_float, "must be a finite number >= 0"),
    "loss.variance_weight": (_nonneg_float, "must be a finite number >= 0"),
    "loss.variance_floor": (_nonneg_float, "must be a finite number >= 0"),
    "loss.pretext_windows": (_pos_int, "must be a positive integer"),
    "loss.byol_weight": (_nonneg_float, "must be a finite number >= 0"),
    "loss.byol_momentum": (lambda v: _finite(v) and 0 <= v <= 1, "must be in [0, 1]"),
    "loss.byol_momentum_cosine": _FLAG,
    "loss.byol_windows": (_pos_int, "must be a positive integer"),
    "loss.byol_regions": (_pos_int, "must be a positive integer"),
    "loss.byol_dim": (_pos_int, "must be a positive integer"),
    "loss.byol_hidden": (_pos_int, "must be a positive integer"),
    "loss.sort_strips": (lambda v: _pos_int(v) and 2 <= v <= 6, "must be an integer in [2, 6] (strips! classes)"),
    "loss.focal_alpha": (lambda v: _finite(v) and v <= 1, "must be <= 1 (< 0 turns alpha weighting off)"),
    "loss.focal_gamma": (_nonneg_float, "must be a finite number >= 0"),
    "loss.window_bank_weight": (_nonneg_float, "must be a finite number >= 0"),
    "loss.page_bank_weight": (_nonneg_float, "must be a finite number >= 0"),
    "loss.bank_size": (_nonneg_int, "must be a non-negative integer (0 = the whole bank)"),
    "loss.max_negative_cosine": (lambda v: _finite(v) and -1 <= v <= 1, "must be in [-1, 1]"),
    "loss.t_prime_init": (_finite, "must be a finite number"),
    "loss.bias_init": (_finite, "must be a finite number"),
    "loss.bias_init_auto": _FLAG,
    "loss.batch_false_negatives": _FLAG,
    "optim.lr": (_pos_float, "must be a finite number > 0"),
    "optim.warmup_steps": (_nonneg_int, "must be a non-negative integer"),
    "optim.min_lr_ratio": (lambda v: _nonneg_float(v) and v <= 1, "must be in [0, 1]"),
    "optim.weight_decay": (_nonneg_float, "must be a finite number >= 0"),
    "optim.b1": (_fraction, "must be in [0, 1)"),
    "optim.b2": (_fraction, "must be in [0, 1)"),
    "optim.clip_norm": (_nonneg_float, "must be a finite number >= 0 (0 = no clipping)"),
    "optim.grad_accum": (_pos_int, "must be a positive integer"),
    "train.steps": (_pos_int, "must be a positive integer"),
    "train.log_every": (_pos_int, "must be a positive integer"),
    "train.ckpt_every": (_pos_int, "must be a positive integer"),
    "train.keep": (_pos_int, "must be a positive integer"),
    "train.eval_every": (_nonneg_int, "must be a non-negative integer (0 = start and end only)"),
    "train.max_nonfinite": (_pos_int, "must be a positive integer"),
    "train.preempt_check_every": (_pos_int, "must be a positive integer"),
    "train.profile_steps": (lambda v: v == () or (isinstance(v, tuple) and len(v) == 2 and all(_pos_int(x) for x in v)
                                                  and v[0] < v[1]), "must be () or (first, last) steps, 1 <= first < last"),
    "evals.batch_size": (_pos_int, "must be a positive integer"),
    "evals.max_steps": (_nonneg_int, "must be a non-negative integer (0 = data.max_steps)"),
    "evals.max_pages": (_nonneg_int, "must be a non-negative integer (0 = data.max_pages)"),
    "evals.max_examples": (_pos_int, "must be a positive integer"),
    "evals.long_doc_pages": (_pos_int, "must be a positive integer"),
    "evals.recall_max_k": (_nonneg_int, "must be a non-negative integer"),
    "evals.layout_stage": (_one_of(0, 1, 2, 3), "must be a Hiera stage index in 0..3"),
    "evals.layout_labels": (_one_of("boxes", "pseudo", "auto"), "must be 'boxes', 'pseudo' or 'auto'"),
}

SECTIONS = {
    "prepare": ("seed", "prepare.", "text."),
    "train": ("seed", "data.", "model.", "loss.", "optim.", "train.", "evals."),
    "eval": ("seed", "data.", "model.", "loss.", "evals."),
}


def _lookup(cfg: mlc.ConfigDict, path: str) -> Any:
    node: Any = cfg
    for part in path.split("."):
        if not isinstance(node, (mlc.ConfigDict, dict)) or part not in node:
            raise ConfigError(f"config.{path}: missing")
        node = node[part]
    return node


def check(cfg: mlc.ConfigDict, section: str) -> None:
    """Raise ConfigError on the first bad field used by `section` (prepare/train/eval)."""
    prefixes: Iterable[str] = SECTIONS[section]
    for path, (ok, why) in RULES.items():
        if not any(path == p or path.startswith(p) for p in prefixes):
            continue
        value = _lookup(cfg, path)
        if not ok(value):
            raise ConfigError(f"config.{path}: {why} (got {value!r})")
    if section == "prepare" and cfg.prepare.stride > cfg.prepare.window:
        raise ConfigError(f"config.prepare.stride: must be in (0, window] (got {cfg.prepare.stride})")
    if section == "train" and cfg.data.batch_size % cfg.optim.grad_accum:
        raise ConfigError("config.optim.grad_accum: must divide data.batch_size")
    if section == "train":
        from docjepa import objective  # the term registry (imports jax; prepare needs neither)

        if "layout_mask" in objective.batch_fields(cfg.loss) and not cfg.data.layout_grid:
            weights = " or ".join(f"loss.{t.weight}" for t in objective.TERMS.values() if "layout_mask" in t.fields)
            raise ConfigError(f"config.data.layout_grid: must be > 0 when {weights} > 0 (the cells per window side "
                              "of the map of model.layout_stage)")
        if not objective.active_terms(cfg.loss):
            fields = ", ".join(f"loss.{t.weight}" for t in objective.TERMS.values())
            raise ConfigError(f"config.loss: at least one of {fields} must be > 0 (all are 0: nothing to train)")
    if section in ("train", "eval"):
        names = [n for n, _ in cfg.mesh] if _valid_mesh_shape(cfg.mesh) else None
        if names != ["data", "fsdp", "tensor"]:
            raise ConfigError(f"config.mesh: must be [('data', n), ('fsdp', n), ('tensor', n)] (got {cfg.mesh!r})")
        dcn = cfg.get("mesh_dcn", ())
        if dcn and not (_valid_mesh_shape(dcn) and [n for n, _ in dcn] == names):
            raise ConfigError(f"config.mesh_dcn: must be () or [('data', n), ('fsdp', n), ('tensor', n)] (got {dcn!r})")
        from docjepa import sharding  # imports jax, as the step does

        try:
            sharding.config_rules(cfg)
        except ValueError as e:
            raise ConfigError(str(e)) from None


def _valid_mesh_shape(mesh: Any) -> bool:
    return isinstance(mesh, (list, tuple)) and all(
        isinstance(a, (list, tuple)) and len(a) == 2 and isinstance(a[1], int) for a in mesh
    )

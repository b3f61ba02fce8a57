"""The one factory of the training state: model, optimizer, abstract train state, shardings.

Train, eval, scaling and the benchmarks build the same model and the same state layout from a
config; they import it from here, so that no entry point imports another.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import ml_collections as mlc
import optax
from flax import nnx

from docjepa import checkpoint, objective, sharding
from docjepa.data import bank, pipeline
from docjepa.models import byol, hiera, layers
from docjepa.models.docjepa import DocJEPA

# Fields the step consumes; the rest of a pipeline batch (ids for eval) stays on the host.
STEP_FIELDS = ("patches", "step_mask", "page_ids", "window_box", "window_emb", "window_mask",
               "window_text_id", "page_emb", "page_mask", "page_text_id",
               "doc_emb", "doc_mask", "reset",                  # document streams
               "record_index", "window_rows", "page_index")  # the last three: text-bank masks


def step_fields(cfg: mlc.ConfigDict) -> tuple[str, ...]:
    """The batch fields the train step reads: STEP_FIELDS and those of the active terms (the
    pseudo-layout cells for the layout and BYOL terms)."""
    return STEP_FIELDS + objective.batch_fields(cfg.loss)


def window_budget(cfg: mlc.ConfigDict, mesh: jax.sharding.Mesh, rows: int, accum: int = 1) -> pipeline.Budget | None:
    """The window budget of `rows` stream rows on `mesh` (`pipeline.window_budget`): what the
    streams keep each group of rows within, and what the model packs before Hiera."""
    return pipeline.window_budget(cfg.data.get("window_capacity", 1.0), rows, cfg.data.max_steps,
                                  mesh.shape["data"] * mesh.shape["fsdp"], accum)


def build_model(cfg: mlc.ConfigDict, embed_dim: int, seed: int, bank_sizes: dict[str, int] | None = None) -> DocJEPA:
    return DocJEPA(cfg.model, embed_dim=embed_dim, loss_cfg=cfg.loss, rngs=nnx.Rngs(seed),
                   bias_init=objective.bias_inits(cfg.loss, cfg.data, bank_sizes))


def uses_bank(loss_cfg: mlc.ConfigDict) -> bool:
    return loss_cfg.window_bank_weight > 0 or loss_cfg.page_bank_weight > 0


def device_bank(cfg: mlc.ConfigDict, manifest: dict[str, Any], mesh: jax.sharding.Mesh) -> dict[str, Any]:
    """The text bank on the mesh, each level sharded along its entries over the batch axes (padded
    to a multiple of them; `valid` marks real entries), so no device holds all of it."""
    levels = bank.load(cfg.data.dir, manifest, min_words=cfg.data.min_words, center=cfg.data.center_targets)
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    out = {}
    for level, cols in levels.items():
        n = len(cols["emb"])
        pad = -n % shards
        cols = {k: np.concatenate([v, np.full((pad, *v.shape[1:]), 0 if k == "emb" else -1, v.dtype)]) for k, v in cols.items()}
        cols["valid"] = np.arange(n + pad) < n
        out[level] = {k: jax.device_put(v, sharding.batch_sharding(mesh, v.ndim)) for k, v in cols.items()}
    return out


def embed_dim_of(cfg: mlc.ConfigDict, manifest: dict[str, Any]) -> int:
    return cfg.model.embed_dim or int(manifest["encoder"]["dim"])


def decay_mask(abstract_params: nnx.State, no_decay_axes: tuple[str, ...] = ("norm", "pos", "memory")) -> Any:
    """Weight decay on matrices only: not on biases, norms, position embeddings, memory init."""

    def one(v: nnx.Variable) -> bool:
        axes = v.get_metadata().get("out_sharding") or ()
        return v.get_value().ndim >= 2 and not any(a in no_decay_axes for a in axes)

    return nnx.to_pure_dict(jax.tree.map(one, abstract_params, is_leaf=lambda x: isinstance(x, nnx.Variable)))


def build_optimizer(cfg: mlc.ConfigDict, steps: int, mask: Any) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with linear warmup and cosine decay, global-norm clipping (optim.clip_norm > 0)."""
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=cfg.lr, warmup_steps=min(cfg.warmup_steps, steps),
        decay_steps=max(steps, cfg.warmup_steps + 1), end_value=cfg.lr * cfg.min_lr_ratio,
    )
    parts = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm > 0 else []
    parts.append(optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay, mask=mask))
    return optax.chain(*parts), schedule


def init_train_state(model: DocJEPA, tx: optax.GradientTransformation, batch_size: int,
                     groups: int = 1) -> dict[str, Any]:
    """{params, opt, step} and, with the TTM, `memory`: each stream's carried memory ([batch_size,
    m, C] float32, or with `groups` > 1 stream groups [batch_size, groups, m, C]: row r of group
    g is stream g * batch_size + r), where every stream starts from `memory_init`; with the BYOL
    term, `target`: the EMA target branch (`byol.online_part`), starting as a copy of the online one."""
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    state = {"params": params, "opt": tx.init(params), "step": jnp.int32(0)}
    if model.byol is not None:
        state["target"] = jax.tree.map(jnp.copy, byol.online_part(params))  # own buffers: the state is donated
    memory = model.initial_memory(batch_size)
    if memory is not None and groups > 1:
        memory = jnp.repeat(memory[:, None], groups, axis=1)
    return state if memory is None else state | {"memory": memory}


def group_memory(memory: jax.Array, step: jax.Array, groups: int) -> jax.Array:
    """The carried memory of the stream group that makes batch `step` ([batch, m, C])."""
    return memory if groups == 1 else jax.lax.dynamic_index_in_dim(memory, step % groups, axis=1, keepdims=False)


def store_group_memory(memory: jax.Array, new: jax.Array, step: jax.Array, groups: int) -> jax.Array:
    """`memory` with the group of batch `step` replaced by `new` (`group_memory`'s inverse)."""
    return new if groups == 1 else jax.lax.dynamic_update_index_in_dim(memory, new, step % groups, axis=1)


def abstract_train_state(tx: optax.GradientTransformation, abstract_params: nnx.State,
                         cfg: mlc.ConfigDict) -> dict[str, Any]:
    """The train state as ShapeDtypeStructs: what init, restore and the shardings agree on."""
    params = nnx.to_pure_dict(abstract_params)
    state = {"params": params, "opt": jax.eval_shape(tx.init, params), "step": jax.ShapeDtypeStruct((), jnp.int32)}
    if cfg.loss.byol_weight > 0:
        state["target"] = byol.online_part(params)
    if cfg.model.ttm.use_memory:  # as `TokenTuringMachine.initial_memory` lays it out
        init = jax.eval_shape(layers.at_least_f32, params["ttm"]["memory_init"])
        groups = cfg.data.get("stream_groups", 1)
        lead = (cfg.data.batch_size,) if groups == 1 else (cfg.data.batch_size, groups)
        state["memory"] = jax.ShapeDtypeStruct((*lead, *init.shape), init.dtype)
    return state


def train_state_shardings(tx: optax.GradientTransformation, abstract_params: nnx.State,
                          mesh: jax.sharding.Mesh, cfg: mlc.ConfigDict) -> dict[str, Any]:
    """Shardings of the train state: params by logical rules, optimizer moments and the BYOL
    target alike, the carried memory by rows over the batch axes (each row lives where its
    stream's data does)."""
    param_sh = nnx.to_pure_dict(sharding.state_shardings(abstract_params, mesh, sharding.config_rules(cfg)))
    abstract = abstract_train_state(tx, abstract_params, cfg)
    out = {"params": param_sh, "opt": opt_shardings(tx, abstract["opt"], param_sh, mesh),
           "step": sharding.replicated(mesh)}
    if "target" in abstract:
        out["target"] = byol.online_part(param_sh)
    if "memory" in abstract:
        out["memory"] = sharding.batch_sharding(mesh, len(abstract["memory"].shape))
    return out


def opt_shardings(tx: optax.GradientTransformation, abstract_opt: Any, param_sh: Any, mesh: jax.sharding.Mesh) -> Any:
    """Optimizer state shardings: each moment as its parameter, counters replicated."""
    return optax.tree_map_params(tx, lambda _, s: s, abstract_opt, param_sh,
                                 transform_non_params=lambda _: sharding.replicated(mesh))


class Restored:
    """A model restored from a workdir: graphdef, params and the shardings they live on.

    Only the parameters are read (`checkpoint.restore_params`), so the run's optimizer and
    carried memory play no part. Used by evaluation and export."""

    def __init__(self, cfg: mlc.ConfigDict, workdir: str | os.PathLike, embed_dim: int, mesh: jax.sharding.Mesh,
                 step: int | None):
        make_model = functools.partial(build_model, cfg, embed_dim, cfg.seed)
        self.graphdef, abstract_params = nnx.split(nnx.eval_shape(make_model), nnx.Param)
        self.param_sh = nnx.to_pure_dict(sharding.state_shardings(abstract_params, mesh,
                                                                  sharding.config_rules(cfg)))
        self.init_params = jax.jit(lambda: nnx.to_pure_dict(nnx.state(make_model(), nnx.Param)),
                                   out_shardings=self.param_sh)
        abstract = checkpoint.abstract_with_shardings(nnx.to_pure_dict(abstract_params), self.param_sh)
        self.params, self.step = checkpoint.restore_params(workdir, step, abstract)


def pretrained_encoder(cfg: mlc.ConfigDict, shardings: Any) -> Any:
    """Hiera parameters from Meta's PyTorch weights (safetensors), placed on `shardings`."""
    encoder = hiera.create(cfg.model.hiera.name, rngs=nnx.Rngs(0), **cfg.model.hiera.get("overrides", {}))
    hiera.load_safetensors(encoder, cfg.model.hiera.init_from)
    return jax.device_put(nnx.to_pure_dict(nnx.state(encoder, nnx.Param)), shardings)

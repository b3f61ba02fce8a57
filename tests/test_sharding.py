"""Layout on a mesh: the logical-axis table from the config, activation constraints, the hybrid
(multi-slice) mesh, and the collectives XLA compiles for an fsdp step on 8 simulated devices."""

import functools
import re

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from configs import demo
from docjepa import sharding, state as factory, train, validate
from docjepa.models import hiera


def test_config_rules_replace_entries_by_name_and_refuse_unknown_axes():
    table = dict(sharding.rules((("embed", None), ("act_embed", "tensor"), ("extra", ("data", "fsdp")))))
    assert table["embed"] is None and table["act_embed"] == "tensor" and table["extra"] == ("data", "fsdp")
    assert table["mlp"] == "tensor"  # the rest of the default table stays
    mesh = sharding.make_mesh([("data", 1), ("fsdp", 4), ("tensor", 2)], jax.devices()[:8])
    assert sharding.logical_to_mesh_spec(("embed", "mlp"), (8, 8), mesh, table=tuple(table.items())) == P(None, "tensor")
    with pytest.raises(ValueError, match=r"config.logical_axis_rules: 'embed' maps onto \['model'\]"):
        sharding.rules((("embed", "model"),))
    cfg = demo.get_config()
    cfg.logical_axis_rules = (("embed", "fsdp", "x"),)
    with pytest.raises(validate.ConfigError, match="config.logical_axis_rules: .* is not a .name, mesh axes. pair"):
        validate.check(cfg, "train")
    cfg.logical_axis_rules, cfg.mesh_dcn = (), (("data", 2),)
    with pytest.raises(validate.ConfigError, match="config.mesh_dcn"):
        validate.check(cfg, "train")


def test_constrain_pins_activations_inside_the_context_only():
    mesh = sharding.make_mesh([("data", 2), ("fsdp", 2), ("tensor", 2)])
    x = np.zeros((4, 6, 8), np.float32)
    assert sharding.constrain(x, hiera.TOKENS) is x  # no context: untouched (single-device use)

    @jax.jit
    def f(x):
        with sharding.activation_sharding(mesh):
            return sharding.constrain(x * 2, hiera.TOKENS), sharding.constrain(x[:3], hiera.TOKENS)

    out, odd = f(x)
    assert out.sharding.is_equivalent_to(NamedSharding(mesh, P(("data", "fsdp"))), 3)
    assert odd.shape == (3, 6, 8)  # 3 rows do not split over 4 batch shards: left to XLA, not an error


def test_hybrid_mesh_needs_as_many_slices_as_the_devices_form():
    devices = jax.devices()[:8]  # one process: one granule
    mesh = sharding.make_mesh([("data", -1), ("fsdp", 2), ("tensor", 1)], devices, dcn=[("data", 1), ("fsdp", 1), ("tensor", 1)])
    assert dict(mesh.shape) == {"data": 4, "fsdp": 2, "tensor": 1} and set(mesh.devices.flat) == set(devices)
    with pytest.raises(ValueError, match=r"config.mesh_dcn: sizes \[2, 1, 1\] make 2 slices, but the devices form 1 processes"):
        sharding.make_mesh([("data", -1), ("fsdp", 1), ("tensor", 1)], devices, dcn=[("data", 2), ("fsdp", 1), ("tensor", 1)])


_COLLECTIVE = re.compile(r"= (\(.*?\)|\w+\[[\d,]*\]\S*) (all-gather|all-reduce|reduce-scatter|all-to-all|collective-permute)"
                         r"(?:-start)?\(")
_ARRAY = re.compile(r"\w+\[([\d,]*)\]")


def _collectives(hlo: str) -> list[tuple[str, list[tuple[int, ...]]]]:
    """(kind, output shapes) of every collective in compiled HLO text (tuple outputs: combined ops)."""
    return [(m[2], [tuple(int(d) for d in s.split(",") if d) for s in _ARRAY.findall(m[1])])
            for m in _COLLECTIVE.finditer(hlo)]


def test_fsdp_step_gathers_weights_reduces_gradients_and_moves_no_activations():
    """The train step on (data=1, fsdp=8, tensor=1): every fsdp-sharded kernel is all-gathered
    whole for the forward (as many elements; XLA may gather a reshaped view), gradients are reduced across the 8 devices (XLA:CPU emits the
    reduce-scatter of a sharded gradient as an all-reduce followed by a slice; TPU and GPU
    rewrite it into a reduce-scatter), and no collective moves anything larger than the largest
    weight: Hiera's activations ([windows, tokens, channels], 24x the largest weight here) stay
    split over the batch."""
    cfg = demo.get_config("quick")
    cfg.loss.window_bank_weight = cfg.loss.page_bank_weight = 0.0
    cfg.data.batch_size, cfg.data.max_steps, cfg.data.max_pages = 8, 4, 2
    cfg.model.ttm.memory_size, cfg.model.ttm.num_read, cfg.model.ttm.num_layers = 16, 4, 1
    cfg.model.hiera.overrides.embed_dim = 16
    # At this 16-channel width XLA does not gather the flattened pool's [49 x 16, 16] kernel whole
    # (not examined further); the mean pool keeps every kernel to the pattern checked here.
    cfg.model.pool = "mean"
    cfg.mesh = (("data", 1), ("fsdp", 8), ("tensor", 1))
    dim = 32
    mesh = sharding.make_mesh(cfg.mesh)
    make_model = functools.partial(factory.build_model, cfg, dim, cfg.seed)
    graphdef, abstract_params = nnx.split(nnx.eval_shape(make_model), nnx.Param)
    tx, schedule = factory.build_optimizer(cfg.optim, 10, factory.decay_mask(abstract_params))
    state_sh = factory.train_state_shardings(tx, abstract_params, mesh, cfg)
    state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                         factory.abstract_train_state(tx, abstract_params, cfg), state_sh)
    b, s, p = cfg.data.batch_size, cfg.data.max_steps, cfg.data.max_pages
    shapes = {"patches": ((b, s, 224, 224, 3), np.uint8), "step_mask": ((b, s), bool), "page_ids": ((b, s), np.int32),
              "window_box": ((b, s, 4), np.float32), "window_emb": ((b, s, dim), np.float32),
              "window_mask": ((b, s), bool), "window_text_id": ((b, s), np.int32), "page_emb": ((b, p, dim), np.float32),
              "page_mask": ((b, p), bool), "page_text_id": ((b, p), np.int32), "record_index": ((b,), np.int32),
              "window_rows": ((b, s, 5), np.int32), "page_index": ((b, p), np.int32), "doc_emb": ((b, dim), np.float32),
              "doc_mask": ((b,), bool), "doc_known": ((b,), bool), "reset": ((b,), bool)}
    assert set(shapes) == set(factory.step_fields(cfg))
    batch = {k: jax.ShapeDtypeStruct(shape, dt, sharding=sharding.batch_sharding(mesh, len(shape)))
             for k, (shape, dt) in shapes.items()}
    step = jax.jit(train.make_train_step(graphdef, tx, schedule, cfg, mesh), out_shardings=(state_sh, sharding.replicated(mesh)))
    found = _collectives(step.lower(state, batch, None).compile().as_text())

    weights = {path: (tuple(v.shape), spec) for path, v, spec in (
        (path, v, sh.spec) for (path, v), sh in zip(jax.tree_util.tree_leaves_with_path(state["params"]),
                                                  jax.tree.leaves(state_sh["params"])))}
    sharded = {path: shape for path, (shape, spec) in weights.items()
               if "fsdp" in jax.tree.leaves(tuple(spec)) and "kernel" in jax.tree_util.keystr(path)}
    assert len(sharded) > 20  # Hiera, TTM and head kernels (dense, conv, fused qkv) are split over fsdp
    gathered = {int(np.prod(shape)) for kind, out in found if kind == "all-gather" for shape in out}
    missing = [jax.tree_util.keystr(path) for path, shape in sharded.items() if int(np.prod(shape)) not in gathered]
    assert not missing, f"fsdp kernels never all-gathered whole: {missing}"
    reduced = {shape for kind, out in found if kind in ("all-reduce", "reduce-scatter") for shape in out}
    assert any(shape in reduced for shape in sharded.values())  # gradients of sharded kernels are reduced
    largest = max(int(np.prod(shape)) for shape, _ in weights.values())
    moved = max(int(np.prod(shape)) for _, out in found for shape in out)
    assert moved <= largest, (moved, largest)
    assert b * s * 56 * 56 * 16 > 20 * largest  # an activation gather would exceed the bound

"""Elastic resume on one process: a train state checkpointed on 8 devices restores onto a mesh of
4 (and back), every array equal and laid out on the new mesh's shardings."""

import functools

import jax
import numpy as np
from flax import nnx

from configs import demo
from docjepa import checkpoint, sharding, state as factory


def _abstract_state(cfg, mesh, dim):
    """The train state's ShapeDtypeStructs carrying `mesh`'s shardings (nothing compiled)."""
    _, abstract = nnx.split(nnx.eval_shape(functools.partial(factory.build_model, cfg, dim, cfg.seed)), nnx.Param)
    tx, _ = factory.build_optimizer(cfg.optim, cfg.train.steps, factory.decay_mask(abstract))
    shardings = factory.train_state_shardings(tx, abstract, mesh, cfg)
    return checkpoint.abstract_with_shardings(factory.abstract_train_state(tx, abstract, cfg), shardings)


def test_state_saved_on_8_devices_restores_on_4(tmp_path):
    cfg = demo.get_config("quick")
    cfg.model.hiera.overrides.embed_dim = 16
    cfg.model.ttm.memory_size, cfg.model.ttm.num_read, cfg.model.ttm.num_layers = 8, 2, 1
    dim = 32
    eight = sharding.make_mesh((("data", 2), ("fsdp", 2), ("tensor", 2)))
    four = sharding.make_mesh((("data", 1), ("fsdp", 2), ("tensor", 2)), jax.devices()[:4])
    rng = np.random.default_rng(0)
    state = jax.tree.map(lambda a: jax.device_put(rng.standard_normal(a.shape).astype(a.dtype), a.sharding),
                         _abstract_state(cfg, eight, dim))
    ckpt = checkpoint.Checkpointer(tmp_path, keep=1, async_save=False)
    ckpt.save(3, state, None)
    ckpt.wait()
    abstract4 = _abstract_state(cfg, four, dim)
    restored = ckpt.restore(3, abstract4)
    ckpt.close()
    for (path, a), b, want in zip(jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(restored),
                                  jax.tree.leaves(abstract4)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=jax.tree_util.keystr(path))
        assert b.sharding == want.sharding and set(b.sharding.device_set) <= set(four.devices.flat)
    # The fsdp x tensor split is really there on the 4 devices: some parameter is cut on both,
    # and the carried memory's rows moved from 2 x 2 batch shards to 2.
    assert any("fsdp" in str(x.sharding.spec) and "tensor" in str(x.sharding.spec)
               for x in jax.tree.leaves(restored["params"]))
    assert len(state["memory"].sharding.device_set) == 8 and len(restored["memory"].sharding.device_set) == 4

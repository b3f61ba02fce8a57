"""Spatial-context pretexts (Flip, Sorting): their views match their labels, their windows are
real ones, and their loss is the softmax cross-entropy of the heads and trains Hiera."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs import demo
from docjepa import objective, state as factory
from docjepa.models import docjepa as m


def _windows(k: int = 4, size: int = 8) -> np.ndarray:
    """Windows whose every pixel is distinct, so any rearrangement is visible."""
    return np.arange(k * size * size * 3, dtype=np.int32).reshape(k, size, size, 3)


def test_flip_views_follow_their_labels():
    x = _windows()
    views = np.asarray(m.flip_views(jnp.asarray(x), jnp.array([0, 1, 2, 3])))
    np.testing.assert_array_equal(views[0], x[0])
    np.testing.assert_array_equal(views[1], x[1, :, ::-1])        # left-right
    np.testing.assert_array_equal(views[2], x[2, ::-1])           # upside down
    np.testing.assert_array_equal(views[3], x[3, ::-1, ::-1])     # both


def test_strip_views_follow_their_labels():
    perms = m.strip_permutations(4)
    assert perms.shape == (24, 4) and len({tuple(p) for p in perms}) == 24 and (perms[0] == [0, 1, 2, 3]).all()
    x = _windows(k=24)
    labels = np.arange(24)
    views = np.asarray(m.strip_views(jnp.asarray(x), jnp.asarray(labels), 4))
    for view, window, label in zip(views, x, labels):
        for i, j in enumerate(perms[label]):  # strip i of the view is strip perm[i] of the window
            np.testing.assert_array_equal(view[2 * i: 2 * i + 2], window[2 * j: 2 * j + 2])
    with pytest.raises(ValueError, match="sort_strips"):
        m.strip_views(jnp.asarray(_windows(size=9)), jnp.zeros(4, jnp.int32), 4)


def test_pick_windows_draws_real_windows_only():
    mask = np.zeros((3, 5), bool)
    mask[0, :2] = mask[2, 1:4] = True                             # 5 real windows
    slots, real = m.pick_windows(jnp.asarray(mask), jax.random.key(0), 4)
    assert np.asarray(real).all() and len(set(np.asarray(slots).tolist())) == 4
    assert mask.reshape(-1)[np.asarray(slots)].all()
    slots, real = m.pick_windows(jnp.asarray(mask), jax.random.key(1), 7)
    assert int(np.asarray(real).sum()) == 5                       # 2 padding draws, masked


def test_pretext_terms_are_the_cross_entropy_of_their_heads_and_train_hiera():
    cfg = demo.get_config("quick")
    cfg.model.hiera.overrides.embed_dim = 8
    cfg.model.ttm.memory_size, cfg.model.ttm.num_read, cfg.model.ttm.num_layers = 8, 2, 1
    cfg.loss.flip_weight, cfg.loss.sort_weight, cfg.loss.pretext_windows = 1.0, 0.5, 3
    cfg.loss.window_bank_weight = cfg.loss.page_bank_weight = 0.0
    model = factory.build_model(cfg, 16, 0)
    assert set(model.pretext_heads) == {"flip", "sort"}
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, (2, 3, 224, 224, 3), dtype=np.uint8)
    step_mask = np.array([[True, True, True], [True, False, False]])
    page_ids = np.where(step_mask, 0, -1).astype(np.int32)
    boxes = np.zeros((2, 3, 4), np.float32)
    graphdef, params = nnx.split(model, nnx.Param)

    def loss(params, key):
        mdl = nnx.merge(graphdef, params)
        out = mdl.pretexts(jnp.asarray(patches), jnp.asarray(step_mask), key)
        lcfg = cfg.loss.copy_and_resolve_references()
        lcfg.window_weight = lcfg.page_weight = lcfg.doc_weight = lcfg.doc_running_weight = 0.0
        return objective.loss_terms(mdl, out, {}, lcfg)[0], out

    (total, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params, jax.random.key(3))
    for name, classes in (("flip", 4), ("sort", 24)):
        logits, target = np.asarray(out[f"pretext/{name}"]), np.asarray(out[f"pretext/{name}_target"])
        assert logits.shape == target.shape == (3, classes) and (target.sum(axis=1) == 1).all()
    ce = lambda n: -np.mean(np.sum(np.asarray(out[f"pretext/{n}_target"])  # noqa: E731
                                   * np.asarray(jax.nn.log_softmax(out[f"pretext/{n}"])), axis=1))
    np.testing.assert_allclose(float(total), ce("flip") + 0.5 * ce("sort"), rtol=1e-5)
    # The pretext gradient reaches the encoder (it is what the pretexts are for) and both heads.
    norm = lambda t: float(optax.tree.norm(t))  # noqa: E731
    assert norm(grads["encoder"]) > 0 and norm(grads["pretext_heads"]["flip"]) > 0 and norm(grads["pretext_heads"]["sort"]) > 0

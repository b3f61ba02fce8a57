"""Mask pooling + self-distillation (SelfDocSeg's BYOL, models/byol.py): region pooling by hand,
the loss against its formula, the EMA target moved by the EMA alone and checkpointed bitwise,
nothing built with weight 0."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from docjepa import checkpoint, losses, objective, sharding, state as factory, train, validate
from docjepa.models import byol
from test_train import _batch, _cfg, _one_step


def test_regions_and_mask_pool_by_hand():
    """Two windows' 3 x 3 cells: 4-connected components (diagonal neighbours are separate
    regions), largest first, and each region's vector is the mean of its cells' features."""
    cells = np.array([[[1, 1, 0],
                       [0, 0, 1],
                       [1, 0, 1]],
                      [[0, 0, 0],
                       [0, 1, 0],
                       [0, 0, 0]]], np.uint8)
    np.testing.assert_array_equal(byol.region_labels(jnp.asarray(cells)),
                                  [[[0, 0, -1], [-1, -1, 5], [6, -1, 5]], [[-1, -1, -1], [-1, 4, -1], [-1, -1, -1]]])
    member, present = byol.regions(jnp.asarray(cells), 4)
    np.testing.assert_array_equal(present, [[True, True, True, False], [True, False, False, False]])
    # Window 0: {(0,0), (0,1)} (found first among the two of size 2), {(1,2), (2,2)}, {(2,0)}.
    want = np.zeros((2, 9, 4), bool)
    want[0, [0, 1], 0] = want[0, [5, 8], 1] = want[0, 6, 2] = want[1, 4, 0] = True
    np.testing.assert_array_equal(member, want)
    # Features [K=2, V=1, 3, 3, C=2]: channel 0 is the cell's flat index, channel 1 ten times it.
    f = np.stack([np.arange(9.0), 10 * np.arange(9.0)], -1).reshape(1, 1, 3, 3, 2)
    f = np.concatenate([f, f + 100.0]).astype(np.float32)
    pooled = np.asarray(byol.mask_pool(jnp.asarray(f), member))
    assert pooled.shape == (2, 1, 4, 2)
    np.testing.assert_allclose(pooled[0, 0], [[0.5, 5.0], [6.5, 65.0], [6.0, 60.0], [0.0, 0.0]])
    np.testing.assert_allclose(pooled[1, 0, 0], [104.0, 140.0])
    np.testing.assert_array_equal(pooled[1, 0, 1:], 0.0)  # empty regions pool to zeros


def test_byol_loss_is_two_minus_two_cosine_with_no_target_gradient():
    rng = np.random.default_rng(0)
    p, z = rng.normal(size=(2, 5, 8)).astype(np.float32), rng.normal(size=(2, 5, 8)).astype(np.float32)
    w = (rng.random((2, 5)) > 0.3).astype(np.float32)
    cos = np.sum(p * z, -1) / np.linalg.norm(p, axis=-1) / np.linalg.norm(z, axis=-1)
    want = np.sum((2 - 2 * cos) * w) / np.sum(w)
    np.testing.assert_allclose(float(losses.byol_loss(jnp.asarray(p), jnp.asarray(z), jnp.asarray(w))), want,
                               rtol=1e-6)
    assert float(losses.byol_loss(jnp.asarray(p), jnp.asarray(3 * p), jnp.asarray(w))) == pytest.approx(0, abs=1e-6)
    grad_p, grad_z = jax.grad(lambda a, b: losses.byol_loss(a, b, jnp.asarray(w)), argnums=(0, 1))(p, z)
    assert np.abs(np.asarray(grad_p)).max() > 0 and not np.asarray(grad_z).any()
    # The term is symmetric: each view's prediction against the other view's target.
    out = {"byol/online": jnp.asarray(np.stack([p[0], p[1]], 1)), "byol/target": jnp.asarray(np.stack([z[0], z[1]], 1)),
           "byol/valid": jnp.asarray(w[0])}
    cfg = _cfg()
    term = objective.TERMS["loss/byol"].fn(None, out, {}, cfg.loss, None, None)
    pair = lambda a, b: np.sum((2 - 2 * np.sum(a * b, -1) / np.linalg.norm(a, axis=-1)  # noqa: E731
                                / np.linalg.norm(b, axis=-1)) * w[0]) / np.sum(w[0])
    np.testing.assert_allclose(float(term), pair(p[0], z[1]) + pair(p[1], z[0]), rtol=1e-6)


def test_views_are_photometric_only():
    """The augmentations move no pixel: a window whose left third is dark ink and the rest
    paper keeps each side uniform and its edge where it was (a crop or flip would move it),
    through blur, jitter, colour drop and solarisation; the blur keeps a flat image's level."""
    page = np.full((8, 224, 224, 3), 220, np.uint8)
    page[:, :, :75] = (30, 60, 90)
    for i, view in enumerate(byol.VIEWS):
        x = np.asarray(byol.augment(jnp.asarray(page), jax.random.key(i), view["blur"], view["solarize"]))
        assert x.shape == page.shape and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 255
        for side in (x[:, :, :60], x[:, :, 90:]):  # uniform away from the edge (blur reaches 11 px)
            np.testing.assert_allclose(side, np.broadcast_to(side[:, :1, :1], side.shape), atol=1e-3)
        assert (np.abs(x[:, 0, 0] - x[:, 0, -1]).max(axis=-1) > 1).all()  # ink and paper still differ
    np.testing.assert_allclose(byol.gaussian_blur(jnp.full((2, 32, 32, 3), 7.0), jnp.array([0.5, 2.0])), 7.0, rtol=1e-6)
    a, b = (np.asarray(byol.augment(jnp.asarray(page), jax.random.key(k), 1.0, 0.0)) for k in (0, 1))
    assert np.abs(a - b).mean() > 1  # different draws, different views


def _byol_cfg():
    cfg = _cfg()
    cfg.loss.byol_weight, cfg.data.layout_grid = 1.0, 28
    cfg.loss.byol_windows, cfg.loss.byol_regions, cfg.loss.byol_dim, cfg.loss.byol_hidden = 3, 4, 16, 32
    return cfg


def _layout_batch(cfg, dim):
    batch = _batch(cfg, dim)
    b, s = batch["step_mask"].shape
    cells = np.zeros((b, s, 28, 28), np.uint8)
    cells[..., 2:9, 3:20] = cells[..., 12:25, 5:11] = cells[..., 14:18, 15:26] = 1   # three blocks per window
    batch["layout_mask"] = cells
    return batch


def _step(cfg, mesh, batch, dim):
    """Init on `mesh` and run one jitted step with the BYOL term, in float64 parameters (the
    x64 checks); the state before (host) and after (on its shardings), the metrics, the state's
    shardings and what a checkpoint restores onto. Call under `jax.enable_x64(True)`."""
    make_model = functools.partial(factory.build_model, cfg, dim, cfg.seed)
    graphdef, abstract_params = nnx.split(nnx.eval_shape(make_model), nnx.Param)
    tx, schedule = factory.build_optimizer(cfg.optim, 10, factory.decay_mask(abstract_params))
    state_sh = factory.train_state_shardings(tx, abstract_params, mesh, cfg)

    @functools.partial(jax.jit, out_shardings=state_sh)
    def init():
        model = make_model()
        nnx.update(model, jax.tree.map(lambda x: x.astype(jnp.float64), nnx.state(model, nnx.Param)))
        return factory.init_train_state(model, tx, cfg.data.batch_size)

    batch = jax.tree.map(lambda v: v.astype(np.float64) if v.dtype == np.float32 else v, batch)
    step = jax.jit(train.make_train_step(graphdef, tx, schedule, cfg, mesh), donate_argnums=0)
    state = init()
    before = jax.device_get(state)
    state, metrics = step(state, sharding.global_batch(batch, mesh), None)
    abstract = checkpoint.abstract_with_shardings(factory.abstract_train_state(tx, abstract_params, cfg), state_sh)
    # The structure and shapes of abstract_train_state, with the float64 parameters' dtypes.
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, s.dtype, sharding=a.sharding), abstract, state)
    return {"before": before, "state": state, "after": jax.device_get(state), "metrics": jax.device_get(metrics),
            "shardings": state_sh, "abstract": abstract}


# Session scope: xdist may run another module's tests between the two of the group, which would
# tear a module fixture down and compute it again.
@pytest.fixture(scope="session")
def one_device():
    """One step with the BYOL term on one device (float64), shared by the EMA and sharding checks."""
    cfg, dim = _byol_cfg(), 16
    cfg.model.dtype = "float64"
    with jax.enable_x64(True):
        mesh = sharding.make_mesh((("data", 1), ("fsdp", 1), ("tensor", 1)), jax.devices()[:1])
        return cfg, dim, _step(cfg, mesh, _layout_batch(cfg, dim), dim)


@pytest.mark.xdist_group("byol")  # one compile of the shared step
def test_ema_target_moves_by_the_ema_only_and_restores_bitwise(one_device, tmp_path):
    """One step with the BYOL term: the term trains the encoder and both heads; the target is
    not in the optimizer and equals tau * old + (1 - tau) * updated online weights, exactly;
    a checkpoint of the state (target included) restores bitwise onto its shardings."""
    cfg, _, run = one_device
    assert set(factory.step_fields(cfg)) >= {"layout_mask"}
    assert set(run["shardings"]["target"]) == {"encoder", "projector"}
    before, after, metrics = run["before"], run["after"], run["metrics"]
    jax.tree.map(np.testing.assert_array_equal, before["target"], byol.online_part(before["params"]))
    assert metrics["finite"] == 1.0 and float(metrics["loss/byol"]) > 0
    tau = np.float32(metrics["byol/momentum"])
    assert tau == np.float32(cfg.loss.byol_momentum)  # the cosine schedule starts at the base
    # Adam's first moment is the gradient: the term reaches the encoder, projector and predictor.
    mu = optax.tree_utils.tree_get(after["opt"], "mu")
    norm = lambda t: float(optax.tree.norm(t))  # noqa: E731
    assert norm(mu["encoder"]) > 0 and norm(mu["byol"]["projector"]) > 0 and norm(mu["byol"]["predictor"]) > 0
    online = byol.online_part(after["params"])
    moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), online, byol.online_part(before["params"]))
    assert max(jax.tree.leaves(moved)) > 1e-4
    want = jax.tree.map(lambda t, o: tau * t + (np.float32(1) - tau) * o, before["target"], online)
    jax.tree.map(np.testing.assert_array_equal, after["target"], want)

    with jax.enable_x64(True):
        ckpt = checkpoint.Checkpointer(tmp_path, keep=1, async_save=False)
        try:
            ckpt.save(1, run["state"], None)
            ckpt.wait()
            restored = jax.device_get(ckpt.restore(1, run["abstract"]))
        finally:
            ckpt.close()
    assert set(restored) == set(after) >= {"params", "opt", "target"}
    assert jax.tree.leaves(jax.tree.map(lambda a, b: a.dtype == b.dtype, restored, after)) == [True] * len(
        jax.tree.leaves(after))
    jax.tree.map(np.testing.assert_array_equal, restored, after)


def test_weight_zero_builds_and_keeps_nothing():
    cfg = _byol_cfg()
    cfg.loss.byol_weight = 0.0
    model = nnx.eval_shape(lambda: factory.build_model(cfg, 16, 0))
    assert model.byol is None and "layout_mask" not in factory.step_fields(cfg)
    _, abstract_params = nnx.split(model, nnx.Param)
    tx, _ = factory.build_optimizer(cfg.optim, 10, factory.decay_mask(abstract_params))
    assert "target" not in factory.abstract_train_state(tx, abstract_params, cfg)
    assert "target" not in jax.eval_shape(lambda: factory.init_train_state(factory.build_model(cfg, 16, 0), tx, 4))
    assert "loss/byol" not in objective.active_terms(cfg.loss)
    cfg.loss.byol_weight, cfg.data.layout_grid = 1.0, 0
    with pytest.raises(validate.ConfigError, match="config.data.layout_grid: .*loss.byol_weight"):
        validate.check(cfg, "train")


@pytest.mark.xdist_group("byol")  # one compile of the shared one-device step
def test_sharded_step_with_the_term_matches_one_device(one_device):
    """(data=2, fsdp=2, tensor=2) over 8 devices == 1 device with the BYOL term, in float64 (the
    bounds of test_train.test_sharded_step_matches_single_device): the same windows and views
    are drawn, the same loss, gradient and update; the target is sharded like its parameters."""
    cfg, dim, run1 = one_device
    with jax.enable_x64(True):
        eight = sharding.make_mesh((("data", 2), ("fsdp", 2), ("tensor", 2)))
        m8, _, p8, sh8, mu8, _ = _one_step(cfg, eight, _layout_batch(cfg, dim), dim)
    m1, p1 = run1["metrics"], run1["after"]["params"]
    mu1 = optax.tree_utils.tree_get(run1["after"]["opt"], "mu")
    assert m1["loss/byol"] > 0 and m1["loss"].dtype == np.float64
    assert jax.tree.map(lambda s: s.spec, sh8["target"]["encoder"]) == jax.tree.map(lambda s: s.spec,
                                                                                    sh8["params"]["encoder"])
    for key in ("loss/byol", "loss", "grad_norm"):
        np.testing.assert_allclose(m8[key], m1[key], rtol=1e-9, err_msg=key)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-10 * max(np.abs(b).max(), 1e-3)),
                 mu8, mu1)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-9), p8, p1)

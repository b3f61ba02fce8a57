"""SigLIP (single-device, ring-chunked, all-gather) and focal loss against hand computations."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from docjepa import losses, sharding


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_sigmoid_loss_hand_computed_2x2():
    zimg = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    ztxt = jnp.array([[0.6, 0.8], [1.0, 0.0]])
    t_prime, b = math.log(2.0), -1.0
    # logits = cos * 2 - 1: [[0.2, 1.0], [0.6, -1.0]]; positives on the diagonal.
    expected = -(_log_sigmoid(0.2) + _log_sigmoid(-1.0) + _log_sigmoid(-0.6) + _log_sigmoid(-1.0)) / 2
    np.testing.assert_allclose(losses.sigmoid_loss(zimg, ztxt, t_prime, b), expected, rtol=1e-6)
    # Inputs are normalised inside: scaling an embedding changes nothing.
    np.testing.assert_allclose(losses.sigmoid_loss(3 * zimg, 0.5 * ztxt, t_prime, b), expected, rtol=1e-6)


def test_labels_from_ids_multi_positive():
    ids = jnp.array([7, -1, 7, 3, -1])
    labels = np.asarray(losses.labels_from_ids(ids, ids))
    expected = np.eye(5, dtype=bool)
    expected[0, 2] = expected[2, 0] = True  # the two texts with id 7; the two -1 never match
    np.testing.assert_array_equal(labels, expected)


def test_multi_positive_loss_flips_sign_of_duplicate_pair():
    zimg = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    ztxt = jnp.array([[0.6, 0.8], [1.0, 0.0]])
    labels = losses.labels_from_ids(jnp.array([4, 4]), jnp.array([4, 4]))
    # All four cells positive now: logits [[0.2, 1.0], [0.6, -1.0]].
    expected = -(_log_sigmoid(0.2) + _log_sigmoid(1.0) + _log_sigmoid(0.6) + _log_sigmoid(-1.0)) / 2
    np.testing.assert_allclose(losses.sigmoid_loss(zimg, ztxt, math.log(2.0), -1.0, labels), expected, rtol=1e-6)


def test_false_negatives_take_no_part():
    """Overlapping windows of one page and near-duplicate targets are dropped cells, neither
    positive nor negative; a window of the same page that does not overlap, and one of another
    page, stay negatives."""
    zimg = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.6, 0.8, 0.0]])
    ztxt = jnp.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0], [0.0, 0.6, 0.8]])
    items = {"doc": jnp.array([0, 0, 0, 1]), "page": jnp.array([0, 0, 0, 0]),
             "box": jnp.array([[0, 0, 224, 224], [112, 0, 336, 224], [224, 0, 448, 224], [0, 0, 224, 224]])}
    # Windows 0-1 and 1-2 overlap on page 0 of doc 0; 0-2 only touch; doc 1 is another page.
    # Targets 0-1 and 2-3 are at cosine 0.8 (not near at 0.9), 1-3 at 0.36.
    got = losses.sigmoid_loss(zimg, ztxt, 0.0, 0.0, text_ids=jnp.full(4, -1), items=items, max_cosine=0.9)
    logits = np.asarray(zimg / jnp.linalg.norm(zimg, axis=1, keepdims=True)) @ np.asarray(ztxt).T
    keep = ~np.array([[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]], bool)
    z = np.where(np.eye(4, dtype=bool), 1.0, -1.0)
    expected = -np.sum(np.where(keep, [[_log_sigmoid(v) for v in row] for row in z * logits], 0.0)) / 4
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # Near-duplicate targets (cosine 0.8 > 0.7: 0-1, 2-3) drop their cells without any page overlap.
    far = {**items, "doc": jnp.arange(4)}
    near = losses.sigmoid_loss(zimg, ztxt, 0.0, 0.0, text_ids=jnp.full(4, -1), items=far, max_cosine=0.7)
    keep = ~np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], bool)
    expected = -np.sum(np.where(keep, [[_log_sigmoid(v) for v in row] for row in z * logits], 0.0)) / 4
    np.testing.assert_allclose(near, expected, rtol=1e-6)


def _data(n: int = 16, d: int = 8, seed: int = 0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    zimg = jax.random.normal(k1, (n, d))
    ztxt = jax.random.normal(k2, (n, d))
    # Duplicated texts land on different devices of any 2/4/8-way split: cross-device positives.
    ids = jnp.array([0, -1, 1, 2, -1, 3, 4, -1, 0, 5, 1, -1, 2, 6, -1, 4])[:n]
    mask = jnp.arange(n) % 5 != 3
    return zimg, ztxt, ids, mask


def test_mask_equals_dropping_rows_and_columns():
    zimg, ztxt, ids, mask = _data()
    labels = losses.labels_from_ids(ids, ids)
    masked = losses.sigmoid_loss(zimg, ztxt, 1.3, -2.0, labels, mask)
    keep = np.asarray(mask)
    dropped = losses.sigmoid_loss(zimg[keep], ztxt[keep], 1.3, -2.0, labels[keep][:, keep])
    np.testing.assert_allclose(masked, dropped, rtol=1e-6)
    # A fully masked batch is defined (zero), not NaN.
    assert float(losses.sigmoid_loss(zimg, ztxt, 1.3, -2.0, mask=jnp.zeros(16, bool))) == 0.0


def _reference(zimg, ztxt, t_prime, b, ids, mask, items=None, max_cosine=None):
    if max_cosine is None:
        return losses.sigmoid_loss(zimg, ztxt, t_prime, b, losses.labels_from_ids(ids, ids), mask)
    return losses.sigmoid_loss(zimg, ztxt, t_prime, b, mask=mask, text_ids=ids, items=items, max_cosine=max_cosine)


def _items(n: int = 16):
    """Windows of 4 documents x 2 pages on a 2 x 2 grid at stride 112 (all overlap on a page),
    so every device split sees false negatives across devices."""
    i = np.arange(n)
    col, row = (i % 2) * 112, ((i // 2) % 2) * 112
    return {"doc": jnp.asarray(i % 4), "page": jnp.asarray((i // 4) % 2),
            "box": jnp.asarray(np.stack([col, row, col + 224, row + 224], 1))}


@pytest.mark.parametrize("fn", [losses.chunked_sigmoid_loss, losses.gathered_sigmoid_loss], ids=["ring", "gather"])
@pytest.mark.parametrize("axes", [[("data", 2), ("fsdp", 2), ("tensor", 2)], [("data", 8), ("fsdp", 1), ("tensor", 1)]],
                         ids=["2x2x2", "8x1x1"])
@pytest.mark.parametrize("use_mask", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("max_cosine", [None, 0.3], ids=["all_negatives", "false_negatives"])
def test_sharded_loss_and_grads_match_reference(fn, axes, use_mask, max_cosine):
    """Sharded == one-device loss and gradients, in float64 (`jax.enable_x64`): the ring or the
    all-gather only reorders the sums, ~1e-16 relative each, while a lost block or a missing
    psum changes the loss by a whole block's share (>= 1/8 here). 1e-10 holds on any CPU."""
    mesh = sharding.make_mesh(axes)
    with jax.enable_x64(True):
        zimg, ztxt, ids, mask = _data()
        zimg, ztxt = zimg.astype(jnp.float64), ztxt.astype(jnp.float64)
        mask = mask if use_mask else None
        batch = NamedSharding(mesh, P(("data", "fsdp")))
        put = lambda x: None if x is None else jax.device_put(x, batch)  # noqa: E731
        args = (put(zimg), put(ztxt), jnp.float64(1.3), jnp.float64(-2.0))

        items = None if max_cosine is None else _items()
        sharded = jax.jit(jax.value_and_grad(
            lambda zi, zt, tp, b: fn(zi, zt, tp, b, mesh=mesh, text_ids=put(ids), mask=put(mask),
                                     items=None if items is None else jax.tree.map(put, items),
                                     max_cosine=max_cosine),
            argnums=(0, 1, 2, 3)))
        reference = jax.jit(jax.value_and_grad(
            lambda zi, zt, tp, b: _reference(zi, zt, tp, b, ids, mask, items, max_cosine), argnums=(0, 1, 2, 3)))
        (got, got_grads), (want, want_grads) = sharded(*args), reference(zimg, ztxt, args[2], args[3])
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-10)
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
    assert np.abs(np.asarray(got_grads[1])).max() > 0  # gradients reach the passed-around texts
    if max_cosine is not None:  # the items drop cells: a ring that ignored them would differ
        with jax.enable_x64(True):
            assert abs(float(_reference(zimg, ztxt, args[2], args[3], ids, mask)) - float(got)) > 1e-3


def test_ring_never_materialises_global_logits():
    mesh = sharding.make_mesh([("data", 8), ("fsdp", 1), ("tensor", 1)])
    zimg, ztxt, _, _ = _data(n=64, d=16)
    ids = jnp.arange(64) % 8

    def hlo(fn):
        step = jax.jit(jax.grad(lambda zi, zt: fn(zi, zt, 0.0, 0.0, mesh=mesh, text_ids=ids), argnums=(0, 1)))
        return step.lower(zimg, ztxt).compile().as_text()

    # Per device: 8 rows; the ring scores 8 x 8 blocks, the all-gather baseline 8 x 64.
    ring, gather = hlo(losses.chunked_sigmoid_loss), hlo(losses.gathered_sigmoid_loss)
    assert "f32[8,8]" in ring and "f32[8,64]" not in ring and "f32[64,64]" not in ring
    assert "f32[8,64]" in gather


def test_sharded_loss_rejects_indivisible_batch():
    mesh = sharding.make_mesh([("data", 8), ("fsdp", 1), ("tensor", 1)])
    z = jnp.ones((12, 4))
    with pytest.raises(ValueError, match="not divisible"):
        losses.chunked_sigmoid_loss(z, z, 0.0, 0.0, mesh=mesh)


def test_temperature_module_inits():
    temp = losses.SigLIPTemperature()
    t_prime, b = temp()
    np.testing.assert_allclose(t_prime, math.log(10.0), rtol=1e-6)
    assert float(b) == -10.0
    t_prime, b = losses.SigLIPTemperature(0.5, -3.0)()
    assert (float(t_prime), float(b)) == (0.5, -3.0)


def test_focal_loss_hand_computed():
    logits = jnp.array([[2.0, -1.0], [0.0, 3.0]])
    targets = jnp.array([[1.0, 0.0], [1.0, 0.0]])
    alpha, gamma = 0.25, 2.0
    terms = []
    for x, t in zip(np.asarray(logits).ravel(), np.asarray(targets).ravel()):
        p = 1 / (1 + math.exp(-x))
        p_t = p if t else 1 - p
        a_t = alpha if t else 1 - alpha
        terms.append(-a_t * (1 - p_t) ** gamma * math.log(p_t))
    np.testing.assert_allclose(losses.focal_loss(logits, targets, alpha, gamma), np.mean(terms), rtol=1e-6)
    mask = jnp.array([[True, False], [True, True]])
    np.testing.assert_allclose(losses.focal_loss(logits, targets, alpha, gamma, mask),
                               (terms[0] + terms[2] + terms[3]) / 3, rtol=1e-6)
    # gamma = 0 and no alpha weighting is plain binary cross-entropy.
    bce = -np.mean([math.log(1 / (1 + math.exp(-x))) if t else math.log(1 - 1 / (1 + math.exp(-x)))
                    for x, t in zip(np.asarray(logits).ravel(), np.asarray(targets).ravel())])
    np.testing.assert_allclose(losses.focal_loss(logits, targets, alpha=-1.0, gamma=0.0), bce, rtol=1e-6)


def test_variance_term_is_the_hinge_on_real_windows_and_pushes_them_apart():
    """VICReg's variance hinge on Hiera's window features: zero above the floor, the floor itself
    for collapsed windows, blind to padding, and its gradient spreads collapsed windows."""
    import ml_collections as mlc

    from docjepa import objective

    cfg = mlc.ConfigDict({"variance_floor": 0.25})
    rng = np.random.default_rng(0)
    mask = np.ones((2, 3), bool)
    mask[1, 2] = False

    def term(z):
        return objective._variance(None, {"encoder_features": z}, {"step_mask": jnp.asarray(mask)}, cfg, None, None)

    spread = jnp.asarray(rng.normal(size=(2, 3, 4)), jnp.float32)
    assert float(term(spread)) == 0.0  # unit std per channel: above the floor
    collapsed = np.zeros((2, 3, 4), np.float32)
    collapsed[1, 2] = 100.0  # a padding window far away changes nothing
    np.testing.assert_allclose(float(term(jnp.asarray(collapsed))), 0.25 - math.sqrt(1e-4), rtol=1e-6)
    # Hand computation on real windows: channel 0 has std 0.1, the others are collapsed.
    z = np.zeros((2, 3, 4), np.float32)
    z[mask, 0] = [0.1, -0.1, 0.1, -0.1, 0.1][: mask.sum()]
    std0 = math.sqrt(np.var(z[mask, 0]) + 1e-4)
    expected = (0.25 - std0 + 3 * (0.25 - math.sqrt(1e-4))) / 4
    np.testing.assert_allclose(float(term(jnp.asarray(z))), expected, rtol=1e-5)
    # A descent step on the term moves real windows away from their mean, never padding.
    near = jnp.asarray(rng.normal(size=(2, 3, 4)) * 1e-2, jnp.float32)
    g = jax.grad(term)(near)
    moved = near - 1.0 * g
    assert np.all(np.asarray(g)[1, 2] == 0)
    assert np.asarray(moved)[mask].std(axis=0).min() > np.asarray(near)[mask].std(axis=0).min()
    assert float(term(moved)) < float(term(near))

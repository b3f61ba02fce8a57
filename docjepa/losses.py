"""SigLIP pairwise sigmoid loss (single device, all-gather, chunked ring), focal loss, BYOL's loss.

SigLIP (Zhai et al. 2023) scores every image/text pair independently with a sigmoid, so
the loss is a sum over blocks of the n x n logit matrix and needs no global softmax
normaliser. That is what lets the chunked version pass text blocks around a ring of
devices (Zhai et al. 2023, Sec. 3.3) instead of materialising all n x n logits anywhere.

Conventions shared by all variants: embeddings are L2-normalised here (idempotent for
inputs that already are); logits = zimg @ ztxt.T * exp(t_prime) + b; label z = +1 for
positives, -1 otherwise; the loss is -sum_j log_sigmoid(z_ij * logit_ij) averaged over
valid rows i. `mask` marks valid examples (rows and columns); text ids >= 0 make equal
texts positives of each other, -1 matches nothing; the diagonal is always positive.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, PartitionSpec as P

from docjepa.models.layers import at_least_f32


class SigLIPTemperature(nnx.Module):
    """The learnable log-temperature t' and bias b (SigLIP inits: t' = log 10, b = -10)."""

    def __init__(self, t_prime_init: float = math.log(10.0), bias_init: float = -10.0):
        self.t_prime = nnx.Param(jnp.asarray(t_prime_init, jnp.float32))
        self.b = nnx.Param(jnp.asarray(bias_init, jnp.float32))

    def __call__(self) -> tuple[jax.Array, jax.Array]:
        return self.t_prime[...], self.b[...]


def _normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    x = at_least_f32(x)
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps))


def labels_from_ids(row_ids: jax.Array, col_ids: jax.Array) -> jax.Array:
    """[n_rows, n_cols] bool: equal non-negative ids are positives; the diagonal always is."""
    return same_ids(row_ids, col_ids) | jnp.eye(row_ids.shape[0], col_ids.shape[0], dtype=bool)


def same_ids(row_ids: jax.Array, col_ids: jax.Array) -> jax.Array:
    """[n_rows, n_cols] bool: equal ids, where the row's id is set (>= 0)."""
    return (row_ids[:, None] == col_ids[None, :]) & (row_ids[:, None] >= 0)


def false_negatives(rows: Mapping[str, jax.Array], cols: Mapping[str, jax.Array], max_cosine: float) -> jax.Array:
    """[n_rows, n_cols] True where column j is no true negative of row i (SegLoc's warning about
    false negatives): the same text (`text_id` >= 0); the same page of the same document (`doc`,
    `page`), and where both carry window boxes (`box`, [x0, y0, x1, y1] px) only if they overlap;
    a target (`emb`, unit norm) closer than `max_cosine` to row i's. `doc`, `page`, `box` are
    optional (a document has no page)."""
    out = same_ids(rows["text_id"], cols["text_id"])
    if "doc" in rows:
        same_page = (rows["doc"][:, None] == cols["doc"][None, :]) & (rows["page"][:, None] == cols["page"][None, :])
        if "box" in rows:
            a, c = rows["box"][:, None, :], cols["box"][None, :, :]
            same_page &= (jnp.maximum(a[..., 0], c[..., 0]) < jnp.minimum(a[..., 2], c[..., 2])) & (
                jnp.maximum(a[..., 1], c[..., 1]) < jnp.minimum(a[..., 3], c[..., 3]))
        out |= same_page
    return out | (rows["emb"] @ cols["emb"].T > max_cosine)


def _block_loss_sum(zimg: jax.Array, ztxt: jax.Array, t_prime: jax.Array, b: jax.Array,
                    labels: jax.Array, keep: jax.Array) -> jax.Array:
    """-sum of log_sigmoid(z * logits) over the cells of one block that take part (fp32)."""
    logits = zimg @ ztxt.T * jnp.exp(at_least_f32(jnp.asarray(t_prime))) + at_least_f32(jnp.asarray(b))
    z = jnp.where(labels, 1.0, -1.0)
    return -jnp.sum(jnp.where(keep, jax.nn.log_sigmoid(z * logits), 0.0))


def _cells(rows: Mapping[str, jax.Array], cols: Mapping[str, jax.Array], diagonal: jax.Array,
           max_cosine: float | None) -> tuple[jax.Array, jax.Array]:
    """Labels and the cells that take part, for rows and columns given as items: `text_id`,
    `ok` (valid), `emb` (unit-norm targets) and, for the false-negative test, `doc`/`page`/`box`.
    With `max_cosine` set, a false negative is neither positive nor negative: its cell is dropped."""
    labels = same_ids(rows["text_id"], cols["text_id"]) | diagonal
    keep = rows["ok"][:, None] & cols["ok"][None, :]
    if max_cosine is not None:
        keep &= labels | ~false_negatives(rows, cols, max_cosine)
    return labels, keep


def _check_pair(zimg: jax.Array, ztxt: jax.Array, mask: jax.Array | None) -> jax.Array:
    if zimg.ndim != 2 or zimg.shape != ztxt.shape:
        raise ValueError(f"siglip: zimg {zimg.shape} and ztxt {ztxt.shape} must both be [n, d]")
    if mask is not None and mask.shape != zimg.shape[:1]:
        raise ValueError(f"siglip mask: expected shape {zimg.shape[:1]}, got {mask.shape}")
    return jnp.ones(zimg.shape[:1], bool) if mask is None else mask.astype(bool)


def _items(ztxt: jax.Array, valid: jax.Array, text_ids: jax.Array | None,
           items: Mapping[str, jax.Array] | None) -> dict[str, jax.Array]:
    n = ztxt.shape[0]
    if text_ids is None:
        text_ids = jnp.full((n,), -1, jnp.int32)
    for name, a in {"text_ids": text_ids, **(items or {})}.items():
        if a.shape[:1] != (n,):
            raise ValueError(f"siglip {name}: expected leading dimension {n}, got shape {a.shape}")
    return {**(items or {}), "text_id": text_ids.astype(jnp.int32), "ok": valid, "emb": _normalize(ztxt)}


def sigmoid_loss(zimg: jax.Array, ztxt: jax.Array, t_prime: jax.Array, b: jax.Array,
                 labels: jax.Array | None = None, mask: jax.Array | None = None, *,
                 text_ids: jax.Array | None = None, items: Mapping[str, jax.Array] | None = None,
                 max_cosine: float | None = None) -> jax.Array:
    """The SigLIP loss on full (unsharded, or GSPMD-sharded) [n, d] arrays; a scalar.

    Positives: `labels` [n, n] if given, else equal `text_ids` and the diagonal. With
    `max_cosine`, false negatives (`false_negatives` of the items: `text_ids`, the targets, and
    `items`' doc/page/box) take no part."""
    valid = _check_pair(zimg, ztxt, mask)
    n = zimg.shape[0]
    it = _items(ztxt, valid, text_ids, items)
    got_labels, keep = _cells(it, it, jnp.eye(n, dtype=bool), max_cosine)
    if labels is None:
        labels = got_labels
    elif labels.shape != (n, n):
        raise ValueError(f"siglip labels: expected shape {(n, n)}, got {labels.shape}")
    elif max_cosine is not None:
        raise ValueError("siglip: give positives either as labels or as text_ids with max_cosine, not both")
    total = _block_loss_sum(_normalize(zimg), it["emb"], t_prime, b, labels.astype(bool), keep)
    return total / jnp.maximum(jnp.sum(valid), 1)


def bank_negative_loss(zimg: jax.Array, bank: jax.Array, t_prime: jax.Array, b: jax.Array, *,
                       row_valid: jax.Array, exclude: jax.Array) -> jax.Array:
    """The negatives-only part of SigLIP against a bank of K text embeddings: the sum over valid
    rows and non-excluded entries of -log sigmoid(-logit), over the valid rows (the divisor of
    `sigmoid_loss`, so the two add up to SigLIP over the batch's texts and the bank's).
    `exclude` [n, K] marks false negatives. With `bank` sharded along K and `zimg` replicated,
    each device holds n x K / devices logits."""
    logits = _normalize(zimg) @ _normalize(bank).T * jnp.exp(at_least_f32(jnp.asarray(t_prime))) + at_least_f32(
        jnp.asarray(b))
    keep = row_valid.astype(bool)[:, None] & ~exclude
    return -jnp.sum(jnp.where(keep, jax.nn.log_sigmoid(-logits), 0.0)) / jnp.maximum(jnp.sum(row_valid), 1)


def _sharded_loss(local_sum, zimg: jax.Array, ztxt: jax.Array, t_prime: jax.Array, b: jax.Array, mesh: Mesh,
                  axis_names: Sequence[str], text_ids: jax.Array | None, mask: jax.Array | None,
                  items: Mapping[str, jax.Array] | None, max_cosine: float | None) -> jax.Array:
    """Run `local_sum` per device under shard_map; divide the psum by the global valid rows.

    `local_sum(zimg, ztxt, rows, t_prime, b, axes, n_dev, max_cosine)` sees this device's rows:
    `rows` the items of `_cells` (their unit-norm targets under `emb`, so `ztxt` is unused).
    """
    valid = _check_pair(zimg, ztxt, mask)
    axes = tuple(axis_names)
    n_dev = math.prod(mesh.shape[a] for a in axes)
    if zimg.shape[0] % n_dev:
        raise ValueError(f"siglip: batch {zimg.shape[0]} is not divisible by the {n_dev} devices of {axes}")
    rows = _items(ztxt, valid, text_ids, items)

    def local(zi, it, tp, bias):
        total = local_sum(_normalize(zi), it, tp, bias, axes, n_dev, max_cosine)
        return jax.lax.psum(total, axes) / jnp.maximum(jax.lax.psum(jnp.sum(it["ok"]), axes), 1)

    batch = P(axes)
    return jax.shard_map(local, mesh=mesh, in_specs=(batch, batch, P(), P()), out_specs=P())(
        zimg, rows, at_least_f32(jnp.asarray(t_prime)), at_least_f32(jnp.asarray(b)))


def _ring_sum(zimg, rows, t_prime, b, axes, n_dev, max_cosine):
    """Local loss sum of the ring: own block first (the only one with the diagonal), then hops."""
    perm = [(i, (i + 1) % n_dev) for i in range(n_dev)]

    # Rematerialised in the backward pass: per hop only the b x d text block (with its items) is
    # kept, never the b x b logits or labels.
    @jax.checkpoint
    def block(cols, diagonal):
        labels, keep = _cells(rows, cols, diagonal, max_cosine)
        return _block_loss_sum(zimg, cols["emb"], t_prime, b, labels, keep)

    total = block(rows, jnp.eye(zimg.shape[0], dtype=bool))

    def hop(carry, _):
        cols, acc = carry
        cols = jax.tree.map(lambda a: jax.lax.ppermute(a, axes, perm), cols)
        return (cols, acc + block(cols, jnp.zeros((), bool))), None

    (_, total), _ = jax.lax.scan(hop, (rows, total), None, length=n_dev - 1)
    return total


def _gather_sum(zimg, rows, t_prime, b, axes, n_dev, max_cosine):
    """Local loss sum against all-gathered texts: b x n logits on every device."""
    del n_dev
    cols = jax.tree.map(lambda a: jax.lax.all_gather(a, axes, tiled=True), rows)
    index = jax.lax.axis_index(axes) * zimg.shape[0] + jnp.arange(zimg.shape[0])
    labels, keep = _cells(rows, cols, index[:, None] == jnp.arange(cols["ok"].shape[0])[None, :], max_cosine)
    return _block_loss_sum(zimg, cols["emb"], t_prime, b, labels, keep)


def chunked_sigmoid_loss(zimg: jax.Array, ztxt: jax.Array, t_prime: jax.Array, b: jax.Array, *, mesh: Mesh,
                         axis_names: Sequence[str] = ("data", "fsdp"), text_ids: jax.Array | None = None,
                         mask: jax.Array | None = None, items: Mapping[str, jax.Array] | None = None,
                         max_cosine: float | None = None) -> jax.Array:
    """SigLIP over a mesh without ever building the global n x n logits (chunked ring).

    [n, d] inputs are sharded along dim 0 over `axis_names`. Each device scores its
    b x b block, then hands its text block (with its items) to the next device with
    `ppermute`; after n_dev - 1 hops every row has met every text. `items`, `max_cosine`:
    as in `sigmoid_loss`.
    """
    return _sharded_loss(_ring_sum, zimg, ztxt, t_prime, b, mesh, axis_names, text_ids, mask, items, max_cosine)


def gathered_sigmoid_loss(zimg: jax.Array, ztxt: jax.Array, t_prime: jax.Array, b: jax.Array, *, mesh: Mesh,
                          axis_names: Sequence[str] = ("data", "fsdp"), text_ids: jax.Array | None = None,
                          mask: jax.Array | None = None, items: Mapping[str, jax.Array] | None = None,
                          max_cosine: float | None = None) -> jax.Array:
    """SigLIP over a mesh by all-gathering every text onto every device (the simple baseline)."""
    return _sharded_loss(_gather_sum, zimg, ztxt, t_prime, b, mesh, axis_names, text_ids, mask, items, max_cosine)


def focal_loss(logits: jax.Array, targets: jax.Array, alpha: float = 0.25, gamma: float = 2.0,
               mask: jax.Array | None = None) -> jax.Array:
    """Sigmoid focal loss (Lin et al. 2017), mean over valid elements; fp32.

    FL = -alpha_t (1 - p_t)^gamma log p_t down-weights easy examples so the rare layout
    classes dominate the gradient. `mask` broadcasts to `logits`; alpha < 0 disables alpha_t.
    """
    x = logits.astype(jnp.float32)
    t = targets.astype(jnp.float32)
    if x.shape != t.shape:
        raise ValueError(f"focal_loss targets: expected shape {x.shape}, got {t.shape}")
    p = jax.nn.sigmoid(x)
    ce = -(t * jax.nn.log_sigmoid(x) + (1 - t) * jax.nn.log_sigmoid(-x))
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * t + (1 - alpha) * (1 - t))
    w = jnp.ones_like(x) if mask is None else jnp.broadcast_to(mask, x.shape).astype(jnp.float32)
    return jnp.sum(loss * w) / jnp.maximum(jnp.sum(w), 1.0)


def byol_loss(prediction: jax.Array, target: jax.Array, weight: jax.Array) -> jax.Array:
    """BYOL's regression loss (Grill et al. 2020): 2 - 2 cos(prediction, target), the squared
    distance of the L2-normalised vectors [..., D], no gradient into the target; the mean over
    rows weighted by `weight` [...] (0 = no part); fp32."""
    p, z = _normalize(prediction), _normalize(jax.lax.stop_gradient(target))
    d = 2.0 - 2.0 * jnp.sum(p * z, axis=-1)
    w = weight.astype(d.dtype)
    return jnp.sum(d * w) / jnp.maximum(jnp.sum(w), 1.0)

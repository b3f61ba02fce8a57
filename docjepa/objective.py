"""The training objective: SigLIP on windows, pages and documents, shared by train and eval.

Targets are the frozen text embeddings stored with the records. Identical target texts in
the global batch are positives of each other (labels from text ids), and masked steps or
pages (padding, fewer than `min_words` words) take no part in the loss. A document's target
is the mean of all its page targets (`pipeline._Spec.doc_target`); its image side is the TTM
memory after the document's last window, read out by the document head, wherever in the
stream that window falls (`doc_mask`), so the memory is trained to summarise the whole
document it has read, chunk after chunk.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections as mlc
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from docjepa import losses
from docjepa.models.docjepa import l2_normalize, masked_mean


def _siglip(level: str, z: jax.Array, batch: dict[str, jax.Array], mask: jax.Array,
            scale: losses.SigLIPTemperature, cfg: mlc.ConfigDict, mesh: Mesh | None) -> jax.Array:
    """In-batch SigLIP of one level. With `loss.batch_false_negatives`, what the bank term masks
    is masked in the batch too (overlapping windows of one page, near-duplicate targets)."""
    z = z.reshape(-1, z.shape[-1])
    t = l2_normalize(batch[f"{level}_emb"].reshape(-1, z.shape[-1]))
    items = _level_items(level, batch)
    ids, mask = items.pop("text_id"), mask.reshape(-1)
    max_cosine = cfg.max_negative_cosine if cfg.batch_false_negatives else None
    t_prime, b = scale.t_prime[...], scale.b[...]
    kw = dict(text_ids=ids, mask=mask, items=items, max_cosine=max_cosine)
    if cfg.chunked:
        return losses.chunked_sigmoid_loss(z, t, t_prime, b, mesh=mesh, **kw)
    return losses.sigmoid_loss(z, t, t_prime, b, **kw)


def bias_inits(loss_cfg: mlc.ConfigDict, data_cfg: mlc.ConfigDict,
               bank_sizes: dict[str, int] | None = None) -> dict[str, float]:
    """Initial SigLIP bias per level: `loss.bias_init`, or with `loss.bias_init_auto` -log(n)
    where n is the number of texts each item is scored against: the level's items in the global
    batch (windows, pages, documents) plus the text-bank entries scored per step."""
    b = data_cfg.batch_size
    counts = {"window": b * data_cfg.max_steps, "page": b * data_cfg.max_pages, "doc": b}
    for level, k in (bank_sizes or {}).items():
        if loss_cfg[f"{level}_bank_weight"] > 0:
            counts[level] += min(k, loss_cfg.bank_size) if loss_cfg.bank_size else k
    if loss_cfg.bias_init_auto:
        return {level: -math.log(max(n, 2)) for level, n in counts.items()}
    return {level: float(loss_cfg.bias_init) for level in counts}


# The model outputs the terms score (what gradient accumulation caches per microbatch; "layout"
# only where the layout head exists).
EMBEDDINGS = ("window", "page", "doc", "layout", "encoder_features", "pretext/flip", "pretext/flip_target", "pretext/sort",
              "pretext/sort_target", "byol/online", "byol/target", "byol/valid")


def _window(model, out, batch, cfg, mesh, bank):
    return _siglip("window", out["window"], batch, batch["window_mask"], model.window_scale, cfg, mesh)


def _page_mask(out, batch):
    return batch["page_mask"] & out["page_present"]


def _page(model, out, batch, cfg, mesh, bank):
    return _siglip("page", out["page"], batch, _page_mask(out, batch), model.page_scale, cfg, mesh)


def _doc(model, out, batch, cfg, mesh, bank):
    return _siglip("doc", out["doc"], batch, batch["doc_mask"], model.doc_scale, cfg, mesh)


def _doc_running(model, out, batch, cfg, mesh, bank):
    """The document's target scored after every chunk, not only its last: what the memory holds
    so far is aligned with the whole document's text, so the write path learns from every step of
    every stream (about one row in thirty ends a document in the demo's one-window steps)."""
    return _siglip("doc", out["doc"], batch, batch["doc_known"], model.doc_scale, cfg, mesh)


def _layout(model, out, batch, cfg, mesh, bank):
    """Focal loss of the layout head's logits against the pseudo-layout cells (SelfDocSeg),
    over the real windows of the batch."""
    logits, target = out["layout"], batch["layout_mask"]
    if logits.shape != target.shape:
        raise ValueError(f"data.layout_grid: the pseudo-layout targets are {target.shape[2:]} cells per window, "
                         f"the layout head's map (model.layout_stage) is {logits.shape[2:]}")
    return losses.focal_loss(logits, target, cfg.focal_alpha, cfg.focal_gamma, mask=batch["step_mask"][..., None, None])


def _variance(model, out, batch, cfg, mesh, bank):
    """VICReg's variance hinge: mean over channels of max(0, floor - std across the batch's real
    windows) of Hiera's window features, so the encoder cannot shrink its windows onto one point."""
    z, mask = out["encoder_features"], batch["step_mask"]
    mu = masked_mean(z, mask, axis=(0, 1))
    std = jnp.sqrt(masked_mean(jnp.square(z - mu), mask, axis=(0, 1)) + 1e-4)
    return jnp.mean(jax.nn.relu(cfg.variance_floor - std))


def _pretext(name: str):
    def term(model, out, batch, cfg, mesh, bank):
        """Softmax cross-entropy of a spatial pretext's head over its windows (those drawn among
        real windows; a padding draw has an all-zero target and takes no part)."""
        logits, target = out[f"pretext/{name}"], out[f"pretext/{name}_target"]
        nll = -jnp.sum(target * jax.nn.log_softmax(logits.astype(jnp.float32)), axis=-1)
        return jnp.sum(nll) / jnp.maximum(jnp.sum(target), 1.0)

    return term


def _byol(model, out, batch, cfg, mesh, bank):
    """BYOL's symmetric loss (SelfDocSeg): the online prediction of each view's region vectors
    against the target projection of the other view's, 2 - 2 cos, over the real regions."""
    p, z, w = out["byol/online"], out["byol/target"], out["byol/valid"]
    return losses.byol_loss(p[:, 0], z[:, 1], w) + losses.byol_loss(p[:, 1], z[:, 0], w)


def _level_items(level: str, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """The batch's items of `level`, flattened: text id, and for windows and pages their document,
    page and (windows) box in px: what tells a false negative (`losses.false_negatives`)."""
    if level == "doc":
        return {"text_id": jnp.full(batch["doc_mask"].reshape(-1).shape, -1, jnp.int32)}
    if level == "window":
        rows = batch["window_rows"]
        doc = jnp.broadcast_to(batch["record_index"][:, None], rows.shape[:2])
        return {"text_id": batch["window_text_id"].reshape(-1), "doc": doc.reshape(-1),
                "page": rows[..., 0].reshape(-1), "box": rows[..., 1:].reshape(-1, 4)}
    doc = jnp.broadcast_to(batch["record_index"][:, None], batch["page_index"].shape)
    return {"text_id": batch["page_text_id"].reshape(-1), "doc": doc.reshape(-1), "page": batch["page_index"].reshape(-1)}


def bank_exclusions(rows: dict[str, jax.Array], targets: jax.Array, bank: dict[str, jax.Array],
                    max_cosine: float) -> jax.Array:
    """[n, K] True where bank entry k is no true negative of row i: `losses.false_negatives`
    (the same text, overlapping windows of one page, a near-duplicate target), an entry whose
    text is in the batch (scored there already), padding."""
    same = losses.false_negatives({**rows, "emb": l2_normalize(targets)}, bank, max_cosine)
    in_batch = losses.same_ids(rows["text_id"], bank["text_id"]).any(axis=0, keepdims=True)
    return same | in_batch | ~bank["valid"][None, :]


def _bank_term(level: str, out_key: str, scale: str, mask_fn):
    def term(model, out, batch, cfg, mesh, bank):
        if bank is None:
            raise ValueError(f"loss.{level}_bank_weight > 0 needs the text bank (data/bank.py) passed to the step")
        z = out[out_key].reshape(-1, out[out_key].shape[-1])
        t = batch[f"{level}_emb"].reshape(-1, z.shape[-1])
        rows = _level_items(level, batch)
        if mesh is not None:  # rows replicated (n x d, small); the bank stays sharded along K
            z, t, rows = jax.lax.with_sharding_constraint((z, t, rows), NamedSharding(mesh, P()))
        exclude = bank_exclusions(rows, t, bank[level], cfg.max_negative_cosine)
        sc = getattr(model, scale)
        return losses.bank_negative_loss(z, bank[level]["emb"], sc.t_prime[...], sc.b[...],
                                         row_valid=mask_fn(out, batch).reshape(-1), exclude=exclude)

    return term


@dataclasses.dataclass(frozen=True)
class Term:
    """One term of the objective: `fn(model, out, batch, loss_cfg, mesh, bank)` -> scalar, weighted by
    `config.loss.<weight>`; `fields`: batch fields it reads beyond `state.STEP_FIELDS`. A new
    term is one function and one registry entry."""

    weight: str
    fn: Callable[..., jax.Array]
    fields: tuple[str, ...] = ()


# The registry, keyed by the metric name each term is logged under.
TERMS: dict[str, Term] = {
    "loss/window": Term("window_weight", _window),   # window embedding <-> text under the window
    "loss/page": Term("page_weight", _page),         # page embedding <-> text of the page
    "loss/doc": Term("doc_weight", _doc),            # memory at a document's end <-> mean of its page texts
    "loss/doc_running": Term("doc_running_weight", _doc_running, ("doc_known",)),  # ... after every chunk
    "loss/layout": Term("layout_weight", _layout, ("layout_mask",)),  # pseudo-layout regions per token of a Hiera stage
    "loss/byol": Term("byol_weight", _byol, ("layout_mask",)),  # region vectors of two views agree (BYOL)
    "loss/flip": Term("flip_weight", _pretext("flip")),  # which flips were applied to a window
    "loss/sort": Term("sort_weight", _pretext("sort")),  # which order its horizontal strips were put in
    "loss/variance": Term("variance_weight", _variance),  # spread of Hiera's window features (VICReg)
    # Text-bank negatives beside the batch (data/bank.py), with false negatives masked.
    "loss/window_bank": Term("window_bank_weight", _bank_term("window", "window", "window_scale",
                                                              lambda out, batch: batch["window_mask"])),
    "loss/page_bank": Term("page_bank_weight", _bank_term("page", "page", "page_scale", _page_mask)),
}


def sample_bank(bank: dict[str, dict[str, jax.Array]], key: jax.Array, size: int) -> dict[str, dict[str, jax.Array]]:
    """`size` entries of each level drawn without replacement (all of a smaller level)."""
    out = {}
    for level, cols in bank.items():
        n = cols["emb"].shape[0]
        if n <= size:
            out[level] = cols
            continue
        idx = jax.random.choice(jax.random.fold_in(key, len(out)), n, (size,), replace=False)
        out[level] = jax.tree.map(lambda x: x[idx], cols)
    return out


def active_terms(cfg: mlc.ConfigDict) -> list[str]:
    """Names of the terms with a non-zero weight in `config.loss`."""
    return [name for name, term in TERMS.items() if cfg[term.weight] > 0]


def batch_fields(cfg: mlc.ConfigDict) -> tuple[str, ...]:
    """The batch fields the active terms of `config.loss` read beyond the SigLIP terms'."""
    return tuple(dict.fromkeys(f for name in active_terms(cfg) for f in TERMS[name].fields))


def loss_terms(model, out: dict[str, jax.Array], batch: dict[str, jax.Array], cfg: mlc.ConfigDict,
               mesh: Mesh | None = None, bank: dict[str, dict[str, jax.Array]] | None = None,
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weighted total loss and its named terms for one (micro)batch. A term with weight 0 is
    not traced: it costs nothing and is not logged. `bank`: the text bank per level (bank terms)."""
    terms = {name: TERMS[name].fn(model, out, batch, cfg, mesh, bank) for name in active_terms(cfg)}
    total = sum(cfg[TERMS[name].weight] * value for name, value in terms.items())
    return total, terms

"""The training objective: SigLIP on windows, pages and documents, shared by train and eval.

Targets are the frozen text embeddings stored with the records. Identical target texts in
the global batch are positives of each other (labels from text ids), and masked steps or
pages (padding, fewer than `min_words` words) take no part in the loss. An example's
document target is the mean of its page targets; its image side is the TTM memory read
out by the document head, so the memory is trained to summarise what it has read.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections as mlc
from jax.sharding import Mesh

from docjepa import losses
from docjepa.models.docjepa import l2_normalize, masked_mean


def _siglip(z: jax.Array, t: jax.Array, ids: jax.Array, mask: jax.Array, scale: losses.SigLIPTemperature,
            chunked: bool, mesh: Mesh | None) -> jax.Array:
    z = z.reshape(-1, z.shape[-1])
    t = l2_normalize(t.reshape(-1, t.shape[-1]))
    ids, mask = ids.reshape(-1), mask.reshape(-1)
    t_prime, b = scale.t_prime[...], scale.b[...]
    if chunked:
        return losses.chunked_sigmoid_loss(z, t, t_prime, b, mesh=mesh, text_ids=ids, mask=mask)
    return losses.sigmoid_loss(z, t, t_prime, b, labels=losses.labels_from_ids(ids, ids), mask=mask)


def bias_inits(loss_cfg: mlc.ConfigDict, data_cfg: mlc.ConfigDict) -> dict[str, float]:
    """Initial SigLIP bias per level: `loss.bias_init`, or with `loss.bias_init_auto` -log(n)
    where n is the level's item count in the global batch (windows, pages, documents)."""
    b = data_cfg.batch_size
    counts = {"window": b * data_cfg.max_steps, "page": b * data_cfg.max_pages, "doc": b}
    if loss_cfg.bias_init_auto:
        return {level: -math.log(max(n, 2)) for level, n in counts.items()}
    return {level: float(loss_cfg.bias_init) for level in counts}


def doc_targets(page_emb: jax.Array, page_mask: jax.Array) -> jax.Array:
    """[B, P, C] page targets, [B, P] mask -> [B, C]: the mean of each example's valid pages."""
    return masked_mean(l2_normalize(page_emb), page_mask, axis=1)


def _window(model, out, batch, cfg, mesh):
    return _siglip(out["window"], batch["window_emb"], batch["window_text_id"], batch["window_mask"],
                   model.window_scale, cfg.chunked, mesh)


def _page_mask(out, batch):
    return batch["page_mask"] & out["page_present"]


def _page(model, out, batch, cfg, mesh):
    return _siglip(out["page"], batch["page_emb"], batch["page_text_id"], _page_mask(out, batch),
                   model.page_scale, cfg.chunked, mesh)


def _doc(model, out, batch, cfg, mesh):
    page_mask = _page_mask(out, batch)
    doc_mask = page_mask.any(axis=-1)
    return _siglip(out["doc"], doc_targets(batch["page_emb"], page_mask), jnp.full(doc_mask.shape, -1, jnp.int32),
                   doc_mask, model.doc_scale, cfg.chunked, mesh)


@dataclasses.dataclass(frozen=True)
class Term:
    """One term of the objective: `fn(model, out, batch, loss_cfg, mesh)` -> scalar, weighted by
    `config.loss.<weight>`. A new term is one function and one registry entry."""

    weight: str
    fn: Callable[..., jax.Array]


# The registry, keyed by the metric name each term is logged under.
TERMS: dict[str, Term] = {
    "loss/window": Term("window_weight", _window),   # window embedding <-> text under the window
    "loss/page": Term("page_weight", _page),         # page embedding <-> text of the page
    "loss/doc": Term("doc_weight", _doc),            # TTM memory <-> mean of the document's page texts
}


def active_terms(cfg: mlc.ConfigDict) -> list[str]:
    """Names of the terms with a non-zero weight in `config.loss`."""
    return [name for name, term in TERMS.items() if cfg[term.weight] > 0]


def loss_terms(model, out: dict[str, jax.Array], batch: dict[str, jax.Array], cfg: mlc.ConfigDict,
               mesh: Mesh | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weighted total loss and its named terms for one (micro)batch. A term with weight 0 is
    not traced: it costs nothing and is not logged."""
    terms = {name: TERMS[name].fn(model, out, batch, cfg, mesh) for name in active_terms(cfg)}
    total = sum(cfg[TERMS[name].weight] * value for name, value in terms.items())
    return total, terms

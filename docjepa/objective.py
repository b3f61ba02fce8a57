"""The training objective: SigLIP on windows and on pages, shared by train and eval.

Targets are the frozen text embeddings stored with the records. Identical target texts in
the global batch are positives of each other (labels from text ids), and masked steps or
pages (padding, fewer than `min_words` words) take no part in the loss.
"""

from __future__ import annotations

import jax
import ml_collections as mlc
from jax.sharding import Mesh

from docjepa import losses
from docjepa.models.docjepa import l2_normalize


def _siglip(z: jax.Array, t: jax.Array, ids: jax.Array, mask: jax.Array, scale: losses.SigLIPTemperature,
            chunked: bool, mesh: Mesh | None) -> jax.Array:
    z = z.reshape(-1, z.shape[-1])
    t = l2_normalize(t.reshape(-1, t.shape[-1]))
    ids, mask = ids.reshape(-1), mask.reshape(-1)
    t_prime, b = scale.t_prime[...], scale.b[...]
    if chunked:
        return losses.chunked_sigmoid_loss(z, t, t_prime, b, mesh=mesh, text_ids=ids, mask=mask)
    return losses.sigmoid_loss(z, t, t_prime, b, labels=losses.labels_from_ids(ids, ids), mask=mask)


def loss_terms(model, out: dict[str, jax.Array], batch: dict[str, jax.Array], cfg: mlc.ConfigDict,
               mesh: Mesh | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weighted total loss and its named terms for one (micro)batch."""
    window = _siglip(out["window"], batch["window_emb"], batch["window_text_id"], batch["window_mask"],
                     model.window_scale, cfg.chunked, mesh)
    page_mask = batch["page_mask"] & out["page_present"]
    page = _siglip(out["page"], batch["page_emb"], batch["page_text_id"], page_mask,
                   model.page_scale, cfg.chunked, mesh)
    total = cfg.window_weight * window + cfg.page_weight * page
    return total, {"loss/window": window, "loss/page": page}

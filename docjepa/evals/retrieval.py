"""Cross-modal retrieval at window, page and document level, both directions, with the pool
size and the chance level beside each R@k, so that numbers from pools of different sizes
can be read."""

from __future__ import annotations

import ml_collections as mlc

from docjepa.evals.common import KS, both_directions, chance_recall
from docjepa.evals.features import Features, Needs

NEEDS = Needs()


def evaluate(train: Features | None, val: Features, cfg: mlc.ConfigDict | None) -> dict[str, float]:
    """retrieval/{window,page,doc}/{pool, i2t_rK, t2i_rK, chance_rK} on the val split."""
    del train, cfg
    out: dict[str, float] = {}
    for level in ("window", "page", "doc"):
        img, txt, ids = getattr(val, level), getattr(val, f"{level}_txt"), getattr(val, f"{level}_ids")
        if len(img) == 0:
            continue
        out[f"retrieval/{level}/pool"] = float(len(img))
        out.update(both_directions(f"retrieval/{level}", img, txt, ids))
        for k in KS:
            out[f"retrieval/{level}/chance_r{k}"] = chance_recall(ids, ids, k)
    return out

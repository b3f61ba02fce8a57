"""The layout prior: retrieval by a predictor that cannot read.

Each item's embedding is the mean train target of the items with its layout key (category,
first page, window cell; `features.layout_key`). It needs no model. It is the reference for a
model that has not learnt to read the words (a small one, or early in training): the part of
the text that layout alone explains. Items tied on a key rank among themselves in data order.
"""

from __future__ import annotations

import ml_collections as mlc
import numpy as np

from docjepa.evals.common import both_directions, normalize
from docjepa.evals.features import Features, Needs

NEEDS = Needs(train=True)


def evaluate(train: Features | None, val: Features, cfg: mlc.ConfigDict | None) -> dict[str, float]:
    """prior/{window,page,doc}/{i2t,t2i}_rK; levels without items on either split are left out."""
    del cfg
    out: dict[str, float] = {}
    for level in ("window", "page", "doc"):
        txt_tr, key_tr = getattr(train, f"{level}_txt"), getattr(train, f"{level}_key")
        txt, ids, key = getattr(val, f"{level}_txt"), getattr(val, f"{level}_ids"), getattr(val, f"{level}_key")
        if len(txt) == 0 or len(txt_tr) == 0:
            continue
        keys, inverse = np.unique(key_tr, return_inverse=True)
        sums = np.zeros((len(keys), txt_tr.shape[1]))
        np.add.at(sums, inverse, txt_tr)
        means = dict(zip(keys.tolist(), normalize(sums)))
        fallback = normalize(txt_tr.mean(axis=0))
        pred = np.stack([means.get(k, fallback) for k in key.tolist()])
        out.update(both_directions(f"prior/{level}", pred, txt, ids))
    return out

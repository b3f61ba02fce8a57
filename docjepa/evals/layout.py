"""Layout probe: a linear per-token classifier of the layout class (paragraph, table, ...) on
frozen Hiera stage features (`config.evals.layout_stage`). It asks whether the encoder's
spatial maps know the page structure, which the pooled embeddings cannot show."""

from __future__ import annotations

import ml_collections as mlc
import numpy as np

from docjepa.evals.common import mean_iou
from docjepa.evals.features import LAYOUT_LABELS, Features, Needs

NEEDS = Needs(train=True, layout=True)


def evaluate(train: Features | None, val: Features, cfg: mlc.ConfigDict | None) -> dict[str, float]:
    """probe/layout/{miou, acc, majority_miou, tokens_train}; empty without two classes to fit."""
    # sklearn is imported here, not at the top: training imports the registry and never probes.
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    del cfg
    if len(train.layout_y) == 0 or len(val.layout_y) == 0 or len(np.unique(train.layout_y)) < 2:
        return {}
    scaler = StandardScaler().fit(train.layout_x)
    clf = LogisticRegression(max_iter=500).fit(scaler.transform(train.layout_x), train.layout_y)
    pred = clf.predict(scaler.transform(val.layout_x))
    miou, _ = mean_iou(pred, val.layout_y, len(LAYOUT_LABELS))
    majority = np.full_like(val.layout_y, np.bincount(train.layout_y).argmax())
    return {
        "probe/layout/miou": miou,
        "probe/layout/acc": float(np.mean(pred == val.layout_y)),
        "probe/layout/majority_miou": mean_iou(majority, val.layout_y, len(LAYOUT_LABELS))[0],
        "probe/layout/tokens_train": float(len(train.layout_y)),
    }

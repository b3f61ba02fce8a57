"""Layout probe: a linear per-token classifier of the layout class (paragraph, table, ...) on
frozen Hiera stage features (`config.evals.layout_stage`). It asks whether the encoder's
spatial maps know the page structure, which the pooled embeddings cannot show.

Labels come from the records' layout boxes or, per `config.evals.layout_labels`, from
pseudo-layout masks (region / background) for documents without boxes (real PDFs). The two
label sets are probed apart and reported under their own keys, `probe/layout/` (boxes) and
`probe/layout_pseudo/`, so a number always says which labels it was scored on."""

from __future__ import annotations

import ml_collections as mlc
import numpy as np

from docjepa.evals.common import mean_iou
from docjepa.evals.features import LAYOUT_LABELS, PSEUDO_LABELS, Features, Needs

NEEDS = Needs(train=True, layout=True)


def evaluate(train: Features | None, val: Features, cfg: mlc.ConfigDict | None) -> dict[str, float]:
    """probe/layout/{miou, acc, majority_miou, tokens_train} on layout-box labels and the same
    under probe/layout_pseudo/ on pseudo-layout labels; a label set without two classes in the
    train split or any val token gives no keys."""
    del cfg
    out = {}
    for prefix, pseudo, classes in (("probe/layout", False, LAYOUT_LABELS), ("probe/layout_pseudo", True, PSEUDO_LABELS)):
        tr, va = train.layout_pseudo == pseudo, val.layout_pseudo == pseudo
        out |= _probe(prefix, train.layout_x[tr], train.layout_y[tr], val.layout_x[va], val.layout_y[va], len(classes))
    return out


def _probe(prefix: str, xtr: np.ndarray, ytr: np.ndarray, xva: np.ndarray, yva: np.ndarray,
           num_classes: int) -> dict[str, float]:
    # sklearn is imported here, not at the top: training imports the registry and never probes.
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if len(ytr) == 0 or len(yva) == 0 or len(np.unique(ytr)) < 2:
        return {}
    scaler = StandardScaler().fit(xtr)
    clf = LogisticRegression(max_iter=500).fit(scaler.transform(xtr), ytr)
    pred = clf.predict(scaler.transform(xva))
    majority = np.full_like(yva, np.bincount(ytr).argmax())
    return {
        f"{prefix}/miou": mean_iou(pred, yva, num_classes)[0],
        f"{prefix}/acc": float(np.mean(pred == yva)),
        f"{prefix}/majority_miou": mean_iou(majority, yva, num_classes)[0],
        f"{prefix}/tokens_train": float(len(ytr)),
    }

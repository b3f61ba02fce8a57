"""Document category from frozen page embeddings: a linear probe and a kNN classifier fitted
on the train split, with the majority class as the floor they must beat."""

from __future__ import annotations

import ml_collections as mlc
import numpy as np

from docjepa.evals.features import Features, Needs

NEEDS = Needs(train=True)


def evaluate(train: Features | None, val: Features, cfg: mlc.ConfigDict | None) -> dict[str, float]:
    """probe/category/{linear_acc, knn_acc, majority_acc, n_train, n_val}; empty when the
    train split has fewer than two labelled pages or categories."""
    # sklearn is imported here, not at the top: training imports the registry and never probes.
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    del cfg
    tr = train.page_category >= 0
    va = val.page_category >= 0
    if tr.sum() < 2 or va.sum() < 1 or len(np.unique(train.page_category[tr])) < 2:
        return {}
    xtr, ytr, xva, yva = train.page[tr], train.page_category[tr], val.page[va], val.page_category[va]
    linear = LogisticRegression(max_iter=2000, C=10.0).fit(xtr, ytr)
    knn = KNeighborsClassifier(n_neighbors=min(10, len(ytr)), metric="cosine").fit(xtr, ytr)
    majority = np.bincount(ytr).argmax()
    return {
        "probe/category/linear_acc": float(np.mean(linear.predict(xva) == yva)),
        "probe/category/knn_acc": float(np.mean(knn.predict(xva) == yva)),
        "probe/category/majority_acc": float(np.mean(yva == majority)),
        "probe/category/n_train": float(len(ytr)),
        "probe/category/n_val": float(len(yva)),
    }

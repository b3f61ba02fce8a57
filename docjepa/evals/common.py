"""Metric helpers shared by the evaluators and the report: recall@k with its chance level,
mean IoU, and L2 normalisation. Plain numpy on host arrays, so they are testable by hand."""

from __future__ import annotations

import numpy as np

from docjepa.data.bank import normalize  # noqa: F401  (the one normalisation; evaluators import it from here)

KS = (1, 5, 10)



def recall_at_k(queries: np.ndarray, candidates: np.ndarray, query_ids: np.ndarray, cand_ids: np.ndarray,
                ks: tuple[int, ...] = KS, block: int = 1024) -> dict[int, float]:
    """Fraction of queries with a correct candidate among the top k by cosine similarity.

    A candidate is correct when its id equals the query's id, so identical target texts
    are all right answers. Queries are processed in blocks to bound memory.
    """
    kmax = min(max(ks), len(candidates))
    hits = {k: 0 for k in ks}
    for s in range(0, len(queries), block):
        sims = queries[s : s + block] @ candidates.T
        top = np.argpartition(-sims, kmax - 1, axis=1)[:, :kmax]
        order = np.take_along_axis(top, np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1), axis=1)
        correct = cand_ids[order] == query_ids[s : s + block, None]
        for k in ks:
            hits[k] += int(correct[:, :k].any(axis=1).sum())
    return {k: hits[k] / max(len(queries), 1) for k in ks}


def recall_curve(queries: np.ndarray, candidates: np.ndarray, query_ids: np.ndarray, cand_ids: np.ndarray,
                 kmax: int = 50) -> np.ndarray:
    """R@1 .. R@min(kmax, pool) as one array, for plotting."""
    ks = tuple(range(1, min(kmax, len(candidates)) + 1))
    r = recall_at_k(queries, candidates, query_ids, cand_ids, ks)
    return np.array([r[k] for k in ks])


def chance_recall(query_ids: np.ndarray, cand_ids: np.ndarray, k: int) -> float:
    """Expected R@k of a random ranking: 1 - C(N - p, k) / C(N, k), averaged over queries."""
    n = len(cand_ids)
    values, counts = np.unique(cand_ids, return_counts=True)
    positives = dict(zip(values.tolist(), counts.tolist()))
    out = []
    for q in query_ids.tolist():
        p = positives.get(q, 0)
        miss = 1.0
        for j in range(min(k, n)):
            miss *= max(n - p - j, 0) / (n - j)
        out.append(1.0 - miss)
    return float(np.mean(out)) if out else 0.0


def both_directions(prefix: str, img: np.ndarray, txt: np.ndarray, ids: np.ndarray) -> dict[str, float]:
    """R@k image -> text and text -> image, keyed PREFIX/{i2t,t2i}_r{k}."""
    out = {}
    for name, q, c in (("i2t", img, txt), ("t2i", txt, img)):
        for k, v in recall_at_k(q, c, ids, ids).items():
            out[f"{prefix}/{name}_r{k}"] = v
    return out


def mean_iou(pred: np.ndarray, true: np.ndarray, num_classes: int) -> tuple[float, np.ndarray]:
    """Mean IoU over the classes present in `true` or `pred`, and the per-class IoUs (NaN if absent)."""
    ious = np.full(num_classes, np.nan)
    for c in range(num_classes):
        inter = np.sum((pred == c) & (true == c))
        union = np.sum((pred == c) | (true == c))
        if union:
            ious[c] = inter / union
    return float(np.nanmean(ious)), ious

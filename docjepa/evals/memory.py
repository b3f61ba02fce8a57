"""What the memory carries across a document: retrieval of long documents read whole, and a
memory-recall curve.

- `retrieval/doc_long/...`: document retrieval (as `retrieval`) restricted to the documents of
  at least `evals.long_doc_pages` pages, each read whole with the memory carried across all of
  its chunks.
- `memory_recall/k{k}/...`: after the last window of page n, a linear read-out of the model's
  state (the mean of the TTM memory tokens; for the no-memory ablation, the mean of the
  features of its current chunk so far) is asked for the text of page n - k. The read-out is
  ridge regression fitted on the train split, one per k, and scored by retrieval among the
  validation pages. A reader whose state forgets falls to chance as k grows; a reader that
  sees only its chunk is at chance once page n - k lies in an earlier chunk.
"""

from __future__ import annotations

import ml_collections as mlc
import numpy as np

from docjepa.evals.common import KS, both_directions, chance_recall, normalize, recall_at_k
from docjepa.evals.features import Features, Needs

NEEDS = Needs(train=True, trace=True)
RIDGE = 1.0  # ridge penalty on standardised read-out inputs


def _pairs(f: Features, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(state at the end of page n, target of page n - k, its text id) for every page end whose
    page n - k has a target (at least `min_words` words)."""
    where = {(int(r), int(p)): i for i, (r, p) in enumerate(f.page_ref)}
    rows = [(j, where[(int(r), int(p) - k)]) for j, (r, p) in enumerate(f.page_end_ref) if (int(r), int(p) - k) in where]
    if not rows:
        return np.zeros((0, f.page_end_trace.shape[-1])), np.zeros((0, f.page_txt.shape[-1])), np.zeros((0,), np.int64)
    state, page = map(np.array, zip(*rows))
    return f.page_end_trace[state], f.page_txt[page], f.page_ids[page]


def _ridge(x: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge regression on standardised inputs: (mean, scale, weights with a bias row)."""
    mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = np.concatenate([(x - mu) / sd, np.ones((len(x), 1))], axis=1)
    w = np.linalg.solve(z.T @ z + lam * np.eye(z.shape[1]), z.T @ y)
    return mu, sd, w


def memory_recall(train: Features, val: Features, max_k: int) -> dict[str, float]:
    """memory_recall/k{k}/{n, r1, r10, chance_r1, chance_r10} for k = 0..max_k, where both
    splits have page ends with a page k pages back (20 train pairs at least)."""
    out: dict[str, float] = {}
    for k in range(max_k + 1):
        x_tr, y_tr, _ = _pairs(train, k)
        x_va, _, ids = _pairs(val, k)
        if len(x_tr) < 20 or len(x_va) == 0:
            continue
        mu, sd, w = _ridge(x_tr, y_tr, RIDGE * len(x_tr) / 100)
        pred = normalize(np.concatenate([(x_va - mu) / sd, np.ones((len(x_va), 1))], axis=1) @ w)
        recall = recall_at_k(pred, val.page_txt, ids, val.page_ids)
        out[f"memory_recall/k{k}/n"] = float(len(x_va))
        for r in (1, 10):
            out[f"memory_recall/k{k}/r{r}"] = recall[r]
            out[f"memory_recall/k{k}/chance_r{r}"] = chance_recall(ids, val.page_ids, r)
    return out


def long_documents(val: Features, min_pages: int) -> dict[str, float]:
    """retrieval/doc_long/{pool, i2t_rK, t2i_rK, chance_rK} over documents of >= min_pages pages."""
    keep = val.doc_pages >= min_pages
    if keep.sum() < 2:
        return {}
    out = {"retrieval/doc_long/pool": float(keep.sum())}
    out.update(both_directions("retrieval/doc_long", val.doc[keep], val.doc_txt[keep], val.doc_ids[keep]))
    for k in KS:
        out[f"retrieval/doc_long/chance_r{k}"] = chance_recall(val.doc_ids[keep], val.doc_ids[keep], k)
    return out


def evaluate(train: Features | None, val: Features, cfg: mlc.ConfigDict) -> dict[str, float]:
    """Long-document retrieval and the memory-recall curve (see the module docstring)."""
    return long_documents(val, cfg.evals.long_doc_pages) | memory_recall(train, val, cfg.evals.recall_max_k)

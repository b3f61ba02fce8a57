"""The text bank and the target mean: what the frozen text tower makes free, written by prepare.

The text encoder is frozen and runs once, in prepare, so every target of the corpus is known
before training. Two things follow:

- **Negatives.** Every distinct training target can serve as a negative at every step (a bank
  scored beside the batch), exactly: unlike a MoCo queue, nothing in it is stale. SigLIP's
  ablations (Zhai et al. 2023, Fig. 2/3) show small batches lose most; a bank of thousands costs
  one extra [n, K] matmul. The bank keeps each entry's text id, document, page and window box so
  that the loss can mask false negatives (same text, overlapping windows of one page).
- **Centring.** Mean-pooled sentence embeddings are anisotropic (Ethayarajh 2019; Su et al.
  2021): all share a large common direction, so cosine similarities crowd near one value and
  the SigLIP logits of positives and negatives differ little. The corpus mean of the training
  targets is removed before training (pipeline and bank alike), per level.

Layout: `DIR/text_bank.safetensors` (no pickle; raw arrays with dtype and shape) and
`manifest["target_mean"] = {"window": [...], "page": [...]}`.
"""

from __future__ import annotations

import os
from typing import Any

import grain
import numpy as np
from safetensors.numpy import load_file, save_file

from docjepa.data.record import decode_record

FILE = "text_bank.safetensors"
LEVELS = ("window", "page")
_FIELDS = {"windows", "window_nwords", "window_text_id", "window_emb", "page_nwords", "page_text_id", "page_emb"}


def build(data_dir: str, files: list[str]) -> dict[str, list[float]]:
    """Write DIR/text_bank.safetensors from the records of `files` (the training split, in
    manifest order: an entry's `doc` is the record's index in that split, as the train
    pipeline numbers it). Returns the per-level mean of all non-empty targets, occurrences
    counted (the corpus mean), for the manifest."""
    rows: dict[str, dict[str, list[np.ndarray]]] = {lv: {} for lv in LEVELS}
    source = grain.sources.ArrayRecordDataSource([os.path.join(data_dir, f) for f in files])
    for doc in range(len(source)):
        rec = decode_record(source[doc], _FIELDS)
        n_win, n_page = len(rec["window_text_id"]), len(rec["page_text_id"])
        cols = {
            "window": {"emb": rec["window_emb"], "text_id": rec["window_text_id"], "nwords": rec["window_nwords"],
                       "doc": np.full(n_win, doc), "page": rec["windows"][:, 0], "box": rec["windows"][:, 1:5]},
            "page": {"emb": rec["page_emb"], "text_id": rec["page_text_id"], "nwords": rec["page_nwords"],
                     "doc": np.full(n_page, doc), "page": np.arange(n_page)},
        }
        for level, c in cols.items():
            for k, v in c.items():
                rows[level].setdefault(k, []).append(np.asarray(v))
    tensors: dict[str, np.ndarray] = {}
    means: dict[str, list[float]] = {}
    for level, c in rows.items():
        cat = {k: np.concatenate(v) for k, v in c.items()} if c else {}
        present = cat["text_id"] >= 0 if cat else np.zeros(0, bool)
        if not present.any():
            raise ValueError(f"{data_dir}: the training split has no non-empty {level} text to build a text bank")
        means[level] = cat["emb"][present].astype(np.float64).mean(axis=0).tolist()
        _, first = np.unique(cat["text_id"][present], return_index=True)   # distinct texts, first occurrence
        keep = np.flatnonzero(present)[np.sort(first)]
        for k, v in cat.items():
            dtype = np.float16 if k == "emb" else np.int32
            tensors[f"{level}/{k}"] = np.ascontiguousarray(v[keep].astype(dtype))
    tmp = os.path.join(data_dir, FILE + ".tmp")
    save_file(tensors, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, os.path.join(data_dir, FILE))
    return means


def check(manifest: dict[str, Any], data_dir: str, *, center: bool, need_bank: bool) -> None:
    """Fail with one line, before anything compiles, when the corpus lacks what the run asks for."""
    if center:
        target_mean(manifest, LEVELS[0], data_dir)
    if need_bank:
        _bank_path(data_dir)


def _bank_path(data_dir: str) -> str:
    path = os.path.join(data_dir, FILE)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: missing (prepared by an older version); run python -m docjepa.prepare "
                         "again into a new directory, or set loss.window_bank_weight=0 and loss.page_bank_weight=0")
    return path


def target_mean(manifest: dict[str, Any], level: str, data_dir: str) -> np.ndarray:
    """The training targets' mean of `level` from the manifest, float32 [dim]."""
    if "target_mean" not in manifest:
        raise ValueError(f"{data_dir}/manifest.json: no target_mean (prepared by an older version); run "
                         "python -m docjepa.prepare again into a new directory, or set data.center_targets=False")
    return np.asarray(manifest["target_mean"][level], np.float32)


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay near zero): dot products become cosines.
    The one numpy normalisation of targets: the bank, the pipeline's document targets and the
    evaluators (`evals.common`) use it."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def load(data_dir: str, manifest: dict[str, Any], *, min_words: int, center: bool) -> dict[str, dict[str, np.ndarray]]:
    """The bank per level with targets centred (when `center`) and L2-normalised, float32; entries
    with fewer than `min_words` words are dropped, as the loss masks them in batches too."""
    flat = load_file(_bank_path(data_dir))
    out: dict[str, dict[str, np.ndarray]] = {}
    for level in LEVELS:
        cols = {k.split("/", 1)[1]: v for k, v in flat.items() if k.startswith(level + "/")}
        keep = cols.pop("nwords") >= min_words
        emb = cols.pop("emb").astype(np.float32)[keep]
        if center:
            emb = emb - target_mean(manifest, level, data_dir)
        out[level] = {"emb": normalize(emb), **{k: v[keep] for k, v in cols.items()}}
    return out

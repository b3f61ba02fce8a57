"""Scores of stage-2 answers against the truth, per task: is the output valid JSON of the task's
schema (`tasks.validate`), and the task's metrics:

    ocr     word_f1 (multisets of words), cer and wer (edit distance over the characters / words of
            the reading-order text, divided by the truth's length; lower is better)
    qa      exact_match, anls (average normalised Levenshtein similarity, threshold 0.5)
    layout  layout_f1 (one-to-one matches of {category, box}: same category, IoU >= 0.5)
    ner     entity_f1 (multisets of (type, text) pairs)

A prediction that is not valid scores 0 on the task's metric (an error rate counts it as an empty
answer: every truth character or word deleted, rate 1), so a metric never looks better for outputs
that were not answers. Everything here is plain Python and numpy.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import numpy as np

from docjepa.data import tasks

ANLS_THRESHOLD = 0.5  # Biten et al. 2019 (ST-VQA), as DocVQA (Mathew et al. 2021) scores answers
LAYOUT_IOU = 0.5


def edit_distance(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Levenshtein distance (insertions, deletions, substitutions, each 1) between two sequences
    of characters, words or any hashable items: the one distance CER, WER and ANLS share.

    One numpy pass per item of `a`: with tmp[j] = min(above + 1, diagonal + cost), the row is
    d[j] = min_k<=j (tmp[k] + j - k), a running minimum, so a page of OCR costs milliseconds."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    ids: dict[Hashable, int] = {}
    x = np.array([ids.setdefault(t, len(ids)) for t in a], np.int64)
    y = np.array([ids.setdefault(t, len(ids)) for t in b], np.int64)
    cols = np.arange(len(y) + 1)
    row = cols.copy()
    for i, token in enumerate(x, 1):
        tmp = np.empty_like(row)
        tmp[0] = i
        tmp[1:] = np.minimum(row[1:] + 1, row[:-1] + (y != token))
        row = np.minimum.accumulate(tmp - cols) + cols
    return int(row[-1])


def _text(lines: Sequence[str]) -> str:
    """The reading-order text of OCR lines: lines joined by a space, runs of whitespace as one."""
    return " ".join(" ".join(lines).split())


def error_rate(predicted: Sequence[Hashable], truth: Sequence[Hashable]) -> float:
    """Edit distance over the truth's length (at least 1): CER over characters, WER over words.
    May exceed 1 (insertions)."""
    return edit_distance(predicted, truth) / max(len(truth), 1)


def cer(predicted: Sequence[str], truth: Sequence[str]) -> float:
    """Character error rate of OCR lines against the truth's (reading-order text)."""
    return error_rate(_text(predicted), _text(truth))


def wer(predicted: Sequence[str], truth: Sequence[str]) -> float:
    """Word error rate of OCR lines against the truth's (whitespace-separated words, in order)."""
    return error_rate(_text(predicted).split(), _text(truth).split())


def anls(predicted: str, truth: str, threshold: float = ANLS_THRESHOLD) -> float:
    """Normalised Levenshtein similarity of one answer: 1 - d / max(len) when the normalised
    distance is below `threshold`, else 0 (Biten et al., "Scene Text Visual Question Answering",
    ICCV 2019; DocVQA, Mathew et al., WACV 2021, uses threshold 0.5). Compared lower-cased with
    outer whitespace stripped, as their evaluation does. The mean over questions is the ANLS."""
    p, t = predicted.strip().lower(), truth.strip().lower()
    if not p and not t:
        return 1.0
    nl = edit_distance(p, t) / max(len(p), len(t))
    return 1.0 - nl if nl < threshold else 0.0


def f1(matched: int, n_predicted: int, n_truth: int) -> float:
    """F1 of `matched` items out of `n_predicted` predictions and `n_truth` truths (1 when both
    are empty: nothing to find, nothing claimed)."""
    if not n_predicted and not n_truth:
        return 1.0
    if not matched:
        return 0.0
    precision, recall = matched / n_predicted, matched / n_truth
    return 2 * precision * recall / (precision + recall)


def multiset_f1(predicted: Iterable[Hashable], truth: Iterable[Hashable]) -> float:
    """F1 of two multisets: an item counts as found as many times as both hold it."""
    p, t = Counter(predicted), Counter(truth)
    return f1(sum((p & t).values()), sum(p.values()), sum(t.values()))


def word_f1(predicted: list[str], truth: list[str]) -> float:
    """F1 of the multisets of whitespace-separated words of two lists of lines (order ignored)."""
    return multiset_f1(" ".join(predicted).split(), " ".join(truth).split())


def entity_f1(predicted: Sequence[dict[str, str]], truth: Sequence[dict[str, str]]) -> float:
    """F1 of the multisets of exact (type, text) pairs."""
    return multiset_f1(((e["type"], e["text"]) for e in predicted), ((e["type"], e["text"]) for e in truth))


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two [x0, y0, x1, y1] boxes (0 when the union is empty)."""
    area = lambda r: max(0.0, r[2] - r[0]) * max(0.0, r[3] - r[1])  # noqa: E731
    inter = area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def layout_f1(predicted: Sequence[dict[str, Any]], truth: Sequence[dict[str, Any]], threshold: float = LAYOUT_IOU
              ) -> float:
    """F1 of layout elements matched one to one: a pair matches when the category is the same and
    the IoU is at least `threshold`; pairs are taken greedily by decreasing IoU (as COCO-style
    detection matching does), each element in at most one."""
    pairs = sorted(((iou(p["box"], t["box"]), i, j) for i, p in enumerate(predicted) for j, t in enumerate(truth)
                    if p["category"] == t["category"]), reverse=True)
    used_p, used_t = set(), set()
    for overlap, i, j in pairs:
        if overlap < threshold:
            break
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
    return f1(len(used_p), len(predicted), len(truth))


def score(task: str, predicted: str, truth: str) -> dict[str, float]:
    """{"valid": 0/1} and the task's metrics (module docstring)."""
    want = tasks.validate(task, truth)
    try:
        got = tasks.validate(task, predicted)
    except tasks.TaskSchemaError:
        got = None
    out = {"valid": float(got is not None)}
    if task == "qa":
        out["exact_match"] = float(got is not None and got["answer"].strip() == want["answer"].strip())
        out["anls"] = 0.0 if got is None else anls(got["answer"], want["answer"])
    elif task == "ocr":
        lines = [] if got is None else got["lines"]  # an invalid answer read nothing
        out["word_f1"] = 0.0 if got is None else word_f1(lines, want["lines"])
        out["cer"], out["wer"] = cer(lines, want["lines"]), wer(lines, want["lines"])
    elif task == "layout":
        out["layout_f1"] = 0.0 if got is None else layout_f1(got["elements"], want["elements"])
    elif task == "ner":
        out["entity_f1"] = 0.0 if got is None else entity_f1(got["entities"], want["entities"])
    return out


def summarize(scores: Iterable[tuple[str, dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """Per task: the number of examples and the mean of each metric."""
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counts: Counter[str] = Counter()
    for task, s in scores:
        counts[task] += 1
        for k, v in s.items():
            sums[task][k] += v
    return {t: {"examples": counts[t], **{k: v / counts[t] for k, v in sums[t].items()}}
            for t in tasks.TASKS if counts[t]}


def table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """A Markdown table of `summarize` outputs side by side: a row per task and metric, a column
    per model (a model missing a task leaves its cell empty)."""
    names = list(results)
    head = ["| task | metric | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    rows = []
    for task in tasks.TASKS:
        keys = list(dict.fromkeys(k for r in results.values() for k in r.get(task, {})))
        for k in keys:
            cells = [results[n].get(task, {}).get(k) for n in names]
            text = ["" if c is None else str(c) if k == "examples" else f"{c:.4f}" for c in cells]
            rows.append(f"| {task} | {k} | " + " | ".join(text) + " |")
    return "\n".join(head + rows) + "\n"

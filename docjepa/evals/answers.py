"""Scores of stage-2 answers against the truth, per task: is the output valid JSON of the task's
schema (`tasks.validate`), QA exact match, OCR word-level F1.

A prediction that is not valid scores 0 on the task's metric, so a metric never looks better for
outputs that were not answers.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from docjepa.data import tasks


def word_f1(predicted: list[str], truth: list[str]) -> float:
    """F1 of the multisets of whitespace-separated words of two lists of lines (order ignored)."""
    p, t = Counter(" ".join(predicted).split()), Counter(" ".join(truth).split())
    if not p and not t:
        return 1.0
    overlap = sum((p & t).values())
    if not overlap:
        return 0.0
    precision, recall = overlap / sum(p.values()), overlap / sum(t.values())
    return 2 * precision * recall / (precision + recall)


def score(task: str, predicted: str, truth: str) -> dict[str, float]:
    """{"valid": 0/1} and the task's metric ("exact_match" for QA, "word_f1" for OCR)."""
    want = tasks.validate(task, truth)
    try:
        got = tasks.validate(task, predicted)
    except tasks.TaskSchemaError:
        got = None
    out = {"valid": float(got is not None)}
    if task == "qa":
        out["exact_match"] = float(got is not None and got["answer"].strip() == want["answer"].strip())
    elif task == "ocr":
        out["word_f1"] = 0.0 if got is None else word_f1(got["lines"], want["lines"])
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

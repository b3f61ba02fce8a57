"""The evaluation report: OUT/step_N.json (flat metrics), step_N.md (one table, a column per
model) and two PNGs (recall curves against chance; query pages with their top page texts)."""

from __future__ import annotations

import json
import math
import textwrap
import warnings
from typing import Any

from etils import epath

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from docjepa.data import pipeline  # noqa: E402
from docjepa.evals.common import chance_recall, recall_curve  # noqa: E402
from docjepa.evals.features import Features  # noqa: E402

# The retrieval grid prints page texts in DejaVu Sans Mono, which has no CJK or Thai glyphs:
# matplotlib warns once per missing glyph (hundreds per real corpus) and draws a box, as intended.
warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning,
                        module=__name__)


def markdown_table(runs: dict[str, dict[str, float]]) -> str:
    """Rows: metric keys; columns: one per evaluated model."""
    names = list(runs)
    keys = sorted({k for r in runs.values() for k in r})
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for k in keys:
        cells = [f"{runs[n][k]:.4f}" if k in runs[n] and not math.isnan(runs[n][k]) else "" for n in names]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _save(fig: Any, path: epath.Path, dpi: int) -> None:
    """Write a figure as PNG through epath (a local path or an object store such as gs://)."""
    with path.open("wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
    plt.close(fig)


def plot_recall_curves(feats: dict[str, Features], path: epath.Path) -> None:
    """Image -> text R@K for K = 1..50 per level and model, with the chance curve."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, level in zip(axes, ("window", "page", "doc")):
        for name, f in feats.items():
            img, txt, ids = getattr(f, level), getattr(f, f"{level}_txt"), getattr(f, f"{level}_ids")
            if len(img):
                curve = recall_curve(img, txt, ids, ids)
                ax.plot(np.arange(1, len(curve) + 1), curve, label=f"{name} (pool {len(img)})")
        first = next(iter(feats.values()))
        ids = getattr(first, f"{level}_ids")
        if len(ids):
            ks = np.arange(1, min(50, len(ids)) + 1)
            ax.plot(ks, [chance_recall(ids, ids, int(k)) for k in ks], "k--", label="chance")
        ax.set_title(f"{level}: image -> text")
        ax.set_xlabel("K")
        ax.set_ylabel("Recall@K")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path, 110)


def plot_retrieval_grid(f: Features, data_dir: str, split: str, path: epath.Path, n_queries: int = 4) -> None:
    """Query pages with their top-3 retrieved page texts (a check mark on correct ones)."""
    if len(f.page) == 0:
        return
    picks = np.linspace(0, len(f.page) - 1, num=min(n_queries, len(f.page))).astype(int)
    sims = f.page[picks] @ f.page_txt.T
    fig, axes = plt.subplots(len(picks), 2, figsize=(12, 3.6 * len(picks)), gridspec_kw={"width_ratios": [1, 2.4]})
    axes = np.atleast_2d(axes)
    texts: dict[int, list[str]] = {}

    def page_text(i: int) -> str:
        rec_i, page = f.page_ref[i]
        if rec_i not in texts:
            texts[rec_i] = pipeline.load_record(data_dir, split, int(rec_i), pages=False)["page_text"]
        return texts[rec_i][page]

    for row, (q, s) in enumerate(zip(picks, sims)):
        rec = pipeline.load_record(data_dir, split, int(f.page_ref[q][0]))
        axes[row, 0].imshow(rec["pages"][int(f.page_ref[q][1])])
        axes[row, 0].set_title(f"query page {q}", fontsize=8)
        axes[row, 0].axis("off")
        lines = []
        for rank, j in enumerate(np.argsort(-s)[:3], 1):
            mark = "[correct]" if f.page_ids[j] == f.page_ids[q] else ""
            snippet = textwrap.shorten(page_text(int(j)), 260)
            lines.append(f"{rank}. ({s[j]:.3f}) {mark}\n" + textwrap.fill(snippet, 90))
        axes[row, 1].text(0, 1, "\n\n".join(lines), va="top", fontsize=7, family="monospace")
        axes[row, 1].axis("off")
    fig.tight_layout()
    _save(fig, path, 90)


def write_report(out: epath.Path, step: int, runs: dict[str, dict[str, float]], feats: dict[str, Features],
                 data_dir: str, split: str) -> epath.Path:
    """OUT/step_N.{json,md} and the two PNGs; returns the JSON path. The "trained" run's keys
    are bare, every other run's are prefixed with its name."""
    out.mkdir(parents=True, exist_ok=True)
    flat = {}
    for name, r in runs.items():
        prefix = "" if name == "trained" else f"{name}/"
        flat.update({prefix + k: v for k, v in r.items()})
    path = out / f"step_{step}.json"
    path.write_text(json.dumps({"step": step, "data": data_dir, "split": split, **flat}, indent=1, sort_keys=True))
    (out / f"step_{step}.md").write_text(f"# Evaluation at step {step} ({data_dir}, split {split})\n\n"
                                         + markdown_table(runs))
    plot_recall_curves(feats, out / f"step_{step}_recall.png")
    if "trained" in feats:
        plot_retrieval_grid(feats["trained"], data_dir, split, out / f"step_{step}_retrieval_grid.png")
    return path

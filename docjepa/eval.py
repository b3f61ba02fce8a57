"""Evaluation: python -m docjepa.eval --config configs/X.py --workdir DIR [--step N] [--data DIR].

Loads a checkpoint, runs the frozen encoder over a prepared split, and reports:
retrieval (window, page, document; both directions; R@1/5/10 with pool size and chance),
a linear probe and a kNN classifier of the document category on page embeddings, and a
linear layout probe on frozen Hiera stage features (mean IoU). The same numbers are
computed for the random-initialised twin (step 0) and for any `--compare NAME=WORKDIR`
checkpoint (e.g. the no-memory ablation), so the gain of each is visible.

Evaluators are small plug-ins registered in EVALUATORS and named in `config.evals.names`
(`config.evals.in_train` inside training), in the style of big_vision.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections as mlc  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from flax import nnx  # noqa: E402
from ml_collections import config_flags  # noqa: E402
from tqdm import tqdm  # noqa: E402

from docjepa import checkpoint, metrics, objective, sharding, train, validate  # noqa: E402
from docjepa.data import ocr, pipeline  # noqa: E402

KS = (1, 5, 10)
BACKGROUND = "background"
LAYOUT_LABELS = (BACKGROUND,) + tuple(ocr.LAYOUT_CLASSES)


# ----------------------------------------------------------------------------- metrics


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


def mean_iou(pred: np.ndarray, true: np.ndarray, num_classes: int) -> tuple[float, np.ndarray]:
    """Mean IoU over the classes present in `true` or `pred`."""
    ious = np.full(num_classes, np.nan)
    for c in range(num_classes):
        inter = np.sum((pred == c) & (true == c))
        union = np.sum((pred == c) | (true == c))
        if union:
            ious[c] = inter / union
    return float(np.nanmean(ious)), ious


# ------------------------------------------------------------------------- features


@dataclasses.dataclass
class Features:
    """Frozen-model outputs over one split, flattened to the valid items of each level."""

    window: np.ndarray
    window_txt: np.ndarray
    window_ids: np.ndarray
    page: np.ndarray
    page_txt: np.ndarray
    page_ids: np.ndarray
    page_category: np.ndarray
    page_ref: np.ndarray        # [n, 2] (record_index, page index in the record)
    doc: np.ndarray
    doc_txt: np.ndarray
    doc_ids: np.ndarray
    window_key: np.ndarray      # layout keys (`layout_key`) of each level's items, for the prior
    page_key: np.ndarray
    doc_key: np.ndarray
    layout_x: np.ndarray        # [tokens, C] Hiera stage features
    layout_y: np.ndarray        # [tokens] layout class index (0 = background)
    val_loss: float


def layout_key(category: np.ndarray, page: np.ndarray, box: np.ndarray | None = None, grid: int = 8) -> np.ndarray:
    """What an encoder that cannot read may know of an item: the document category, whether it
    is on the first page, and for windows the cell of the window's centre on a `grid` x `grid`
    lattice of its page (`box` holds x0, y0, x1, y1 as fractions of the page)."""
    key = np.asarray(category, np.int64) * 2 + (np.asarray(page) == 0)
    if box is not None:
        cells = np.clip(((box[:, :2] + box[:, 2:]) / 2 * grid).astype(np.int64), 0, grid - 1)
        key = (key * grid + cells[:, 1]) * grid + cells[:, 0]
    return key


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def layout_labels(record: dict[str, Any], window_rows: np.ndarray, grid: int) -> np.ndarray:
    """Per-cell layout class of each window on a `grid` x `grid` lattice (cell centres)."""
    doc = ocr.Document.from_json(record["ocr_json"])
    out = np.zeros((len(window_rows), grid, grid), np.int32)
    for i, (page, x0, y0, x1, y1) in enumerate(window_rows):
        cell = (x1 - x0) / grid
        centres = (np.arange(grid) + 0.5) * cell
        xs, ys = x0 + centres, y0 + centres
        for el in doc.pages[page].layout:  # later elements are drawn over earlier ones
            bx0, by0, bx1, by1 = el.box
            inside = ((ys >= by0) & (ys < by1))[:, None] & ((xs >= bx0) & (xs < bx1))[None, :]
            out[i][inside] = LAYOUT_LABELS.index(el.cls)
    return out


class FeatureExtractor:
    """Jitted, sharded forward pass of the model over eval batches of one data directory."""

    def __init__(self, cfg: mlc.ConfigDict, graphdef: nnx.GraphDef, mesh: jax.sharding.Mesh, param_sh: Any):
        self.cfg, self.mesh = cfg, mesh
        self.stage = cfg.evals.layout_stage
        bsh = sharding.batch_sharding(mesh, 1)

        def forward(params, batch):
            model = nnx.merge(graphdef, params)
            out = model(batch["patches"], batch["step_mask"], batch["page_ids"], batch["window_box"],
                        max_pages=cfg.data.max_pages, stage=self.stage)
            loss, _ = objective.loss_terms(model, out, batch, _no_chunk(cfg.loss))
            out = {k: out[k] for k in ("window", "page", "doc")} | {"stage": out["stage"].astype(jnp.float32),
                                                                    "loss": loss}
            return out

        self.forward = jax.jit(forward, in_shardings=(param_sh, bsh), out_shardings=sharding.replicated(mesh))

    def batches(self, data_dir: str, split: str, max_examples: int) -> Iterator[dict[str, np.ndarray]]:
        return pipeline.eval_batches(
            data_dir, split, batch_size=self.cfg.evals.batch_size, max_steps=self.cfg.data.max_steps,
            max_pages=self.cfg.data.max_pages, min_words=self.cfg.data.min_words, max_examples=max_examples)

    def __call__(self, params: Any, data_dir: str, split: str, max_examples: int, *, want_layout: bool,
                 layout_tokens_per_window: int = 64, desc: str = "eval") -> Features:
        cols: dict[str, list[np.ndarray]] = {k: [] for k in Features.__dataclass_fields__ if k != "val_loss"}
        losses: list[float] = []
        records: dict[int, dict[str, Any]] = {}
        rng = np.random.default_rng(0)
        n_proc, p_idx = jax.process_count(), jax.process_index()
        for batch in tqdm(self.batches(data_dir, split, max_examples), desc=desc, disable=not sys.stderr.isatty()):
            local = {k: np.array_split(batch[k], n_proc)[p_idx] for k in train.STEP_FIELDS}
            out = jax.device_get(self.forward(params, sharding.global_batch(local, self.mesh)))
            ex = batch["example_mask"]
            doc_txt = np.asarray(objective.doc_targets(batch["page_emb"], batch["page_mask"]))
            if ex.any():
                losses.append(float(out["loss"]))
            wm = batch["window_mask"] & ex[:, None]
            cols["window"].append(out["window"][wm])
            cols["window_txt"].append(batch["window_emb"][wm])
            cols["window_ids"].append(batch["window_text_id"][wm])
            pm = batch["page_mask"] & ex[:, None]
            cols["page"].append(out["page"][pm])
            cols["page_txt"].append(batch["page_emb"][pm])
            cols["page_ids"].append(batch["page_text_id"][pm])
            cols["page_category"].append(np.broadcast_to(batch["category_id"][:, None], pm.shape)[pm])
            for b in range(len(ex)):
                if not ex[b]:
                    continue
                rec_i, chunk_i = int(batch["record_index"][b]), int(batch["chunk_index"][b])
                if rec_i not in records:
                    records[rec_i] = pipeline.load_record(data_dir, split, rec_i, pages=False)
                rec = records[rec_i]
                start, end = pipeline.plan_chunks(rec["windows"][:, 0], self.cfg.data.max_steps,
                                                  self.cfg.data.max_pages)[chunk_i]
                pages = np.unique(rec["windows"][start:end, 0])
                cols["page_ref"].append(np.stack([np.full(len(pages), rec_i), pages], 1)[pm[b][: len(pages)]])
                cat_b = int(batch["category_id"][b])
                steps = wm[b][: end - start]
                cols["window_key"].append(layout_key(np.full(steps.sum(), cat_b), rec["windows"][start:end, 0][steps],
                                                     batch["window_box"][b, : end - start][steps]))
                cols["page_key"].append(layout_key(np.full(len(pages), cat_b), pages)[pm[b][: len(pages)]])
                cols["doc_key"].append(layout_key(np.array([cat_b]), pages[:1]))
                cols["doc"].append(out["doc"][b : b + 1])
                cols["doc_txt"].append(doc_txt[b : b + 1])
                cols["doc_ids"].append(np.array([rec_i * 4096 + chunk_i]))
                if want_layout:
                    grid = out["stage"].shape[2]
                    labels = layout_labels(rec, rec["windows"][start:end], grid)
                    feats = out["stage"][b, : end - start]
                    flat_x = feats.reshape(-1, feats.shape[-1])
                    flat_y = labels.reshape(-1)
                    take = rng.choice(len(flat_y), size=min(len(flat_y), layout_tokens_per_window * (end - start)),
                                      replace=False)
                    cols["layout_x"].append(flat_x[take])
                    cols["layout_y"].append(flat_y[take])
            records = {k: v for k, v in records.items() if k >= int(batch["record_index"].max())}
        cat = {k: (np.concatenate(v) if v else np.zeros((0,))) for k, v in cols.items()}
        for k in ("window_txt", "page_txt", "doc_txt"):
            if len(cat[k]):
                cat[k] = _normalize(cat[k].astype(np.float32))
        return Features(**cat, val_loss=float(np.mean(losses)) if losses else float("nan"))


def _no_chunk(loss_cfg: mlc.ConfigDict) -> mlc.ConfigDict:
    c = mlc.ConfigDict(loss_cfg.to_dict())
    c.chunked = False
    return c


# ------------------------------------------------------------------------ evaluators


def both_directions(prefix: str, img: np.ndarray, txt: np.ndarray, ids: np.ndarray) -> dict[str, float]:
    """R@k image -> text and text -> image, keyed PREFIX/{i2t,t2i}_r{k}."""
    out = {}
    for name, q, c in (("i2t", img, txt), ("t2i", txt, img)):
        for k, v in recall_at_k(q, c, ids, ids).items():
            out[f"{prefix}/{name}_r{k}"] = v
    return out


def retrieval(train_f: Features | None, f: Features, cfg: mlc.ConfigDict) -> dict[str, float]:
    """Cross-modal retrieval at window, page and document level, both directions."""
    del train_f, cfg
    out: dict[str, float] = {}
    for level in ("window", "page", "doc"):
        img, txt, ids = getattr(f, level), getattr(f, f"{level}_txt"), getattr(f, f"{level}_ids")
        if len(img) == 0:
            continue
        out[f"retrieval/{level}/pool"] = float(len(img))
        out.update(both_directions(f"retrieval/{level}", img, txt, ids))
        for k in KS:
            out[f"retrieval/{level}/chance_r{k}"] = chance_recall(ids, ids, k)
    return out


def category(train_f: Features | None, f: Features, cfg: mlc.ConfigDict) -> dict[str, float]:
    """Linear probe and kNN on frozen page embeddings for the document category."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    del cfg
    tr = train_f.page_category >= 0
    va = f.page_category >= 0
    if tr.sum() < 2 or va.sum() < 1 or len(np.unique(train_f.page_category[tr])) < 2:
        return {}
    xtr, ytr, xva, yva = train_f.page[tr], train_f.page_category[tr], f.page[va], f.page_category[va]
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


def layout(train_f: Features | None, f: Features, cfg: mlc.ConfigDict) -> dict[str, float]:
    """Linear per-token layout classifier on frozen Hiera stage features: mean IoU."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    del cfg
    if len(train_f.layout_y) == 0 or len(f.layout_y) == 0 or len(np.unique(train_f.layout_y)) < 2:
        return {}
    scaler = StandardScaler().fit(train_f.layout_x)
    clf = LogisticRegression(max_iter=500).fit(scaler.transform(train_f.layout_x), train_f.layout_y)
    pred = clf.predict(scaler.transform(f.layout_x))
    miou, _ = mean_iou(pred, f.layout_y, len(LAYOUT_LABELS))
    majority = np.full_like(f.layout_y, np.bincount(train_f.layout_y).argmax())
    return {
        "probe/layout/miou": miou,
        "probe/layout/acc": float(np.mean(pred == f.layout_y)),
        "probe/layout/majority_miou": mean_iou(majority, f.layout_y, len(LAYOUT_LABELS))[0],
        "probe/layout/tokens_train": float(len(train_f.layout_y)),
    }


def prior(train_f: Features | None, f: Features, cfg: mlc.ConfigDict) -> dict[str, float]:
    """Retrieval by a predictor that cannot read: each item's embedding is the mean train target
    of the items with its layout key (category, first page, window cell; `layout_key`).

    It needs no model. It is the reference for a model that has not learnt to read the words
    (a small one, or early in training): the part of the text that layout alone explains.
    Items tied on a key rank among themselves in data order.
    """
    del cfg
    out: dict[str, float] = {}
    for level in ("window", "page", "doc"):
        txt_tr, key_tr = getattr(train_f, f"{level}_txt"), getattr(train_f, f"{level}_key")
        txt, ids, key = getattr(f, f"{level}_txt"), getattr(f, f"{level}_ids"), getattr(f, f"{level}_key")
        if len(txt) == 0 or len(txt_tr) == 0:
            continue
        keys, inverse = np.unique(key_tr, return_inverse=True)
        sums = np.zeros((len(keys), txt_tr.shape[1]))
        np.add.at(sums, inverse, txt_tr)
        means = dict(zip(keys.tolist(), _normalize(sums)))
        fallback = _normalize(txt_tr.mean(axis=0))
        pred = np.stack([means.get(k, fallback) for k in key.tolist()])
        out.update(both_directions(f"prior/{level}", pred, txt, ids))
    return out


@dataclasses.dataclass(frozen=True)
class Plugin:
    fn: Callable[[Features | None, Features, mlc.ConfigDict], dict[str, float]]
    needs_train: bool
    needs_layout: bool


EVALUATORS: dict[str, Plugin] = {
    "retrieval": Plugin(retrieval, needs_train=False, needs_layout=False),
    "category": Plugin(category, needs_train=True, needs_layout=False),
    "layout": Plugin(layout, needs_train=True, needs_layout=True),
    "prior": Plugin(prior, needs_train=True, needs_layout=False),
}


class Evaluation:
    """Runs the named evaluators on one model (graphdef + params) over one data directory."""

    def __init__(self, cfg: mlc.ConfigDict, graphdef: nnx.GraphDef, mesh: jax.sharding.Mesh, param_sh: Any,
                 names: list[str], data_dir: str):
        unknown = [n for n in names if n not in EVALUATORS]
        if unknown:
            raise validate.ConfigError(f"config.evals.names: unknown evaluator(s) {unknown}; known: {sorted(EVALUATORS)}")
        self.cfg, self.names, self.data_dir = cfg, list(names), data_dir
        self.extract = FeatureExtractor(cfg, graphdef, mesh, param_sh)
        manifest = pipeline.read_manifest(data_dir)
        splits = manifest["splits"]
        has = lambda s: splits.get(s, {}).get("documents", 0) > 0  # noqa: E731
        self.val_split = cfg.data.val_split if has(cfg.data.val_split) else cfg.data.train_split
        self.train_split = cfg.data.train_split if has(cfg.data.train_split) else self.val_split

    def run(self, params: Any, tag: str = "eval") -> tuple[dict[str, float], Features]:
        plugins = [EVALUATORS[n] for n in self.names]
        want_layout = any(p.needs_layout for p in plugins)
        n = self.cfg.evals.max_examples
        val = self.extract(params, self.data_dir, self.val_split, n, want_layout=want_layout, desc=f"{tag}:val")
        train_f = None
        if any(p.needs_train for p in plugins):
            train_f = self.extract(params, self.data_dir, self.train_split, n, want_layout=want_layout,
                                   desc=f"{tag}:train")
        results = {"val/loss": val.val_loss}
        for name, plugin in zip(self.names, plugins):
            results.update(plugin.fn(train_f, val, self.cfg))
        return results, val


# --------------------------------------------------------------------------- outputs


def markdown_table(runs: dict[str, dict[str, float]]) -> str:
    """Rows: metric keys; columns: one per evaluated model."""
    names = list(runs)
    keys = sorted({k for r in runs.values() for k in r})
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for k in keys:
        cells = [f"{runs[n][k]:.4f}" if k in runs[n] and not math.isnan(runs[n][k]) else "" for n in names]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_recall_curves(feats: dict[str, Features], path: Path) -> None:
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
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_retrieval_grid(f: Features, data_dir: str, split: str, path: Path, n_queries: int = 4) -> None:
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
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(out: Path, step: int, runs: dict[str, dict[str, float]], feats: dict[str, Features],
                 data_dir: str, split: str) -> Path:
    """OUT/step_N.{json,md} and the two PNGs; returns the JSON path."""
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


# ------------------------------------------------------------------------------- CLI

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Command-line flags, defined only when this module is the program (not on import)."""
    config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/demo.py.")
    flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints/.")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
    flags.DEFINE_string("data", None, "Prepared data directory (default: config.data.dir).")
    flags.DEFINE_multi_string("compare", [], "NAME=WORKDIR of another run to evaluate alongside.")
    flags.DEFINE_bool("random_init", True, "Also evaluate the random-initialised twin (step 0).")
    flags.mark_flags_as_required(["config", "workdir"])


class Restored:
    """A model restored from a workdir: graphdef, params and the shardings they live on."""

    def __init__(self, cfg: mlc.ConfigDict, workdir: Path, embed_dim: int, mesh: jax.sharding.Mesh,
                 step: int | None):
        make_model = functools.partial(train.build_model, cfg, embed_dim, cfg.seed)
        self.graphdef, abstract_params = nnx.split(nnx.eval_shape(make_model), nnx.Param)
        tx, _ = train.build_optimizer(cfg.optim, cfg.train.steps, train.decay_mask(abstract_params))
        state_sh = train.train_state_shardings(tx, abstract_params, mesh)
        self.param_sh = state_sh["params"]
        self.init_params = jax.jit(lambda: nnx.to_pure_dict(nnx.state(make_model(), nnx.Param)),
                                   out_shardings=self.param_sh)
        self.params, self.step = None, 0
        ckpt = checkpoint.Checkpointer(workdir, keep=1, async_save=False)
        if ckpt.latest_step() is not None:
            abstract = checkpoint.abstract_with_shardings(train.abstract_train_state(tx, abstract_params), state_sh)
            state = ckpt.restore(step, abstract)
            self.params, self.step = state["params"], int(state["step"])
        elif step is not None:
            raise FileNotFoundError(f"{workdir}: no checkpoint at step {step}")
        ckpt.close()


def load_config(workdir: Path) -> mlc.ConfigDict:
    """The resolved config a training run wrote to its workdir."""
    path = workdir / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing (is {workdir} a docjepa workdir?)")
    return mlc.ConfigDict(json.loads(path.read_text()))


def main(argv: list[str]) -> None:
    del argv
    metrics.setup_logging()
    cfg = FLAGS.config
    workdir = Path(FLAGS.workdir)
    data_dir = FLAGS.data or cfg.data.dir
    try:
        validate.check(cfg, "eval")
        manifest = pipeline.read_manifest(data_dir)
        compare = {}
        for item in FLAGS.compare:
            name, _, other = item.partition("=")
            if not name or not other:
                raise ValueError(f"--compare: expected NAME=WORKDIR, got {item!r}")
            compare[name] = (load_config(Path(other)), Path(other))
    except (validate.ConfigError, FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")

    sharding.maybe_initialize_distributed()
    mesh = sharding.make_mesh(cfg.mesh)
    embed_dim = train.embed_dim_of(cfg, manifest)
    main_run = Restored(cfg, workdir, embed_dim, mesh, FLAGS.step)
    if main_run.params is None:
        sys.exit(f"error: {workdir}: no checkpoint to evaluate (train first, or pass --workdir of a run)")
    evaluation = Evaluation(cfg, main_run.graphdef, mesh, main_run.param_sh, list(cfg.evals.names), data_dir)

    runs, feats = {}, {}
    runs["trained"], feats["trained"] = evaluation.run(main_run.params, tag="trained")
    if FLAGS.random_init:
        runs["random_init"], feats["random_init"] = evaluation.run(main_run.init_params(), tag="random_init")
    for name, (other_cfg, other_dir) in compare.items():
        other = Restored(other_cfg, other_dir, train.embed_dim_of(other_cfg, manifest), mesh, None)
        if other.params is None:
            sys.exit(f"error: --compare {name}: {other_dir} has no checkpoint")
        ev = Evaluation(cfg, other.graphdef, mesh, other.param_sh, list(cfg.evals.names), data_dir)
        runs[name], feats[name] = ev.run(other.params, tag=name)

    if jax.process_index() == 0:
        # The training data's report goes to DIR/eval; another corpus's to DIR/eval/<its name>.
        out = workdir / "eval"
        if os.path.abspath(data_dir) != os.path.abspath(cfg.data.dir):
            out = out / os.path.basename(os.path.normpath(data_dir))
        path = write_report(out, main_run.step, runs, feats, data_dir, evaluation.val_split)
        print(markdown_table(runs))
        print(f"wrote {path}")


if __name__ == "__main__":
    define_flags()
    app.run(main)

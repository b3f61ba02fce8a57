"""Frozen-model features over one split: the one forward pass every evaluator reads from.

Evaluators declare what they need (`Needs`); the extractor computes only that, so the Hiera
stage maps (a wider forward and per-cell layout labels from the OCR JSON, or from pseudo-layout
masks per `config.evals.layout_labels`) cost nothing unless the layout probe runs. Each record
is decoded once, by `pipeline.eval_batches`, whose examples carry their window rows, record
pages and running id.

Every process reads the same batches and feeds its own rows; the forward's outputs stay split over
the batch, each process builds the columns of its rows only, and the columns are gathered once at
the end (`sharding.gather_pieces`), so every process ends with the Features of one process.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
from flax import nnx
from tqdm import tqdm

from docjepa import objective, sharding, state as factory
from docjepa.data import ocr, pipeline, pseudo_layout
from docjepa.evals.common import normalize

BACKGROUND = "background"
LAYOUT_LABELS = (BACKGROUND,) + tuple(ocr.LAYOUT_CLASSES)
# Classes of pseudo-layout labels (docjepa/data/pseudo_layout.py): physical regions, no types.
PSEUDO_LABELS = (BACKGROUND, "region")


@dataclasses.dataclass(frozen=True)
class Needs:
    """What an evaluator reads beyond the val split's embeddings and targets."""

    train: bool = False   # the same features over the train split (probes, the prior)
    layout: bool = False  # Hiera stage maps with per-cell layout labels (`layout_x`, `layout_y`)
    trace: bool = False   # the reader's state at the end of every page (`page_end_trace`)

    @staticmethod
    def union(needs: Iterable[Needs]) -> Needs:
        needs = list(needs)
        return Needs(**{f.name: any(getattr(n, f.name) for n in needs) for f in dataclasses.fields(Needs)})


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
    doc_ids: np.ndarray         # the record index: one item per whole document
    doc_pages: np.ndarray       # pages per document
    window_key: np.ndarray      # layout keys (`layout_key`) of each level's items, for the prior
    page_key: np.ndarray
    doc_key: np.ndarray
    layout_x: np.ndarray        # [tokens, C] Hiera stage features (empty unless Needs.layout)
    layout_y: np.ndarray        # [tokens] class index in LAYOUT_LABELS, or PSEUDO_LABELS where layout_pseudo
    layout_pseudo: np.ndarray   # [tokens] bool: the label is a pseudo-layout cell, not a layout box's class
    page_end_trace: np.ndarray  # [n, C] the reader's state after each page's last window (Needs.trace)
    page_end_ref: np.ndarray    # [n, 2] (record_index, page) of each of those page ends
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


def layout_labels(doc: ocr.Document, window_rows: np.ndarray, grid: int) -> np.ndarray:
    """Per-cell layout class of each window (rows: page, x0, y0, x1, y1) on a `grid` x `grid`
    lattice (cell centres)."""
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


def window_labels(doc: ocr.Document, window_rows: np.ndarray, grid: int, source: str,
                  pseudo_masks: np.ndarray | None) -> tuple[np.ndarray, bool] | None:
    """(per-cell labels [n, grid, grid], whether they are pseudo-layout) of a document's windows
    under `source` (config.evals.layout_labels), or None when it gives this document no labels: a
    document without layout boxes has no truth to score ("boxes"), and only pseudo-layout masks
    (`pseudo_masks`: [n, W, W] per window, from the pipeline) can stand in for it."""
    if source != "pseudo" and any(p.layout for p in doc.pages):
        return layout_labels(doc, window_rows, grid), False
    if source == "boxes":
        return None
    return pseudo_layout.cell_targets(pseudo_masks, grid).astype(np.int32), True


def _eval_loss(loss_cfg: mlc.ConfigDict) -> mlc.ConfigDict:
    """The loss config of `val/loss`: the in-batch text terms, unchunked (eval batches are small
    and need no memory saving), without the text bank (a training-split resource), the
    pseudo-layout terms (their targets are not read here) and the spatial pretexts."""
    c = mlc.ConfigDict(loss_cfg.to_dict())
    c.chunked = False
    c.window_bank_weight = c.page_bank_weight = c.layout_weight = c.byol_weight = c.flip_weight = c.sort_weight = 0.0
    return c


def eval_chunks(cfg: mlc.ConfigDict) -> mlc.ConfigDict:
    """`cfg` with the evaluation's chunks (`evals.max_steps`, `evals.max_pages`; 0 = training's)
    as `data.max_steps` / `data.max_pages`. Documents are read whole either way, the memory
    carried; but a page's embedding pools its windows within one chunk, so a run trained on
    chunks shorter than a page is evaluated on whole pages, and every run on the same pool."""
    out = mlc.ConfigDict(cfg.to_dict())
    for name in ("max_steps", "max_pages"):
        if cfg.evals.get(name, 0):
            out.data[name] = cfg.evals[name]
    return out


class FeatureExtractor:
    """Jitted, sharded forward pass of the model over eval batches of one data directory."""

    def __init__(self, cfg: mlc.ConfigDict, graphdef: nnx.GraphDef, mesh: jax.sharding.Mesh, param_sh: Any,
                 layout: bool, trace: bool = False):
        cfg = eval_chunks(cfg)
        self.cfg, self.mesh, self.layout, self.trace = cfg, mesh, layout, trace
        self.label_source = cfg.evals.get("layout_labels", "boxes")  # configs saved before the field: boxes
        stage = cfg.evals.layout_stage if layout else None
        loss_cfg = _eval_loss(cfg.loss)
        self.fields = factory.STEP_FIELDS + objective.batch_fields(loss_cfg)  # what `val/loss` reads
        self.budget = factory.window_budget(cfg, mesh, cfg.evals.batch_size)

        table = sharding.config_rules(cfg)

        def forward(params, batch, memory):
            model = nnx.merge(graphdef, params)
            with sharding.activation_sharding(mesh, table):
                out = model(batch["patches"], batch["step_mask"], batch["page_ids"], batch["window_box"],
                            max_pages=cfg.data.max_pages, memory=memory, reset=batch["reset"], stage=stage,
                            trace=trace, pack=self.budget)
            loss, _ = objective.loss_terms(model, out, batch, loss_cfg)
            keep = {k: out[k] for k in ("window", "page", "doc", "trace") if k in out}
            if layout:
                keep["stage"] = out["stage"].astype(jnp.float32)
            return keep, loss, out.get("memory")

        # Outputs stay split over the batch like the inputs, and each process reads back its own rows:
        # replicated, a Hiera-B eval batch's stage-1 maps (64 x 64 windows of 28 x 28 x 192 float32)
        # would put 2.5 GB on every device and host.
        rows = sharding.batch_sharding(mesh, 1)
        self.forward = jax.jit(forward, in_shardings=(param_sh, rows, rows),
                               out_shardings=(rows, sharding.replicated(mesh), rows))

    def _start_memory(self, params: Any) -> jax.Array | None:
        """A placeholder carry for the first batch (every row of it begins a document or is
        padding, so it starts from `memory_init`); None without the TTM."""
        if "ttm" not in params:
            return None
        m, c = params["ttm"]["memory_init"].shape  # the forward's own output sharding: one compiled program
        return jax.device_put(np.zeros((self.cfg.evals.batch_size, m, c), np.float32), sharding.batch_sharding(self.mesh, 1))

    def __call__(self, params: Any, data_dir: str, split: str, max_examples: int,
                 layout_tokens_per_window: int = 64, desc: str = "eval") -> Features:
        cols: dict[str, list[np.ndarray]] = {k: [] for k in Features.__dataclass_fields__ if k != "val_loss"}
        losses: list[float] = []
        parse = functools.lru_cache(maxsize=1)(ocr.Document.from_json)  # a record's chunks share its JSON
        n_proc, p_idx = jax.process_count(), jax.process_index()
        # Pseudo-layout masks at full window resolution; cut to the stage map's cells below.
        mask_grid = pipeline.read_manifest(data_dir)["window"] if self.layout and self.label_source != "boxes" else 0
        batches = pipeline.eval_batches(
            data_dir, split, batch_size=self.cfg.evals.batch_size, max_steps=self.cfg.data.max_steps,
            max_pages=self.cfg.data.max_pages, min_words=self.cfg.data.min_words,
            center=self.cfg.data.center_targets, max_examples=max_examples, with_ocr=self.layout,
            layout_grid=mask_grid, budget=self.budget)
        memory = self._start_memory(params)
        for step, batch in enumerate(tqdm(batches, desc=desc, disable=not sys.stderr.isatty())):
            rows = np.array_split(np.arange(len(batch["example_mask"])), n_proc)[p_idx]  # this process's rows
            any_example = batch["example_mask"].any()
            batch = {k: v[rows] for k, v in batch.items()}  # from here on, this process's rows only
            inputs = sharding.global_batch({k: batch[k] for k in self.fields}, self.mesh)
            out, loss, memory = self.forward(params, inputs, memory)
            if any_example:
                losses.append(float(loss))
            out = sharding.local_rows(out, self.mesh)
            ex = batch["example_mask"]
            wm = batch["window_mask"] & ex[:, None]
            pm = batch["page_mask"] & ex[:, None]
            category = batch["category_id"]
            cols["window"].append(out["window"][wm])
            cols["window_txt"].append(batch["window_emb"][wm])
            cols["window_ids"].append(batch["window_text_id"][wm])
            cols["window_key"].append(layout_key(np.broadcast_to(category[:, None], wm.shape)[wm],
                                                 batch["window_rows"][..., 0][wm], batch["window_box"][wm]))
            cols["page"].append(out["page"][pm])
            cols["page_txt"].append(batch["page_emb"][pm])
            cols["page_ids"].append(batch["page_text_id"][pm])
            cols["page_category"].append(np.broadcast_to(category[:, None], pm.shape)[pm])
            cols["page_ref"].append(np.stack([np.broadcast_to(batch["record_index"][:, None], pm.shape),
                                              batch["page_index"]], -1)[pm])
            cols["page_key"].append(layout_key(np.broadcast_to(category[:, None], pm.shape)[pm],
                                               batch["page_index"][pm]))
            dm = batch["doc_mask"] & ex  # rows whose document ends in this chunk, read whole
            cols["doc"].append(out["doc"][dm])
            cols["doc_txt"].append(batch["doc_emb"][dm])
            cols["doc_ids"].append(batch["record_index"][dm])
            cols["doc_key"].append(layout_key(category[dm], np.zeros(int(dm.sum()), np.int64)))
            cols["doc_pages"].append(batch["doc_pages"][dm])
            if self.trace:
                ends = batch["page_end"] & ex[:, None]
                cols["page_end_trace"].append(out["trace"][ends])
                cols["page_end_ref"].append(np.stack([np.broadcast_to(batch["record_index"][:, None], ends.shape),
                                                      batch["window_rows"][..., 0]], -1)[ends])
            if not self.layout:
                continue
            stage = out["stage"]
            # One piece per batch, even an empty one: processes gather their columns piece by piece.
            xs, ys = [np.zeros((0, stage.shape[-1]), stage.dtype)], [np.zeros(0, np.int32)]
            pseudos = [np.zeros(0, bool)]
            for b in np.flatnonzero(ex):
                n = int(batch["step_mask"][b].sum())
                labelled = window_labels(parse(batch["ocr_json"][b]), batch["window_rows"][b, :n], stage.shape[2],
                                         self.label_source, batch["layout_mask"][b, :n] if mask_grid else None)
                if labelled is None:
                    continue
                labels, pseudo = labelled
                flat_x = stage[b, :n].reshape(-1, stage.shape[-1])
                flat_y = labels.reshape(-1)
                # Seeded by the row's place in the global batch: the same tokens whichever process reads it.
                rng = np.random.default_rng((step, rows[b]))
                take = rng.choice(len(flat_y), size=min(len(flat_y), layout_tokens_per_window * n), replace=False)
                xs.append(flat_x[take])
                ys.append(flat_y[take])
                pseudos.append(np.full(len(take), pseudo))
            cols["layout_x"].append(np.concatenate(xs))
            cols["layout_y"].append(np.concatenate(ys))
            cols["layout_pseudo"].append(np.concatenate(pseudos))
        # Every process's items, in the order of one process reading whole batches.
        gathered = sharding.gather_pieces({k: v for k, v in cols.items() if v})
        cat = {k: gathered.get(k, np.zeros((0,))) for k in cols}
        for k in ("window_txt", "page_txt", "doc_txt"):
            if len(cat[k]):
                cat[k] = normalize(cat[k].astype(np.float32))
        return Features(**cat, val_loss=float(np.mean(losses)) if losses else float("nan"))

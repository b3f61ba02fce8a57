"""Records -> training batches with grain: document streams, shard per host, decode, augment.

A record holds a whole document; an example is one chunk of it (at most `max_steps` windows
and `max_pages` pages, cut in reading order). Row r of every batch is a *stream*: it walks
one document chunk after chunk, step after step, and takes the next document when its
document ends, so the model's memory can be carried from a row's step t to its step t+1
(`reset` marks a row whose chunk begins a document, `doc_end` one whose chunk ends it). The
graph is

    range(n)[shard::shards] -> shuffle(seed) -> repeat -> load (MapDataset, random access)
      -> DocStreams(rows): next chunk per row -> pixels+augment -> stacked batch

so every random choice is a function of (seed, epoch, index, chunk) and the iterator state is
a few integers (each row's document and chunk, and where its shard's next document is; a
training run's shards are its processes when it started): `it.get_state()` / `it.set_state()`
resume exactly, grain's orbax handler (`grain.checkpoint.CheckpointSave(it)` /
`CheckpointRestore(it)`) stores it, and `it.resplit(states, ...)` resumes the streams of a run
on another process count.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import cv2
import grain
import ml_collections as mlc
import numpy as np

from docjepa.data import bank, patchify, pseudo_layout
from docjepa.data.record import decode_record

# Fields the pipeline needs from a record; the texts and the OCR JSON stay on disk (eval_batches
# reads the OCR JSON only for layout labels).
_TRAIN_FIELDS = {
    "pages_png", "windows", "window_nwords", "window_text_id", "window_emb",
    "page_nwords", "page_text_id", "page_emb", "category_id",
}


class DataError(ValueError):
    """A missing or malformed data directory, manifest or data config."""


def read_manifest(data_dir: str) -> dict[str, Any]:
    """Read DIR/manifest.json written by `python -m docjepa.prepare`."""
    path = os.path.join(data_dir, "manifest.json")
    if not os.path.isdir(data_dir):
        raise DataError(f"{data_dir}: data directory does not exist (run python -m docjepa.prepare)")
    if not os.path.isfile(path):
        raise DataError(f"{path}: missing (run python -m docjepa.prepare --out {data_dir})")
    try:
        with open(path) as f:
            manifest = json.load(f)
    except ValueError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    for key in ("splits", "encoder", "window"):
        if key not in manifest:
            raise DataError(f"{path}: missing field {key!r}")
    if manifest["encoder"] is None:
        raise DataError(f"{path}: prepared without text embeddings (prepare.embed=False); "
                        f"embed them with python -m docjepa.embed --data {data_dir}")
    return manifest


def _split_files(data_dir: str, manifest: dict[str, Any], split: str) -> list[str]:
    splits = manifest["splits"]
    if split not in splits:
        raise DataError(f"{data_dir}/manifest.json: no split {split!r} (have {sorted(splits)})")
    files = [os.path.join(data_dir, f) for f in splits[split]["files"]]
    if not files:
        raise DataError(f"{data_dir}/manifest.json: split {split!r} has no files")
    for f in files:
        if not os.path.isfile(f):
            raise DataError(f"{f}: listed in manifest.json but missing")
    return files


def _source(data_dir: str, split: str) -> grain.sources.ArrayRecordDataSource:
    return grain.sources.ArrayRecordDataSource(_split_files(data_dir, read_manifest(data_dir), split))


def _decode_png(blob: bytes) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataError("record holds a page that is not a valid PNG")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def plan_chunks(window_pages: np.ndarray, max_steps: int, max_pages: int) -> list[tuple[int, int]]:
    """Cut a document's windows (page-ordered) into [start, end) ranges, one per example.

    Whole pages are packed greedily while the chunk has room for all of the next page's
    windows and fewer than `max_pages` pages; a page longer than `max_steps` is split, and
    its remainder opens the next chunk.
    """
    chunks: list[tuple[int, int]] = []
    start, length, pages = 0, 0, 0
    bounds = np.flatnonzero(np.diff(window_pages)) + 1
    for a, b in zip(np.r_[0, bounds], np.r_[bounds, len(window_pages)]):
        a, b = int(a), int(b)
        n = b - a
        if length and (length + n > max_steps or pages == max_pages):
            chunks.append((start, a))
            start, length, pages = a, 0, 0
        if n > max_steps:
            full = n - n % max_steps
            chunks.extend((s, s + max_steps) for s in range(a, a + full, max_steps))
            start, length, pages = a + full, n - full, int(n > full)
        else:
            length, pages = length + n, pages + 1
    if length:
        chunks.append((start, len(window_pages)))
    return chunks


def augment(patches: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Photometric jitter that keeps every pixel where it is (no crop, no flip).

    One draw per example, so all patches of a chunk look like the same scan: brightness,
    contrast, a per-channel colour cast (paper tone), sometimes blur, sometimes sensor noise.
    """
    x = patches.astype(np.float32)
    contrast = rng.uniform(0.7, 1.3)
    brightness = rng.uniform(-25.0, 25.0)
    cast = rng.uniform(0.9, 1.1, size=3).astype(np.float32)
    x = (x - 128.0) * contrast + 128.0 + brightness
    x *= cast
    if rng.random() < 0.3:
        sigma = rng.uniform(0.3, 1.2)
        x = np.stack([cv2.GaussianBlur(p, (0, 0), sigma) for p in x])
    if rng.random() < 0.3:
        x += rng.normal(0.0, rng.uniform(2.0, 10.0), size=x.shape).astype(np.float32)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


class _Spec:
    """Shapes of one example, fixed for a run."""

    def __init__(self, *, max_steps: int, max_pages: int, min_words: int, window: int, dim: int,
                 mean: dict[str, np.ndarray] | None = None, layout_grid: int = 0):
        self.max_steps, self.max_pages, self.min_words = max_steps, max_pages, min_words
        self.layout_grid = layout_grid
        self.window, self.dim = window, dim
        self.mean = mean or {"window": np.zeros(dim, np.float32), "page": np.zeros(dim, np.float32)}

    def empty(self) -> dict[str, np.ndarray]:
        """An all-padding example (also the layout of every example)."""
        s, p, w, d = self.max_steps, self.max_pages, self.window, self.dim
        return {
            "patches": np.zeros((s, w, w, 3), np.uint8),
            "step_mask": np.zeros((s,), bool),
            "page_ids": np.full((s,), -1, np.int32),
            "window_box": np.zeros((s, 4), np.float32),
            "window_rows": np.full((s, 5), -1, np.int32),   # the record's rows: page, x0, y0, x1, y1 (px)
            "window_emb": np.zeros((s, d), np.float32),
            "window_mask": np.zeros((s,), bool),
            "window_text_id": np.full((s,), -1, np.int32),
            "page_end": np.zeros((s,), bool),              # the window is its page's last
            "page_emb": np.zeros((p, d), np.float32),
            "page_index": np.full((p,), -1, np.int32),     # the record page of each page slot
            "page_mask": np.zeros((p,), bool),
            "page_text_id": np.full((p,), -1, np.int32),
            "doc_emb": np.zeros((d,), np.float32),         # the whole document's target
            "doc_mask": np.bool_(False),                   # the document ends here and has a target
            "doc_known": np.bool_(False),                  # the document has a target (any chunk)
            "reset": np.bool_(True),                       # start from memory_init (a new document)
            "doc_end": np.bool_(False),                    # the document's last window is in this chunk
            "doc_pages": np.int32(0),                      # pages in the whole document
            "category_id": np.int32(-1),
            "record_index": np.int32(-1),
            "chunk_index": np.int32(-1),
            "example_mask": np.bool_(False),
            # Pseudo-layout cells of each window (data/pseudo_layout.py), with data.layout_grid.
            **({"layout_mask": np.zeros((s, self.layout_grid, self.layout_grid), np.uint8)} if self.layout_grid else {}),
        }

    def doc_target(self, doc: dict[str, Any]) -> tuple[np.ndarray, bool]:
        """The document's target: the mean of its (centred, unit-norm) page targets over the
        pages with at least `min_words` words, and whether it has any such page."""
        emb = doc["page_emb"] - self.mean["page"]
        valid = doc["page_nwords"] >= self.min_words
        if not valid.any():
            return np.zeros(self.dim, np.float32), False
        return bank.normalize(emb[valid]).mean(axis=0).astype(np.float32), True

    def chunks(self, doc: dict[str, Any], start: int = 0) -> list[dict[str, Any]]:
        """One light element per chunk: window range plus the PNGs of its pages. With `start`,
        the document is read from its window `start` on (a staggered stream's first document,
        `DocStreams`): its memory misses the beginning, so its last chunk carries no end-of-document
        target (`doc_mask`); the running term (`doc_known`) still scores it."""
        windows = doc["windows"]
        plan = [(a + start, b + start) for a, b in plan_chunks(windows[start:, 0], self.max_steps, self.max_pages)]
        target = self.doc_target(doc)
        out = []
        for k, (s, e) in enumerate(plan):
            first, last = int(windows[s, 0]), int(windows[e - 1, 0])
            out.append({
                "doc": doc, "start": s, "end": e, "first_page": first,
                "pngs": doc["pages_png"][first : last + 1], "chunk_index": k,
                "last": k == len(plan) - 1, "target": target, "whole": start == 0,
            })
        return out

    def example(self, chunk: dict[str, Any], rng: np.random.Generator | None) -> dict[str, np.ndarray]:
        """Decode the chunk's pages, cut its windows, pad to the fixed shapes."""
        doc, s, e, first = chunk["doc"], chunk["start"], chunk["end"], chunk["first_page"]
        n = e - s
        boxes = doc["windows"][s:e]
        page_ids = boxes[:, 0] - first
        patches = np.empty((n, self.window, self.window, 3), np.uint8)
        ex = self.empty()
        for i, png in enumerate(chunk["pngs"]):
            rows = np.flatnonzero(page_ids == i)
            page = _decode_png(png)
            patches[rows] = patchify.cut_windows(page, boxes[rows, 1:5])
            if self.layout_grid:  # from the page as stored: the augmentation moves no pixel
                cut = patchify.cut_windows(pseudo_layout.page_mask(page)[..., None], boxes[rows, 1:5])[..., 0]
                ex["layout_mask"][rows] = pseudo_layout.cell_targets(cut, self.layout_grid)
            h, w = page.shape[:2]
            ex["window_box"][rows] = boxes[rows, 1:5] / np.array([w, h, w, h], np.float32)
        if rng is not None:
            patches = augment(patches, rng)
        ex["patches"][:n] = patches
        ex["step_mask"][:n] = True
        ex["page_ids"][:n] = page_ids
        ex["window_rows"][:n] = boxes
        ex["window_emb"][:n] = doc["window_emb"][s:e] - self.mean["window"]
        ex["window_mask"][:n] = doc["window_nwords"][s:e] >= self.min_words
        ex["window_text_id"][:n] = doc["window_text_id"][s:e]
        ex["page_end"][:n] = doc["windows"][s:e, 0] != np.r_[doc["windows"][s + 1 : e + 1, 0], -1][: n]
        pages = slice(first, first + len(chunk["pngs"]))
        m = len(chunk["pngs"])
        ex["page_emb"][:m] = doc["page_emb"][pages] - self.mean["page"]
        ex["page_index"][:m] = first + np.arange(m)
        ex["page_mask"][:m] = doc["page_nwords"][pages] >= self.min_words
        ex["page_text_id"][:m] = doc["page_text_id"][pages]
        ex["reset"] = np.bool_(chunk["chunk_index"] == 0)
        ex["doc_end"] = np.bool_(chunk["last"])
        ex["doc_emb"][:], has_target = chunk["target"]
        ex["doc_mask"] = np.bool_(chunk["last"] and has_target and chunk["whole"])
        ex["doc_known"] = np.bool_(has_target)
        ex["doc_pages"] = np.int32(len(doc["pages_png"]))
        ex["category_id"] = np.int32(doc["category_id"])
        ex["record_index"] = np.int32(doc["record_index"])
        ex["chunk_index"] = np.int32(chunk["chunk_index"])
        ex["example_mask"] = np.bool_(True)
        return ex


class Budget(NamedTuple):
    """At most `windows` real windows per step in each group of `rows` consecutive stream rows:
    the model packs a group's real windows into `windows` slots before Hiera (padding costs no
    encoder FLOPs), and the streams hold a row's next chunk back a step where it would not fit."""

    rows: int
    windows: int


def window_budget(capacity: float, batch_rows: int, steps: int, shards: int = 1, accum: int = 1) -> Budget | None:
    """The `Budget` for `data.window_capacity` (the fraction of a step's window slots Hiera
    encodes) on a batch of `batch_rows` x `steps` slots, `shards` batch shards of the mesh and
    `optim.grad_accum` microbatches; None where it would encode every slot anyway.

    A group is the rows common to one batch shard and one microbatch (so packing never moves a
    window across devices or microbatches), and has room for at least one full chunk (so every
    row makes progress)."""
    if not 0 < capacity <= 1:
        raise DataError(f"data.window_capacity: must be in (0, 1], got {capacity!r}")
    if batch_rows % shards or batch_rows % accum:
        raise DataError(f"data.batch_size: {batch_rows} rows do not split into {shards} batch shards "
                        f"and {accum} microbatches")
    rows = math.gcd(batch_rows // shards, batch_rows // accum)
    windows = max(steps, math.ceil(capacity * rows * steps))
    return Budget(rows, windows) if windows < rows * steps else None


class _Load(grain.transforms.RandomMap):
    """Record index -> decoded document plus a per-(epoch, index) augmentation seed."""

    def __init__(self, source: grain.sources.ArrayRecordDataSource, fields: set[str] = _TRAIN_FIELDS):
        self._source, self._fields = source, fields

    def random_map(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        doc = decode_record(self._source[index], self._fields)
        doc["record_index"] = index
        doc["aug_seed"] = int(rng.integers(2**31))
        return doc


class DocStreams(grain.DatasetIterator):
    """`rows` document streams over random-access datasets of documents, one batch per step.

    Each row emits its document's next chunk; when the document is done it takes the next
    unread document (`reset` set on that example). A row with nothing left to read emits
    padding (`example_mask` False); iteration stops when every row is padding. With a
    `stagger`, each row of a fresh iterator begins its first document at a random window: rows
    that start together otherwise stay in step page after page (most pages have the same number
    of windows), and a batch of one-window chunks holds one place on the page 80% of the time
    on the demo corpus (docs/evaluation.md). With `groups` G > 1 the iterator holds G x `rows`
    streams and a batch is the next chunk of one group's streams, the groups in turn (stream
    g * rows + r is row r of the batches at steps g, g + G, ...): a stream of one-window chunks
    otherwise hands the step after its window the overlapping next one, so consecutive batches
    repeat most of each other (docs/evaluation.md). With a
    `budget`, a group's chunks are taken in a turn that rotates every step while they fit in
    its windows; a row whose chunk does not fit waits a step (padding with `reset` False, so its
    memory carries through unchanged). With `limit`, no document starts once that many chunks
    have been emitted or queued (evaluation on a budget). `threads` build a batch's examples in
    parallel (decode, cut, augment); the output does not depend on it.

    The documents are `shards` disjoint datasets, `split(shard, shards)`. Rows take their next
    document from a *source* `[shard, next, stride, rows]`: positions `next, next + stride, ...`
    of one shard, shared by `rows` consecutive rows. A fresh iterator has one source, the whole
    of shard `shard`; `resplit` hands the sources of another process count's iterators to this
    one (elastic resume), so a row's documents never depend on which process reads them.
    """

    def __init__(self, split: Callable[[int, int], grain.MapDataset], rows: int, spec: _Spec, *, augment: bool,
                 shard: int = 0, shards: int = 1, threads: int = 0, limit: int | None = None,
                 with_ocr: bool = False, budget: Budget | None = None, stagger: bool = False, groups: int = 1):
        super().__init__()
        self._pool = None  # set before anything can raise: grain's __del__ calls close()
        if budget is not None and (rows % budget.rows or budget.windows < spec.max_steps):
            raise DataError(f"window budget {budget}: must split {rows} rows into groups and hold a "
                            f"{spec.max_steps}-window chunk")
        if not isinstance(groups, int) or groups < 1:
            raise DataError(f"data.stream_groups: must be an integer >= 1, got {groups!r}")
        self._batch, rows = rows, rows * groups
        self._split, self._spec, self._augment = split, spec, augment
        self._limit, self._with_ocr, self._budget = limit, with_ocr, budget
        self._pool = concurrent.futures.ThreadPoolExecutor(threads) if threads else None
        self._emitted, self._turn = 0, 0
        # (document position, chunk, first window read) each row emits next
        self._rows: list[tuple[int, int, int]] = [(-1, -1, 0)] * rows
        self._fresh = [stagger] * rows  # rows whose first document is still to start
        self._cache: dict[tuple[int, int], list[dict[str, Any]]] = {}
        self._shards, self._docs = 0, {}
        self._set_sources(shards, [[shard, 0, 1, rows]])

    def _set_sources(self, shards: int, sources: list[list[int]]) -> None:
        if shards != self._shards:
            self._shards, self._docs = shards, {}
        self._sources = sources
        self._source_of = [src for src in sources for _ in range(src[3])]  # each row's

    def _shard(self, shard: int) -> grain.MapDataset:
        if shard not in self._docs:
            self._docs[shard] = self._split(shard, self._shards)
        return self._docs[shard]

    def _key(self, row: int) -> tuple[int, int]:
        """(shard, position) of the document `row` reads."""
        return self._source_of[row][0], self._rows[row][0]

    def _chunks(self, row: int) -> list[dict[str, Any]]:
        key = self._key(row)
        if key not in self._cache:
            self._cache[key] = self._spec.chunks(self._shard(key[0])[key[1]], self._rows[row][2])
        return self._cache[key]

    def _start(self, row: int, queued: int) -> None:
        """Give an idle row the next unread document of its source that has windows."""
        src = self._source_of[row]
        while src[1] < len(self._shard(src[0])) and (self._limit is None or self._emitted + queued < self._limit):
            doc, start = self._shard(src[0])[src[1]], 0
            if self._fresh[row]:  # a window drawn from the document's own augmentation seed
                start = int(np.random.default_rng([doc["aug_seed"], row]).integers(max(len(doc["windows"]), 1)))
            self._rows[row], src[1] = (src[1], 0, start), src[1] + src[2]
            self._cache[self._key(row)] = self._spec.chunks(doc, start)  # the document is read once
            if self._chunks(row):  # a document without windows is skipped
                self._fresh[row] = False
                return
        self._rows[row] = (-1, -1, 0)

    def _active(self) -> range:
        """The streams that make this step's batch: one group's, the groups in turn."""
        first = self._turn % (len(self._rows) // self._batch) * self._batch
        return range(first, first + self._batch)

    def _chosen(self) -> list[bool]:
        """Which active rows emit their chunk this step: all with one, or under the budget, those
        that fit their group's windows, taken in this step's turn (the first always fits)."""
        heads = [self._chunks(row)[self._rows[row][1]] if self._rows[row][0] >= 0 else None for row in self._active()]
        sizes = [0 if c is None else c["end"] - c["start"] for c in heads]
        chosen = [n > 0 for n in sizes]
        if self._budget is None:
            return chosen
        g = self._budget.rows
        for first in range(0, len(sizes), g):
            used = 0
            for i in range(g):
                row = first + (self._turn + i) % g
                if chosen[row] and used + sizes[row] > self._budget.windows:
                    chosen[row] = False
                else:
                    used += sizes[row]
        return chosen

    def _example(self, chunk: dict[str, Any] | None, waits: bool = False) -> dict[str, np.ndarray]:
        if chunk is None:
            ex = self._spec.empty()
            ex["reset"] = np.bool_(not waits)
        else:
            rng = (np.random.default_rng([chunk["doc"]["aug_seed"], chunk["chunk_index"]])
                   if self._augment else None)
            ex = self._spec.example(chunk, rng)
        if self._with_ocr:
            ex["ocr_json"] = np.array(b"" if chunk is None else chunk["doc"]["ocr_json"], object)
        return ex

    def __next__(self) -> dict[str, np.ndarray]:
        queued, active = 0, self._active()
        for row in active:
            if self._rows[row][0] < 0:
                self._start(row, queued)
            queued += self._rows[row][0] >= 0
        if all(self._rows[row][0] < 0 for row in active):
            raise StopIteration
        chosen = self._chosen()
        chunks = [self._chunks(row)[self._rows[row][1]] if go else None for row, go in zip(active, chosen)]
        waits = [self._rows[row][0] >= 0 and not go for row, go in zip(active, chosen)]
        examples = list(self._pool.map(self._example, chunks, waits) if self._pool
                        else map(self._example, chunks, waits))
        for row, ex, go in zip(active, examples, chosen):
            ex["example_index"] = np.int32(self._emitted if go else -1)
            self._emitted += go
            if go:
                pos, k, start = self._rows[row]
                self._rows[row] = (pos, k + 1, start) if k + 1 < len(self._chunks(row)) else (-1, -1, 0)
        self._turn += 1
        for key in set(self._cache) - {self._key(row) for row in range(len(self._rows))}:
            del self._cache[key]
        return _stack(examples)

    def get_state(self) -> dict[str, Any]:
        return {"shards": self._shards, "sources": [list(src) for src in self._sources], "emitted": self._emitted,
                "turn": self._turn, "rows": [list(r) for r in self._rows]}

    def set_state(self, state: dict[str, Any]) -> None:
        if len(state["rows"]) != len(self._rows):
            raise DataError(f"data.batch_size: the data iterator state has {len(state['rows'])} rows for this "
                            f"process, this run {len(self._rows)} (the global batch cannot change on resume)")
        if state.get("turn") is None:
            raise DataError("data iterator state: written by an older docjepa (no 'turn'); its rows mean the "
                            "last chunk emitted, not the next one: restart the data from a fresh run")
        self._emitted, self._turn = int(state["emitted"]), int(state["turn"])
        self._set_sources(int(state["shards"]), [[int(x) for x in src] for src in state["sources"]])
        # (document, chunk[, first window]): states from before staggering read from window 0.
        self._rows = [(int(r[0]), int(r[1]), int(r[2]) if len(r) > 2 else 0) for r in state["rows"]]
        self._fresh = [False] * len(self._rows)  # a saved iterator's rows have all begun
        self._cache.clear()

    def resplit(self, states: Sequence[dict[str, Any]], process_index: int, process_count: int) -> None:
        """Resume as process `process_index` of `process_count` from `states`, those of every
        process of the saved run in process order, however many there were (elastic resume).

        Together they hold the global batch's rows in order (process p's are global rows
        [p L, (p + 1) L), as `sharding.global_batch` lays them out and as the carried memory's
        rows are stored), each row's (document, chunk) and the sources the rows read from. This
        process takes its rows as they are, so each row goes on with its document and memory; a
        source whose rows now fall on k processes is dealt out, the j-th of them reading every
        k-th of its positions from the j-th on, so no document is read twice or skipped. A saved
        process's `emitted` count goes to the process that takes its first row. States written
        before sources existed had one per process: shard p of as many as processes, in order.
        """
        if self._batch != len(self._rows) and len(states) != process_count:
            raise DataError(f"data.stream_groups: a run with stream groups resumes on its own process count "
                            f"({len(states)}), not {process_count}")
        saved = [{"shards": len(states), "sources": [[p, s.get("next"), 1, len(s["rows"])]], **s}
                 for p, s in enumerate(states)]
        rows = [r for s in saved for r in s["rows"]]
        n = len(self._rows)
        if len(rows) != n * process_count:
            raise DataError(f"data.batch_size: {n * process_count}, but the checkpoint's data iterator state "
                            f"holds {len(rows)} streams (the global batch cannot change on resume)")
        lo, hi = process_index * n, (process_index + 1) * n
        sources, at = [], 0
        for shard, position, stride, size in (src for s in saved for src in s["sources"]):
            first, last = at // n, (at + size - 1) // n  # the processes that now hold its rows
            if first <= process_index <= last:
                sources.append([shard, position + (process_index - first) * stride, stride * (last - first + 1),
                                min(at + size, hi) - max(at, lo)])
            at += size
        starts = np.cumsum([0] + [len(s["rows"]) for s in saved])
        emitted = sum(s["emitted"] for s, start in zip(saved, starts) if lo <= start < hi)
        self.set_state({"shards": saved[0]["shards"], "turn": saved[0].get("turn"), "emitted": emitted,
                        "sources": sources, "rows": rows[lo:hi]})

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def _check_int(cfg: mlc.ConfigDict, name: str, minimum: int) -> int:
    value = cfg.get(name)
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise DataError(f"data.{name}: must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _spec(manifest: dict[str, Any], data_dir: str, max_steps: int, max_pages: int, min_words: int,
          center: bool, layout_grid: int = 0) -> _Spec:
    mean = {lv: bank.target_mean(manifest, lv, data_dir) for lv in bank.LEVELS} if center else None
    window = int(manifest["window"])
    if layout_grid and window % layout_grid:
        raise DataError(f"data.layout_grid: {layout_grid} cells do not divide the corpus's {window}-px windows")
    return _Spec(max_steps=max_steps, max_pages=max_pages, min_words=min_words, window=window,
                 dim=int(manifest["encoder"]["dim"]), mean=mean, layout_grid=layout_grid)


def example_spec(data_dir: str, max_steps: int, max_pages: int) -> _Spec:
    """The stage-1 example layout of a corpus for readers that pair a record's chunks with
    something else (stage 2, docjepa/data/stage2.py): `spec.chunks(doc)` of a record decoded with
    `RECORD_FIELDS`, then `spec.example(chunk, None)`. Targets are not centred (not read there)."""
    return _spec(read_manifest(data_dir), data_dir, max_steps, max_pages, min_words=0, center=False)


RECORD_FIELDS = frozenset(_TRAIN_FIELDS)


def check_encoder(manifest: dict[str, Any], text_cfg: mlc.ConfigDict, data_dir: str) -> None:
    """Refuse a corpus whose targets were embedded with another text encoder than `config.text`
    names: its targets would live in another space than the one the run means to learn."""
    stored = manifest.get("config", {}).get("text", {})
    for key in ("model_dir", "pooling", "normalize", "max_length"):
        if key in stored and stored[key] != text_cfg[key]:
            raise DataError(f"config.text.{key}: {text_cfg[key]!r}, but {data_dir} was embedded with "
                            f"{stored[key]!r} ({manifest['encoder'].get('name')}); match it or prepare again")


def make_train_iterator(
    data_cfg: mlc.ConfigDict,
    *,
    seed: int,
    local_batch_size: int,
    process_index: int | None = None,
    process_count: int | None = None,
    num_epochs: int | None = None,
    budget: Budget | None = None,
) -> DocStreams:
    """This process's training batches (infinite unless `num_epochs`), checkpointable; with a
    `budget` (`window_budget`), each group of rows stays within its windows.

    Documents are split across processes before shuffling, so hosts read disjoint records and
    each host's `local_batch_size` rows are its own streams (the global batch's rows are the
    hosts' rows in process order, the same rows every step). Each epoch is reshuffled. A run
    resumed on another process count keeps the shards it started with (`DocStreams.resplit`).
    """
    for name, minimum in (("max_steps", 1), ("max_pages", 1), ("min_words", 0),
                          ("worker_count", 0), ("shuffle_buffer", 0)):
        _check_int(data_cfg, name, minimum)
    if not isinstance(local_batch_size, int) or local_batch_size < 1:
        raise DataError(f"local_batch_size: must be an integer >= 1, got {local_batch_size!r}")
    if num_epochs is not None and num_epochs < 1:
        raise DataError(f"num_epochs: must be >= 1 or None, got {num_epochs!r}")
    if process_index is None or process_count is None:
        import jax  # only here: tests and tools pass the process layout explicitly

        process_index, process_count = jax.process_index(), jax.process_count()
    if not 0 <= process_index < process_count:
        raise DataError(f"process_index: {process_index} not in [0, {process_count})")
    data_dir = data_cfg.dir
    manifest = read_manifest(data_dir)
    source = grain.sources.ArrayRecordDataSource(_split_files(data_dir, manifest, data_cfg.train_split))
    if len(source) < process_count:
        raise DataError(f"{data_dir}: split {data_cfg.train_split!r} has {len(source)} documents "
                        f"for {process_count} processes")
    layout_grid = _check_int(data_cfg, "layout_grid", 0) if "layout_grid" in data_cfg else 0  # optional
    spec = _spec(manifest, data_dir, data_cfg.max_steps, data_cfg.max_pages, data_cfg.min_words,
                 data_cfg.center_targets, layout_grid)

    def split(shard: int, shards: int) -> grain.MapDataset:
        ds = grain.MapDataset.range(len(source))[shard::shards]
        if data_cfg.shuffle_buffer:
            ds = grain.experimental.WindowShuffleMapDataset(ds, window_size=data_cfg.shuffle_buffer, seed=seed)
        else:
            ds = ds.shuffle(seed=seed)
        return ds.repeat(num_epochs).random_map(_Load(source), seed=seed)

    return DocStreams(split, local_batch_size, spec, augment=bool(data_cfg.augment), shard=process_index,
                      shards=process_count, threads=data_cfg.worker_count, budget=budget,
                      stagger=bool(data_cfg.get("stagger", False)), groups=data_cfg.get("stream_groups", 1))


def _stack(examples: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([ex[k] for ex in examples]) for k in examples[0]}


def eval_batches(
    data_dir: str,
    split: str,
    *,
    batch_size: int,
    max_steps: int,
    max_pages: int,
    min_words: int,
    center: bool,
    max_examples: int | None = None,
    with_ocr: bool = False,
    layout_grid: int = 0,
    budget: Budget | None = None,
) -> DocStreams:
    """One deterministic pass over a split as `batch_size` document streams: records in order,
    each read whole, chunk after chunk, in one row; no augmentation.

    Each record is decoded once; every example carries `example_index` (a running id per
    chunk, -1 on padding) and, with `with_ocr`, the record's OCR JSON (layout labels). Rows with
    nothing left to read are padding (`example_mask` False). With `max_examples`, no document
    starts once that many chunks have been read, and the documents begun are read to the end.
    """
    cfg = mlc.ConfigDict({"max_steps": max_steps, "max_pages": max_pages, "min_words": min_words,
                          "batch_size": batch_size, "layout_grid": layout_grid})
    for name, minimum in (("max_steps", 1), ("max_pages", 1), ("min_words", 0), ("batch_size", 1), ("layout_grid", 0)):
        _check_int(cfg, name, minimum)
    source = _source(data_dir, split)
    spec = _spec(read_manifest(data_dir), data_dir, max_steps, max_pages, min_words, center, layout_grid)
    fields = _TRAIN_FIELDS | {"ocr_json"} if with_ocr else _TRAIN_FIELDS
    docs = grain.MapDataset.range(len(source)).random_map(_Load(source, fields), seed=0)
    return DocStreams(lambda shard, shards: docs, batch_size, spec, augment=False, limit=max_examples,  # never resplit
                      with_ocr=with_ocr, budget=budget)


def records(data_dir: str, split: str, fields: set[str]) -> Iterator[dict[str, Any]]:
    """The split's records in order with only `fields` decoded (readers of a few fields leave the
    pages and embeddings undecoded)."""
    source = _source(data_dir, split)
    for i in range(len(source)):
        yield decode_record(source[i], fields)


def load_record(data_dir: str, split: str, record_index: int, *, pages: bool = True) -> dict[str, Any]:
    """A whole decoded record: all stored fields plus, with `pages`, the RGB uint8 page images
    (callers that only need windows, words or texts skip the PNG decoding)."""
    source = _source(data_dir, split)
    if not 0 <= record_index < len(source):
        raise DataError(f"record_index: {record_index} not in [0, {len(source)}) for split {split!r}")
    rec = decode_record(source[record_index])
    if pages:
        rec["pages"] = [_decode_png(b) for b in rec["pages_png"]]
    return rec

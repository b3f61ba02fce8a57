"""Records -> training batches with grain: shuffle, shard per host, decode, chunk, augment, batch.

A record holds a whole document; an example is one chunk of it (at most `max_steps` windows
and `max_pages` pages, cut in reading order). The graph is

    range(n)[process::count] -> shuffle(seed) -> repeat -> load+plan (MapDataset, per index)
      -> to_iter_dataset -> flat_map(chunks) -> pixels+augment -> batch -> mp_prefetch

so every random choice is a function of (seed, epoch, index) and the iterator state is a
few integers: `it.get_state()` / `it.set_state()` resume exactly, and grain's orbax handler
(`grain.checkpoint.CheckpointSave(it)` / `CheckpointRestore(it)`) stores it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

from absl import flags
import cv2
import grain
import ml_collections as mlc
import numpy as np

from docjepa.data import bank, patchify
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
                 mean: dict[str, np.ndarray] | None = None):
        self.max_steps, self.max_pages, self.min_words = max_steps, max_pages, min_words
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
            "page_emb": np.zeros((p, d), np.float32),
            "page_index": np.full((p,), -1, np.int32),     # the record page of each page slot
            "page_mask": np.zeros((p,), bool),
            "page_text_id": np.full((p,), -1, np.int32),
            "category_id": np.int32(-1),
            "record_index": np.int32(-1),
            "chunk_index": np.int32(-1),
            "example_mask": np.bool_(False),
        }

    def chunks(self, doc: dict[str, Any]) -> list[dict[str, Any]]:
        """One light element per chunk: window range plus the PNGs of its pages."""
        windows = doc["windows"]
        out = []
        for k, (s, e) in enumerate(plan_chunks(windows[:, 0], self.max_steps, self.max_pages)):
            first, last = int(windows[s, 0]), int(windows[e - 1, 0])
            out.append({
                "doc": doc, "start": s, "end": e, "first_page": first,
                "pngs": doc["pages_png"][first : last + 1], "chunk_index": k,
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
        pages = slice(first, first + len(chunk["pngs"]))
        m = len(chunk["pngs"])
        ex["page_emb"][:m] = doc["page_emb"][pages] - self.mean["page"]
        ex["page_index"][:m] = first + np.arange(m)
        ex["page_mask"][:m] = doc["page_nwords"][pages] >= self.min_words
        ex["page_text_id"][:m] = doc["page_text_id"][pages]
        ex["category_id"] = np.int32(doc["category_id"])
        ex["record_index"] = np.int32(doc["record_index"])
        ex["chunk_index"] = np.int32(chunk["chunk_index"])
        ex["example_mask"] = np.bool_(True)
        return ex


class _Load(grain.transforms.RandomMap):
    """Record index -> decoded document plus a per-(epoch, index) augmentation seed."""

    def __init__(self, source: grain.sources.ArrayRecordDataSource):
        self._source = source

    def random_map(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        doc = decode_record(self._source[index], _TRAIN_FIELDS)
        doc["record_index"] = index
        doc["aug_seed"] = int(rng.integers(2**31))
        return doc


class _Chunk(grain.experimental.FlatMapTransform):
    """Document -> its chunks (grain needs a bound on the fan-out; IterDataset ignores it)."""

    max_fan_out = 1 << 16

    def __init__(self, spec: _Spec):
        self._spec = spec

    def flat_map(self, doc: dict[str, Any]) -> list[dict[str, Any]]:
        return self._spec.chunks(doc)


class _Example(grain.transforms.Map):
    def __init__(self, spec: _Spec, augment_: bool):
        self._spec, self._augment = spec, augment_

    def map(self, chunk: dict[str, Any]) -> dict[str, np.ndarray]:
        rng = None
        if self._augment:
            rng = np.random.default_rng([chunk["doc"]["aug_seed"], chunk["chunk_index"]])
        return self._spec.example(chunk, rng)


def _check_int(cfg: mlc.ConfigDict, name: str, minimum: int) -> int:
    value = cfg.get(name)
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise DataError(f"data.{name}: must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _spec(manifest: dict[str, Any], data_dir: str, max_steps: int, max_pages: int, min_words: int,
          center: bool) -> _Spec:
    mean = {lv: bank.target_mean(manifest, lv, data_dir) for lv in bank.LEVELS} if center else None
    return _Spec(max_steps=max_steps, max_pages=max_pages, min_words=min_words,
                 window=int(manifest["window"]), dim=int(manifest["encoder"]["dim"]), mean=mean)


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
) -> grain.DatasetIterator:
    """This process's training batches (infinite unless `num_epochs`), checkpointable.

    Documents are split across processes before shuffling, so hosts read disjoint records;
    each epoch is reshuffled. Batches are `local_batch_size` examples, incomplete ones dropped.
    """
    for name, minimum in (("max_steps", 1), ("max_pages", 1), ("min_words", 0),
                          ("worker_count", 0), ("shuffle_buffer", 0), ("chunk_shuffle", 0)):
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
    spec = _spec(manifest, data_dir, data_cfg.max_steps, data_cfg.max_pages, data_cfg.min_words,
                 data_cfg.center_targets)

    ds = grain.MapDataset.range(len(source))[process_index::process_count]
    if data_cfg.shuffle_buffer:
        ds = grain.experimental.WindowShuffleMapDataset(ds, window_size=data_cfg.shuffle_buffer, seed=seed)
    else:
        ds = ds.shuffle(seed=seed)
    ds = ds.repeat(num_epochs).random_map(_Load(source), seed=seed)
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4))
    it_ds = grain.experimental.FlatMapIterDataset(it_ds, _Chunk(spec))
    if data_cfg.chunk_shuffle > 1:  # mix the chunks of several documents into each batch
        it_ds = grain.experimental.WindowShuffleIterDataset(it_ds, window_size=data_cfg.chunk_shuffle, seed=seed)
    it_ds = it_ds.map(_Example(spec, bool(data_cfg.augment)))
    it_ds = it_ds.batch(local_batch_size, drop_remainder=True)
    if data_cfg.worker_count:
        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; outside an absl app
            flags.FLAGS.mark_as_parsed()  # (notebooks, pytest) their defaults are what we want
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=data_cfg.worker_count))
    return iter(it_ds)


def _stack(examples: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([ex[k] for ex in examples]) for k in examples[0]}


def _with_refs(ex: dict[str, np.ndarray], spec: _Spec, chunk: dict[str, Any] | None, index: int,
               with_ocr: bool) -> dict[str, np.ndarray]:
    """Add what evaluators read beside the example, so that they never reopen the record:
    `example_index` (a running id, unique per record and chunk; -1 pads) and, with `with_ocr`,
    the record's `ocr_json`."""
    ex["example_index"] = np.int32(index)
    if with_ocr:
        ex["ocr_json"] = np.array(b"" if chunk is None else chunk["doc"]["ocr_json"], object)
    return ex


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
) -> Iterator[dict[str, np.ndarray]]:
    """One deterministic pass over a split: records in order, chunks in order, no augmentation.

    Each record is decoded once; its examples carry the references evaluators need
    (`_with_refs`), with the OCR JSON only when `with_ocr` (layout labels). The last batch is
    padded to `batch_size` with examples whose `example_mask` is False; `record_index` /
    `chunk_index` link each example back to `load_record`.
    """
    cfg = mlc.ConfigDict({"max_steps": max_steps, "max_pages": max_pages, "min_words": min_words,
                          "batch_size": batch_size})
    for name, minimum in (("max_steps", 1), ("max_pages", 1), ("min_words", 0), ("batch_size", 1)):
        _check_int(cfg, name, minimum)
    source = _source(data_dir, split)
    spec = _spec(read_manifest(data_dir), data_dir, max_steps, max_pages, min_words, center)
    fields = _TRAIN_FIELDS | {"ocr_json"} if with_ocr else _TRAIN_FIELDS
    limit = float("inf") if max_examples is None else max_examples
    pending: list[dict[str, np.ndarray]] = []
    count = 0
    for index in range(len(source)):
        doc = decode_record(source[index], fields)
        doc["record_index"] = index
        for chunk in spec.chunks(doc):
            if count >= limit:
                break
            pending.append(_with_refs(spec.example(chunk, None), spec, chunk, count, with_ocr))
            count += 1
            if len(pending) == batch_size:
                yield _stack(pending)
                pending = []
        if count >= limit:
            break
    if pending:
        padding = [_with_refs(spec.empty(), spec, None, -1, with_ocr) for _ in range(batch_size - len(pending))]
        yield _stack(pending + padding)


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

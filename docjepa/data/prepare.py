"""Documents -> ArrayRecord shards of training records (see docs/data.md for the format).

Work is split so that the output is a pure function of (config, source): the source's items
are listed and sorted up front, each goes to train or val by a hash of its doc_id, and each
split is cut into fixed shards of `shard_docs` items. CPU workers read/OCR/render items in
order; the main process embeds every text of a shard with the frozen encoder and writes the
shard to a temporary file that is renamed when complete, next to a small JSON of its counts.
A second run skips complete shards and rebuilds manifest.json and rejected.jsonl from them.

With `prepare.embed = False` the shards hold the texts without their embeddings, and the
manifest has no encoder, text bank or target mean: `embed_shard` and `finish_corpus` (run by
`python -m docjepa.embed`, on accelerators) fill them in later, to the bytes an inline run writes.

Every record's OCR JSON is checked against the schema before it is written: a page that fails
(e.g. a word box outside the page) is dropped and listed, never stored.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import json
import logging
import math
import multiprocessing
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import ml_collections as mlc
import numpy as np
from tqdm import tqdm

from docjepa.data import bank, ocr, patchify, tasks
from docjepa.data.record import decode_record, encode_record
from docjepa.validate import ConfigError, check as check_config

MANIFEST_VERSION = 1
# Bumped when the same config would write different records (2: PDF word boxes follow
# PDFium's render matrix, pages are schema-checked; 3: stage-2 task pairs; 4: layout sidecars of
# source directories): older shards are then not resumed into.
SHARD_FORMAT = 4
SPLITS = ("train", "val")
log = logging.getLogger(__name__)


class PrepareError(ValueError):
    """A bad prepare config or source; the message names the field or path."""


# ----------------------------------------------------------------------------- sources


@dataclasses.dataclass(frozen=True)
class Item:
    doc_id: str
    locator: Any  # what the source's reader needs (index, path, TFDS key); picklable


class Source:
    """A list of documents known up front, readable one at a time in a worker process."""

    name = ""
    categories: tuple[str, ...] = ()

    def items(self) -> list[Item]:
        raise NotImplementedError

    def ocr_need(self) -> str:
        """How many items may need OCR: "none", "some" (PDFs, whose pages may lack a text layer)
        or "all" (images only). Decides whether a missing OCR engine is refused at start or only
        warned about."""
        return "none"

    def read(self, item: Item, cfg: dict[str, Any]) -> tuple[ocr.Document, list[np.ndarray]]:
        raise NotImplementedError


class SynthSource(Source):
    """`synth:N`: documents 0..N-1 of the synthetic generator (exact words, boxes, layout)."""

    def __init__(self, count: int, seed: int):
        from docjepa.data import synth

        self.count, self.seed = count, seed
        self.name = f"synth:{count}"
        self.categories = tuple(synth.CATEGORIES)

    def items(self) -> list[Item]:
        return [Item(f"synth-{self.seed}-{i:07d}", i) for i in range(self.count)]

    def read(self, item: Item, cfg: dict[str, Any]) -> tuple[ocr.Document, list[np.ndarray]]:
        from docjepa.data import synth

        lo, hi = cfg["synth_long_pages"]
        x_height = cfg.get("synth_min_x_height", 0.0)  # absent where tfds_docs reads (pages kept at full size)
        legible = {"min_x_height": x_height, "page_width": cfg["page_width"]} if x_height else {}
        # `synth_long_splits` (absent: every split): long documents only where they are wanted, e.g.
        # the validation split alone, which leaves the training split as it is without them.
        splits = cfg.get("synth_long_splits")
        wanted = splits is None or split_of(item.doc_id, cfg["val_fraction"]) in splits
        if wanted and np.random.default_rng([self.seed, item.locator, 1]).random() < cfg["synth_long"]:
            category = synth.LONG_CATEGORIES[item.locator % len(synth.LONG_CATEGORIES)]
            return synth.generate(item.locator, seed=self.seed, min_pages=min(lo, cfg["max_pages"]),
                                  max_pages=min(hi, cfg["max_pages"]), category=category, **legible)
        return synth.generate(item.locator, seed=self.seed, max_pages=min(4, cfg["max_pages"]), **legible)


# A document's layout boxes, next to it in a source directory: DIR/a.pdf -> DIR/a.pdf.layout.json
# (format: ocr.with_layout_sidecar, docs/data.md).
LAYOUT_SIDECAR = ".layout.json"


class DirSource(Source):
    """A directory (searched recursively) of PDFs and page images; sub-directories are categories,
    and a document's optional `LAYOUT_SIDECAR` JSON gives its layout boxes.

    Symbolic links are followed only while they stay inside the directory: a link (to a file or
    a directory) that leads out of it is listed as an item and rejected as
    `symlink_outside_source` without being opened, so a source tree cannot make prepare read
    arbitrary files (and the user sees which links were skipped).
    """

    def __init__(self, root: str):
        self.root = Path(root)
        self.name = str(self.root)
        self._real_root = os.path.realpath(self.root)
        files = []
        for dirpath, dirnames, filenames in os.walk(self.root):  # does not descend into linked dirs
            for name in filenames + dirnames:
                path = Path(dirpath, name)
                is_doc = name in filenames and path.suffix.lower() in ocr.SUFFIXES
                if is_doc or (path.is_symlink() and not self._inside(path)):
                    files.append(path.relative_to(self.root).as_posix())
        self._files = sorted(files)
        if not self._files:
            raise PrepareError(f"prepare.source: {root} holds no {'/'.join(ocr.SUFFIXES)} files")
        self.categories = tuple(sorted({f.split("/")[0] for f in self._files if "/" in f}))
        self._ocr_need = "some" if any(f.lower().endswith(".pdf") for f in self._files) else "all"

    def _inside(self, path: Path) -> bool:
        real = os.path.realpath(path)
        return os.path.commonpath([self._real_root, real]) == self._real_root

    def ocr_need(self) -> str:
        return self._ocr_need

    def items(self) -> list[Item]:
        return [Item(f, str(self.root / f)) for f in self._files]

    def read(self, item: Item, cfg: dict[str, Any]) -> tuple[ocr.Document, list[np.ndarray]]:
        path = Path(item.locator)
        if not self._inside(path):  # checked again here: the tree may have changed since listing
            raise ocr.BadDocument("symlink_outside_source",
                                  f"{path} -> {os.path.realpath(path)} is outside {self._real_root}")
        doc, pages = read_file(path, cfg)
        sidecar = path.with_name(path.name + LAYOUT_SIDECAR)
        if sidecar.is_symlink() and not self._inside(sidecar):
            raise ocr.BadDocument("symlink_outside_source",
                                  f"{sidecar} -> {os.path.realpath(sidecar)} is outside {self._real_root}")
        if sidecar.exists():
            scale = cfg["dpi"] / 72 if ocr.file_kind(path) == "pdf" else 1.0  # PDF points / image pixels
            doc = ocr.with_layout_sidecar(doc, sidecar, scale)
        category = item.doc_id.split("/")[0] if "/" in item.doc_id else None
        return dataclasses.replace(doc, doc_id=item.doc_id, category=category), pages


def read_file(path: Path, cfg: dict[str, Any]) -> tuple[ocr.Document, list[np.ndarray]]:
    """A PDF or image rendered and read under the caps of `cfg` (`work_settings`: dpi, max_pages,
    max_pixels, ocr_lang)."""
    return ocr.read_document(path, dpi=cfg["dpi"], max_pages=cfg["max_pages"], max_pixels=cfg["max_pixels"],
                             lang=cfg["ocr_lang"])


class FileSource(Source):
    """One PDF or image, read as a directory source reads each of its files (no layout sidecar, no
    category): what `python -m docjepa.generate` hands to `process_document`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.name = str(self.path)

    def ocr_need(self) -> str:
        return "some" if ocr.file_kind(self.path) == "pdf" else "all"

    def items(self) -> list[Item]:
        return [Item(self.path.name, str(self.path))]

    def read(self, item: Item, cfg: dict[str, Any]) -> tuple[ocr.Document, list[np.ndarray]]:
        return read_file(Path(item.locator), cfg)


class TfdsSource(Source):
    """`tfds:NAME[:SPLIT][@DATA_DIR]`: a TFDS dataset prepared as array_record.

    Examples with `ocr_json` + `pages_png` (the DocjepaDocs builder) keep their words; examples
    with only an image (`image`, RVL-CDIP-like, optionally with a ClassLabel `label`) go
    through Tesseract.
    """

    IMAGE_FIELDS = ("pages_png", "image", "png", "image_bytes")

    def __init__(self, spec: str):
        import tensorflow_datasets as tfds

        rest, _, data_dir = spec.partition("@")
        name, _, split = rest.partition(":")
        self.dataset, self.split, self.data_dir = name, split or "train", data_dir or None
        self.name = f"tfds:{self.dataset}:{self.split}"
        try:
            builder = tfds.builder(name, data_dir=self.data_dir)
            info = builder.info
            n = info.splits[self.split].num_examples
        except Exception as e:  # tfds raises many types; one line naming the dataset is enough
            raise PrepareError(f"prepare.source: cannot open {self.name} ({type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''})") from None
        if n == 0:
            raise PrepareError(f"prepare.source: {self.name} has no examples")
        feats = info.features
        self.image_field = next((f for f in self.IMAGE_FIELDS if f in feats), None)
        if self.image_field is None:
            raise PrepareError(f"prepare.source: {self.name} has no image field (one of {self.IMAGE_FIELDS})")
        label = feats["label"] if "label" in feats else None
        self.categories = tuple(label.names) if isinstance(label, tfds.features.ClassLabel) else ()
        self.count = n
        self._has_words = "ocr_json" in feats
        self._ds = None

    def ocr_need(self) -> str:
        return "none" if self._has_words else "all"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_ds": None}  # each worker opens its own reader

    def items(self) -> list[Item]:
        return [Item(f"{self.dataset}/{self.split}/{i:08d}", i) for i in range(self.count)]

    def read(self, item: Item, cfg: dict[str, Any]) -> tuple[ocr.Document, list[np.ndarray]]:
        import tensorflow_datasets as tfds

        if self._ds is None:
            self._ds = tfds.data_source(self.dataset, split=self.split, data_dir=self.data_dir)
        ex = self._ds[item.locator]
        blobs = ex[self.image_field]
        blobs = [blobs] if isinstance(blobs, bytes) else list(blobs)
        pages = [_decode_image(b, item.doc_id, cfg["max_pixels"]) for b in blobs[: cfg["max_pages"]]]
        category = None
        if self.categories and "label" in ex:
            category = self.categories[int(ex["label"])]
        if "ocr_json" in ex:
            doc = ocr.Document.from_json(ex["ocr_json"])
            doc = dataclasses.replace(doc, pages=doc.pages[: len(pages)])
        else:
            doc = ocr.Document(doc_id=item.doc_id, source=self.name, pages=[
                ocr.Page(width=p.shape[1], height=p.shape[0], dpi=0.0, words=ocr.tesseract_words(p, cfg["ocr_lang"]))
                for p in pages])
        return dataclasses.replace(doc, doc_id=item.doc_id, category=category or doc.category), pages


def _decode_image(blob: bytes, where: str, max_pixels: int) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ocr.BadDocument("unreadable_image", where)
    if bgr.shape[0] * bgr.shape[1] > max_pixels:
        raise ocr.BadDocument("too_many_pixels", f"{where}: {bgr.shape[1]}x{bgr.shape[0]}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _synth(arg: str, seed: int) -> Source:
    if not arg.isdigit() or int(arg) < 1:
        raise PrepareError(f"prepare.source: synth:N needs a positive integer N, got {arg!r}")
    return SynthSource(int(arg), seed)


# Source registry: "prefix:" -> constructor(rest, seed); anything else is a directory.
SOURCES: dict[str, Callable[[str, int], Source]] = {
    "synth": _synth,
    "tfds": lambda rest, seed: TfdsSource(rest),
}


def make_source(spec: str, seed: int = 0) -> Source:
    """Parse `synth:N`, `tfds:NAME[:SPLIT][@DATA_DIR]`, or a directory path."""
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in SOURCES:
        return SOURCES[prefix](rest, seed)
    if not os.path.isdir(spec):
        raise PrepareError(f"prepare.source: {spec!r} is not a directory, synth:N or tfds:NAME")
    return DirSource(spec)


# ----------------------------------------------------------------------------- config


def validate(cfg: mlc.ConfigDict) -> None:
    """One clear error per bad field (the shared rules of docjepa.validate), before any work."""
    try:
        check_config(cfg, "prepare")
    except ConfigError as e:
        raise PrepareError(str(e)) from None


# prepare fields that decide how, not what, a run writes: left out of the settings, so a run
# resumes whatever they are (whether a shard's texts are embedded yet is in its JSON: `embedded`).
_HOW_FIELDS = ("workers", "embed")


def _settings(cfg: mlc.ConfigDict, ocr_engine: bool = True) -> dict[str, Any]:
    """What determines shard contents (the config but `_HOW_FIELDS`, the shard format, whether
    OCR ran); stored with every shard."""
    prep = {k: v for k, v in cfg.prepare.to_dict().items() if k not in _HOW_FIELDS}
    settings = {"seed": cfg.seed, "prepare": prep, "text": cfg.text.to_dict(), "format": SHARD_FORMAT,
                "ocr_engine": ocr_engine}
    return json.loads(json.dumps(settings))  # as a shard's JSON gives it back (tuples become lists)


# The prepare fields a worker reads (process_document and the sources' readers).
WORK_FIELDS = ("page_width", "window", "stride", "dpi", "max_pages", "max_pixels", "synth_long", "synth_long_pages",
               "synth_long_splits", "synth_min_x_height", "val_fraction")


def work_settings(prepare_cfg: Any, ocr_lang: str | None) -> dict[str, Any]:
    """What a worker reads of `config.prepare` (a ConfigDict, or the dict a manifest stores under
    config.prepare), with the OCR language (None: no OCR engine)."""
    return {**{k: prepare_cfg[k] for k in WORK_FIELDS if k in prepare_cfg}, "ocr_lang": ocr_lang}


def usable_ocr_lang(source: Source, lang: str | None) -> str | None:
    """`lang` when the source needs no OCR or Tesseract can read `lang`; None (with a warning)
    when only some documents need it; PrepareError when every document does."""
    if source.ocr_need() != "none" and lang is not None and (problem := ocr.tesseract_problem(lang)):
        if source.ocr_need() == "all":
            raise PrepareError(f"prepare.source: every document of {source.name} needs OCR, but {problem}")
        log.warning("%s; PDF pages without a text layer and images are skipped (no_ocr_engine)", problem)
        return None
    return lang


def split_of(doc_id: str, val_fraction: float) -> str:
    """Stable train/val assignment from a hash of the doc_id."""
    return "val" if (zlib.crc32(doc_id.encode()) % 10_000) < val_fraction * 10_000 else "train"


def text_id(text: str) -> int:
    """crc32 of the whitespace-normalised text (31 bits), -1 for empty text."""
    norm = " ".join(text.split())
    return zlib.crc32(norm.encode()) & 0x7FFFFFFF if norm else -1


# ----------------------------------------------------------------------------- one document


def _page_problem(page: ocr.Page, i: int, ocr_available: bool) -> tuple[str, str] | None:
    """(reason, detail) when page i cannot be stored: no words, or words that fail the schema."""
    if not any(w.text.strip() for w in page.words):
        if not ocr_available:  # it may be a scan: without Tesseract there is no telling
            return "no_ocr_engine", f"page {i}: no text layer, and Tesseract is not available"
        return "no_text", f"page {i}"
    try:
        ocr.check_page(page, f"pages[{i}].")
    except ocr.OcrSchemaError as e:
        return "ocr_schema", str(e)[:500]
    return None


def process_document(source: Source, item: Item, cfg: dict[str, Any]) -> dict[str, Any]:
    """Read one document and cut it into windows; everything but the text embeddings.

    Returns {"doc": fields} or {"rejected": [entry]}; dropped pages ride along in "rejected"
    next to "doc" as entries with a "page" index, and a cut at max_pages as "truncated".
    Never raises for a bad document.
    """
    where = str(item.locator) if isinstance(item.locator, str) else item.doc_id
    try:
        doc, images = source.read(item, cfg)
        problems = {i: pr for i, p in enumerate(doc.pages)
                    if (pr := _page_problem(p, i, cfg["ocr_lang"] is not None)) is not None}
        keep = [i for i in range(len(doc.pages)) if i not in problems]
        if not keep:
            reasons = sorted({r for r, _ in problems.values()})
            detail = "; ".join(d for _, d in problems.values())[:500]
            return {"rejected": [{"file": where, "reason": reasons[0] if len(reasons) == 1 else "no_usable_page",
                                  "detail": f"no usable page: {detail}"}]}
        rejected = [{"file": where, "page": i, "reason": r, "detail": d} for i, (r, d) in problems.items()]
        truncated = None
        if doc.source_pages is not None and doc.source_pages > len(doc.pages):
            truncated = {"file": where, "pages": doc.source_pages, "kept": len(doc.pages)}
        doc = doc.with_pages(keep)
        resized, scales = zip(*(patchify.resize_to_width(images[i], cfg["page_width"], cfg["window"]) for i in keep))
        doc = doc.scaled(scales, [(im.shape[1], im.shape[0]) for im in resized])
        windows, window_text, window_nwords, pngs = [], [], [], []
        for i, (page, image) in enumerate(zip(doc.pages, resized)):
            boxes = patchify.window_boxes(image.shape[0], image.shape[1], cfg["window"], cfg["stride"])
            windows.append(np.concatenate([np.full((len(boxes), 1), i, np.int32), boxes], axis=1))
            window_text += patchify.window_texts(page.words, boxes)
            window_nwords += [len(ix) for ix in patchify.assign_words(page.words, boxes)]
            ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            if not ok:
                raise ValueError(f"page {i}: PNG encoding failed")
            pngs.append(png.tobytes())
        doc.check()  # what is stored reads back (scaling and padding included)
        category = doc.category or ""
        fields = {
            "doc_id": item.doc_id, "source": doc.source, "category": category,
            "category_id": source.categories.index(category) if category in source.categories else -1,
            "pages_png": pngs, "ocr_json": doc.to_json().encode(),
            "windows": np.concatenate(windows).astype(np.int32),
            "window_text": window_text, "window_nwords": np.asarray(window_nwords, np.int32),
            "page_text": [doc.page_text(i) for i in range(len(doc.pages))],
            "page_nwords": np.asarray([len(p.words) for p in doc.pages], np.int32),
            "tasks_json": tasks.encode(tasks.document_pairs(doc)),
        }
        return {"doc": fields, "rejected": rejected, "truncated": truncated}
    except ocr.OcrSchemaError as e:
        return {"rejected": [{"file": where, "reason": "ocr_schema", "detail": str(e)[:500]}]}
    except ocr.BadDocument as e:
        return {"rejected": [{"file": where, "reason": e.reason, "detail": e.detail}]}
    except Exception as e:  # one bad document must never stop a run
        return {"rejected": [{"file": where, "reason": f"error:{type(e).__name__}", "detail": str(e)[:500]}]}


_WORKER: dict[str, Any] = {}


def limit_threads() -> None:
    """One thread per worker process for Tesseract and OpenCV (the workers are the parallelism)."""
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    cv2.setNumThreads(1)


def _init_worker(source: Source, cfg: dict[str, Any]) -> None:
    limit_threads()
    _WORKER.update(source=source, cfg=cfg)


def _work(item: Item) -> dict[str, Any]:
    return process_document(_WORKER["source"], item, _WORKER["cfg"])


def _processed(source: Source, items: Sequence[Item], cfg: dict[str, Any], workers: int) -> Iterator[dict[str, Any]]:
    """process_document over `items`, in order, with a bounded number in flight."""
    if workers <= 1:
        yield from (process_document(source, it, cfg) for it in items)
        return
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(source, cfg)) as pool:
        pending: collections.deque[cf.Future] = collections.deque()
        for item in items:
            pending.append(pool.submit(_work, item))
            if len(pending) >= 4 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


# ----------------------------------------------------------------------------- shards


@dataclasses.dataclass
class Shard:
    split: str
    index: int
    count: int
    items: list[Item]

    @property
    def name(self) -> str:
        return f"{self.split}-{self.index:05d}-of-{self.count:05d}"


def plan_shards(items: Sequence[Item], val_fraction: float, shard_docs: int) -> list[Shard]:
    """Fixed shard membership from the sorted item list (stable across runs and workers)."""
    shards = []
    for split in SPLITS:
        members = sorted((it for it in items if split_of(it.doc_id, val_fraction) == split), key=lambda it: it.doc_id)
        n = math.ceil(len(members) / shard_docs)
        shards += [Shard(split, k, n, members[k * shard_docs : (k + 1) * shard_docs]) for k in range(n)]
    return shards


class _Embedder:
    """The frozen text encoder, loaded on first use (a fully resumed run never loads it)."""

    def __init__(self, text_cfg: mlc.ConfigDict, encoder: Any = None):
        self._cfg, self._enc = text_cfg, encoder

    @property
    def encoder(self):
        if self._enc is None:
            from docjepa.text import TextEncoder

            c = self._cfg
            self._enc = TextEncoder.from_pretrained(c.model_dir or None, pooling=c.pooling,
                                                    normalize=c.normalize, max_length=c.max_length)
        return self._enc

    def info(self) -> dict[str, Any]:
        e = self.encoder
        return {"name": e.name, "dim": int(e.dim), "pooling": e.pooling, "max_length": int(e.max_length)}

    def embed(self, texts: Sequence[str], progress: str | None = None) -> dict[str, np.ndarray]:
        """Unique texts, sorted so that batches do not depend on document order -> float16 rows.

        `progress`: the label of a progress bar (texts, rate, ETA), or None for none. The texts
        go to the encoder in slices of 16 batches so that the bar moves; the slices depend only
        on the texts, so the output stays a function of them.
        """
        unique = sorted(set(texts))
        step = 16 * self._cfg.batch_size
        rows = []
        with tqdm(total=len(unique), desc=progress, unit="text", leave=False, disable=progress is None) as bar:
            for lo in range(0, len(unique), step):
                emb, _ = self.encoder.embed(unique[lo:lo + step], batch_size=self._cfg.batch_size, progress=False)
                rows.append(emb.astype(np.float16))
                bar.update(len(emb))
        return dict(zip(unique, np.concatenate(rows))) if rows else {}


def _with_embeddings(rec: dict[str, Any], table: dict[str, np.ndarray]) -> dict[str, Any]:
    """A record with the text ids and float16 embeddings of its window and page texts (from
    `table`, _Embedder.embed's) after its other fields, as training reads it."""
    rec = dict(rec)
    for kind in ("window", "page"):
        texts = rec[f"{kind}_text"]
        rec[f"{kind}_text_id"] = np.asarray([text_id(t) for t in texts], np.int32)
        rec[f"{kind}_emb"] = np.stack([table[t] for t in texts]).astype(np.float16)
    return rec


def _embed_records(records: list[dict[str, Any]], embedder: _Embedder, progress: str | None) -> list[dict[str, Any]]:
    """One shard's records with their embeddings: the shard's texts are embedded together."""
    texts = [t for r in records for t in r["window_text"] + r["page_text"]]
    table = embedder.embed(texts, progress) if records else {}
    return [_with_embeddings(r, table) for r in records]


def embedded(stats: dict[str, Any]) -> bool:
    """Whether a shard's records carry their text embeddings, from its JSON: prepare.embed=False
    writes them without (no `encoder`); a shard without documents has none to carry."""
    return stats["encoder"] is not None or not stats["documents"]


def _write_files(out: Path, name: str, records: Sequence[dict[str, Any]], stats: dict[str, Any]) -> None:
    """The shard's records, then its JSON, each to a temporary file renamed over the final one:
    the JSON is the last word, so a shard is complete (and embedded if the JSON says so) once
    its JSON and records exist, and an interrupted rewrite leaves the JSON of the older version."""
    from array_record.python.array_record_module import ArrayRecordWriter

    tmp = out / f"{name}.array_record.tmp"
    writer = ArrayRecordWriter(str(tmp), "group_size:1")
    for rec in records:
        writer.write(encode_record(rec))
    writer.close()
    os.replace(tmp, out / f"{name}.array_record")
    (out / f"{name}.json.tmp").write_text(json.dumps(stats))
    os.replace(out / f"{name}.json.tmp", out / f"{name}.json")


def _write_shard(out: Path, shard: Shard, results: list[dict[str, Any]], embedder: _Embedder | None,
                 settings: dict[str, Any], progress: bool = False) -> dict[str, Any]:
    """Write one shard from process_document's results; `embedder` None: without embeddings."""
    docs = [r["doc"] for r in results if "doc" in r]
    rejected = [e for r in results for e in r["rejected"]]
    truncated = [r["truncated"] for r in results if r.get("truncated")]
    records = [dict(d, split=shard.split) for d in docs]
    if embedder is not None:
        records = _embed_records(records, embedder, f"text embed {shard.name}" if progress else None)
    stats = {"name": shard.name, "split": shard.split, "documents": len(docs),
             "pages": sum(len(d["pages_png"]) for d in docs), "windows": sum(len(d["windows"]) for d in docs),
             "rejected": rejected, "truncated": truncated, "settings": settings,
             "encoder": embedder.info() if docs and embedder is not None else None}
    _write_files(out, shard.name, records, stats)
    return stats


def embed_shard(out: Path, stats: dict[str, Any], embedder: _Embedder, progress: bool = False) -> dict[str, Any]:
    """Embed the texts of a shard written without embeddings and replace it (records, then its
    JSON) with what an inline run writes, bytes for bytes; returns the new JSON's stats."""
    from array_record.python.array_record_module import ArrayRecordReader

    name = stats["name"]
    reader = ArrayRecordReader(str(out / f"{name}.array_record"))
    records = [decode_record(blob) for blob in reader.read_all()]
    reader.close()
    if len(records) != stats["documents"]:
        raise PrepareError(f"{out / name}.array_record: {len(records)} records, its JSON counts {stats['documents']}")
    records = _embed_records(records, embedder, f"text embed {name}" if progress else None)
    stats = {**stats, "encoder": embedder.info()}
    _write_files(out, name, records, stats)
    return stats


def _complete(out: Path, shard: Shard, settings: dict[str, Any]) -> dict[str, Any] | None:
    meta = out / f"{shard.name}.json"
    if not ((out / f"{shard.name}.array_record").is_file() and meta.is_file()):
        return None
    stats = json.loads(meta.read_text())
    if stats.get("settings") != settings:
        raise PrepareError(f"{meta}: written with a different config, an older prepare or without OCR; "
                           "use a new --out directory")
    return stats


def _manifest(out: Path, source: tuple[str, Sequence[str]], stats: list[dict[str, Any]], settings: dict[str, Any],
              embedder: _Embedder) -> dict[str, Any]:
    """manifest.json and rejected.jsonl from every shard's stats (manifest order), and the text
    bank once every shard is embedded; `source`: its name and categories."""
    encoders = {json.dumps(s["encoder"], sort_keys=True) for s in stats if s["encoder"]}
    if len(encoders) > 1:
        raise PrepareError(f"{out}: shards were embedded with different text encoders: {sorted(encoders)}")
    if not all(embedded(s) for s in stats):
        encoder = None  # docjepa.embed completes the corpus
    else:
        encoder = json.loads(encoders.pop()) if encoders else embedder.info()
    splits = {}
    for split in SPLITS:
        ss = [s for s in stats if s["split"] == split]
        splits[split] = {"files": [f"{s['name']}.array_record" for s in ss if s["documents"]],
                         **{k: sum(s[k] for s in ss) for k in ("documents", "pages", "windows")}}
    rejected = [e for s in stats for e in s["rejected"]]
    truncated = [t for s in stats for t in s["truncated"]]
    p = settings["prepare"]

    def count(entries: list[dict[str, Any]]) -> dict[str, int]:
        return dict(sorted(collections.Counter(e["reason"] for e in entries).items()))

    manifest = {
        "version": MANIFEST_VERSION, "source": source[0], "config": settings, "encoder": encoder,
        "splits": splits, "categories": list(source[1]), "shards": [s["name"] for s in stats],
        "rejected": count([e for e in rejected if "page" not in e]),  # whole documents, per reason
        "dropped_pages": count([e for e in rejected if "page" in e]),  # pages of kept documents
        "truncated": {"documents": len(truncated), "pages": sum(t["pages"] - t["kept"] for t in truncated)},
        "window": p["window"], "stride": p["stride"], "page_width": p["page_width"],
    }
    if encoder is not None and splits["train"]["files"]:  # the text bank and the target mean of the training split
        manifest["target_mean"] = bank.build(str(out), splits["train"]["files"])
    with open(out / "rejected.jsonl", "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in rejected)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


@dataclasses.dataclass
class Plan:
    """What a run does, decided before any document is read; shared by the local process pool and
    the Beam pipeline (docjepa.data.prepare_beam), so both write the same shards."""

    source: Source
    out: Path
    settings: dict[str, Any]  # what each shard's JSON must hold to be resumed
    shards: list[Shard]  # every shard of the source, in manifest order
    done: dict[str, dict[str, Any]]  # stats of the shards already complete in `out`, by name
    work_cfg: dict[str, Any]  # what process_document reads (work_settings)
    embed: bool  # whether shards are written with their embeddings (prepare.embed)

    @property
    def todo(self) -> list[Shard]:
        return [s for s in self.shards if s.name not in self.done]


def plan(cfg: mlc.ConfigDict, out_dir: str) -> Plan:
    """Validate cfg, open the source, create `out_dir` and find the shards still to write."""
    validate(cfg)
    source = make_source(cfg.prepare.source, cfg.seed)
    ocr_lang = usable_ocr_lang(source, cfg.prepare.ocr_lang)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PrepareError(f"--out: {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    settings = _settings(cfg, ocr_engine=ocr_lang is not None)
    shards = plan_shards(source.items(), cfg.prepare.val_fraction, cfg.prepare.shard_docs)
    done = {s.name: st for s in shards if (st := _complete(out, s, settings)) is not None}
    waiting = [name for name, st in done.items() if not embedded(st)]
    if cfg.prepare.embed and waiting:
        raise PrepareError(f"{out}: shard {waiting[0]} was written without text embeddings (prepare.embed=False); "
                           "complete it with --config.prepare.embed=False, then embed it with "
                           f"python -m docjepa.embed --data {out}")
    return Plan(source, out, settings, shards, done, work_settings(cfg.prepare, ocr_lang), cfg.prepare.embed)


def finish(p: Plan, written: Sequence[dict[str, Any]], embedder: _Embedder) -> dict[str, Any]:
    """manifest.json, rejected.jsonl and the text bank from the resumed and the `written` shards."""
    stats = {**p.done, **{s["name"]: s for s in written}}
    return _manifest(p.out, (p.source.name, p.source.categories), [stats[s.name] for s in p.shards], p.settings,
                     embedder)


def read_corpus(data_dir: str | os.PathLike) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The manifest of a prepared directory and the JSON of each of its shards (manifest order);
    PrepareError naming what is missing when it is not one."""
    out = Path(data_dir)
    path = out / "manifest.json"
    if not path.is_file():
        raise PrepareError(f"--data: {out} is not a prepared corpus (no manifest.json; "
                           f"run python -m docjepa.prepare --out {out})")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as e:
        raise PrepareError(f"{path}: not valid JSON ({e})") from None
    if "shards" not in manifest:
        raise PrepareError(f"{path}: lists no shards (not written by this version of prepare); prepare "
                           "it again into a new directory")
    stats = []
    for name in manifest["shards"]:
        meta = out / f"{name}.json"
        if not (meta.is_file() and (out / f"{name}.array_record").is_file()):
            raise PrepareError(f"{out}: shard {name} is listed in manifest.json but incomplete; run the same "
                               f"python -m docjepa.prepare --out {out} again to complete it")
        stats.append(json.loads(meta.read_text()))
    return manifest, stats


def finish_corpus(out: Path, manifest: dict[str, Any], embedder: _Embedder) -> dict[str, Any]:
    """What `finish` writes, for a corpus on disk whose source need not be at hand (its name and
    categories come from `manifest`): after docjepa.embed has embedded its shards."""
    _, stats = read_corpus(out)
    return _manifest(out, (manifest["source"], manifest["categories"]), stats, manifest["config"], embedder)


def prepare(cfg: mlc.ConfigDict, out_dir: str, *, progress: bool = True, encoder: Any = None) -> dict[str, Any]:
    """Write (or complete) the shards for cfg.prepare.source under out_dir; returns the manifest.

    `encoder`: an already loaded docjepa.text.TextEncoder matching cfg.text, to reuse its
    compiled functions across calls; by default it is loaded from cfg.text when first needed.
    """
    p = plan(cfg, out_dir)
    todo = p.todo
    embedder = _Embedder(cfg.text, encoder)
    shard_embedder = embedder if p.embed else None
    results = _processed(p.source, [it for s in todo for it in s.items], p.work_cfg, cfg.prepare.workers)
    total = sum(len(s.items) for s in todo)
    written = []
    with tqdm(total=total, desc=f"prepare {p.source.name}", unit="doc", disable=not progress) as bar:
        for shard in todo:
            batch = []
            for _ in shard.items:
                batch.append(next(results))
                bar.update(1)
            written.append(_write_shard(p.out, shard, batch, shard_embedder, p.settings, progress))
    return finish(p, written, embedder)


_ABSENT = "(absent)"


def _first_difference(ours: Any, theirs: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """(dotted path, our value, their value) of the first field where two JSON trees differ."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for key in [*ours, *(k for k in theirs if k not in ours)]:
            found = _first_difference(ours.get(key, _ABSENT), theirs.get(key, _ABSENT), f"{path}{key}.")
            if found is not None:
                return found
        return None
    return None if ours == theirs else (path.rstrip("."), ours, theirs)


def embed_corpus(cfg: mlc.ConfigDict, data_dir: str | os.PathLike, *, process_index: int = 0,
                 process_count: int = 1, barrier: Callable[[str], None] | None = None, progress: bool = True,
                 encoder: Any = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Embed the shards of a corpus written with prepare.embed=False and write its manifest, text
    bank and target mean: afterwards the directory holds what an inline prepare of `cfg` writes.

    `cfg` must give the settings the corpus was prepared with (its text encoder above all).
    Shards already embedded (by an interrupted earlier run) are kept. With several processes
    (`barrier(name)` waits for all of them), process i embeds every `process_count`-th shard still
    to embed from the i-th, and process 0 writes the manifest once all are done, which every
    process then reads. Returns the manifest and the stats of the shards this process embedded.
    """
    validate(cfg)
    out = Path(data_dir)
    manifest, stats = read_corpus(out)
    corpus = manifest["config"]
    ours = _settings(cfg, ocr_engine=corpus["ocr_engine"])
    diff = _first_difference(ours, corpus)
    if diff is not None:
        field, here, there = diff
        raise PrepareError(f"{out} was prepared with {field}={there!r}, the config here gives {here!r}; embed it "
                           "with the config it was prepared with (the default without --config)")
    embedder = _Embedder(cfg.text, encoder)
    todo = [s for s in stats if not embedded(s)]
    if todo:
        info = embedder.info()
        other = next((s for s in stats if s["encoder"] and s["encoder"] != info), None)
        if other is not None:
            raise PrepareError(f"{out}/{other['name']}.json: already embedded with {other['encoder']}, not with "
                               f"{info} (config.text); a corpus has one encoder: prepare it again into a new directory")
    if barrier is not None:
        barrier("docjepa.embed: corpus read")  # every process lists the same shards to embed
    mine = todo[process_index::process_count]
    written = []
    with tqdm(total=len(mine), desc=f"embed {out.name}", unit="shard", disable=not progress) as bar:
        for s in mine:
            written.append(embed_shard(out, s, embedder, progress))
            bar.update(1)
    if barrier is not None:
        barrier("docjepa.embed: shards embedded")
    if process_index == 0 and (todo or manifest["encoder"] is None):
        finish_corpus(out, manifest, embedder)
    if barrier is not None:
        barrier("docjepa.embed: manifest written")
    return json.loads((out / "manifest.json").read_text()), written

"""grain pipeline: chunking, alignment, masks, determinism, resume, sharding, workers."""

import json
import os

import cv2
import grain
import ml_collections as mlc
import numpy as np
import orbax.checkpoint as ocp
import pytest
from array_record.python.array_record_module import ArrayRecordWriter

from docjepa.data import pipeline
from docjepa.data.record import encode_record

W = 224  # window size; windows in these corpora tile the page without overlap
D = 4


def _doc(doc: int, pages: int, rows: int) -> bytes:
    """A document whose every window is filled with colour (doc, page, window index).

    Pages are 2 windows wide and `rows` high, so each page has 2 * rows windows; nwords
    cycles 0..4 so that min_words masking is visible.
    """
    pngs, windows = [], []
    for p in range(pages):
        img = np.zeros((rows * W, 2 * W, 3), np.uint8)
        for r in range(rows):
            for c in range(2):
                img[r * W : (r + 1) * W, c * W : (c + 1) * W] = (doc, p, len(windows))
                windows.append((p, c * W, r * W, (c + 1) * W, (r + 1) * W))
        pngs.append(cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))[1].tobytes())
    n = len(windows)
    idx = np.arange(n)
    return encode_record({
        "doc_id": f"d{doc}", "source": "test", "split": "train", "category": "", "category_id": doc % 3,
        "pages_png": pngs, "ocr_json": b"{}",
        "windows": np.asarray(windows, np.int32),
        "window_text": [f"w{i}" for i in idx],
        "window_nwords": (idx % 5).astype(np.int32),
        "window_text_id": np.where(idx % 5 == 0, -1, 1000 * doc + idx).astype(np.int32),
        "window_emb": np.stack([np.full(D, i + 0.5) for i in idx]).astype(np.float16),
        "page_text": [f"p{p}" for p in range(pages)],
        "page_nwords": np.asarray([3 if p != 1 else 1 for p in range(pages)], np.int32),
        "page_text_id": np.arange(pages, dtype=np.int32) + 100 * doc,
        "page_emb": np.stack([np.full(D, p + 0.25) for p in range(pages)]).astype(np.float16),
    })


def _write_corpus(path, docs: list[bytes], shards: int = 2) -> str:
    os.makedirs(path, exist_ok=True)
    files = []
    for k in range(shards):
        name = f"train-{k:05d}-of-{shards:05d}.array_record"
        w = ArrayRecordWriter(os.path.join(path, name), "group_size:1")
        for blob in docs[k::shards]:
            w.write(blob)
        w.close()
        files.append(name)
    manifest = {"version": 1, "window": W, "stride": W, "page_width": 2 * W,
                "encoder": {"name": "test", "dim": D, "pooling": "mean", "max_length": 8},
                "splits": {"train": {"files": files, "documents": len(docs)}}, "categories": []}
    with open(os.path.join(path, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    return str(path)


# Record order is shard 0 (docs 0, 2, 4) then shard 1 (docs 1, 3, 5); doc i has 1 + i % 3 pages
# of 2 windows, so at max_steps 4 each record yields this many chunks.
CHUNKS = [1, 2, 1, 1, 1, 2]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    # 6 documents of 1-3 pages of 2 windows each (rows=1): cheap to decode.
    docs = [_doc(i, pages=1 + i % 3, rows=1) for i in range(6)]
    return _write_corpus(tmp_path_factory.mktemp("corpus"), docs)


def _cfg(data_dir, **kw):
    cfg = mlc.ConfigDict({"dir": data_dir, "train_split": "train", "max_steps": 4, "max_pages": 2,
                          "min_words": 2, "worker_count": 0, "augment": True, "shuffle_buffer": 0,
                          "center_targets": False})
    cfg.update(kw)
    return cfg


def _take(it, n):
    return [next(it) for _ in range(n)]


def _same(a, b):
    return all(a[k].shape == b[k].shape and np.array_equal(a[k], b[k]) for k in a)


def test_plan_chunks():
    pages = lambda *counts: np.repeat(np.arange(len(counts)), counts)  # noqa: E731
    assert pipeline.plan_chunks(pages(8, 8, 8), 16, 4) == [(0, 16), (16, 24)]
    assert pipeline.plan_chunks(pages(8, 8, 8), 16, 1) == [(0, 8), (8, 16), (16, 24)]
    # A page longer than max_steps is split; its remainder opens the next chunk.
    assert pipeline.plan_chunks(pages(3, 20, 2), 8, 4) == [(0, 3), (3, 11), (11, 19), (19, 25)]
    assert pipeline.plan_chunks(pages(16), 8, 4) == [(0, 8), (8, 16)]


def test_chunk_alignment_masks_and_padding(tmp_path):
    # A 3-page document with 8 windows per page at max_steps 16 -> chunks [p0 p1] and [p2].
    # One stream per row: the document's chunks come in one row, one per batch; row 1 is padding.
    data_dir = _write_corpus(tmp_path, [_doc(7, pages=3, rows=4)], shards=1)
    first, second = pipeline.eval_batches(data_dir, "train", batch_size=2, max_steps=16, max_pages=4, min_words=2,
                                          center=False)
    batch = {k: np.stack([first[k][0], second[k][0], first[k][1]]) for k in first}
    np.testing.assert_array_equal(batch["reset"], [True, False, True])  # padding also starts clean
    np.testing.assert_array_equal(batch["doc_end"], [False, True, False])
    np.testing.assert_array_equal(batch["doc_mask"], [False, True, False])
    # The document target: the mean of the unit page targets with >= min_words words (pages 0, 2).
    np.testing.assert_allclose(batch["doc_emb"][1], np.full(D, 0.5), rtol=1e-6)
    assert not batch["doc_emb"][2].any()
    assert batch["patches"].shape == (3, 16, W, W, 3) and batch["patches"].dtype == np.uint8
    assert batch["window_emb"].shape == (3, 16, D) and batch["page_emb"].shape == (3, 4, D)
    np.testing.assert_array_equal(batch["example_mask"], [True, True, False])
    np.testing.assert_array_equal(batch["chunk_index"], [0, 1, -1])
    np.testing.assert_array_equal(batch["record_index"], [0, 0, -1])
    np.testing.assert_array_equal(batch["category_id"], [7 % 3, 7 % 3, -1])
    np.testing.assert_array_equal(batch["page_ids"][0], [0] * 8 + [1] * 8)
    np.testing.assert_array_equal(batch["page_ids"][1], [0] * 8 + [-1] * 8)
    np.testing.assert_array_equal(batch["step_mask"][1], [True] * 8 + [False] * 8)
    for b, first_window, first_page in ((0, 0, 0), (1, 16, 2)):
        n = int(batch["step_mask"][b].sum())
        w = first_window + np.arange(n)
        # Each patch is the window it claims to be: colour = (doc, page, window index).
        colours = batch["patches"][b, :n].reshape(n, -1, 3)
        assert (colours == colours[:, :1]).all()
        np.testing.assert_array_equal(colours[:, 0], np.stack([np.full(n, 7), first_page + batch["page_ids"][b, :n], w], 1))
        np.testing.assert_allclose(batch["window_emb"][b, :n, 0], w + 0.5)
        np.testing.assert_array_equal(batch["window_mask"][b, :n], w % 5 >= 2)
        np.testing.assert_array_equal(batch["window_text_id"][b, :n], np.where(w % 5 == 0, -1, 7000 + w))
        # Boxes as fractions of the 2-window-wide, 4-row page: column c, row r -> (c/2, r/4, ...).
        col, row = (w % 8) % 2, (w % 8) // 2
        np.testing.assert_allclose(batch["window_box"][b, :n], np.stack([col / 2, row / 4, (col + 1) / 2, (row + 1) / 4], 1))
    np.testing.assert_allclose(batch["page_emb"][0, :2, 0], [0.25, 1.25])
    np.testing.assert_array_equal(batch["page_mask"], [[True, False, False, False], [True] + [False] * 3, [False] * 4])
    np.testing.assert_array_equal(batch["page_text_id"][:, :2], [[700, 701], [702, -1], [-1, -1]])
    assert not batch["patches"][2].any() and not batch["window_mask"][2].any()
    assert (batch["page_ids"][2] == -1).all() and not batch["window_box"][1, 8:].any()


def test_eval_batches_carry_what_evaluators_read(tmp_path):
    # The chunks [p0 p1] and [p2] of a 3-page document (as above) and one 1-page document.
    data_dir = _write_corpus(tmp_path, [_doc(7, pages=3, rows=4), _doc(8, pages=1, rows=1)], shards=1)
    first, second = pipeline.eval_batches(data_dir, "train", batch_size=2, max_steps=16, max_pages=4, min_words=2,
                                          center=False, with_ocr=True)
    # Rows in stream order: [doc 7 chunk 0, doc 8] then [doc 7 chunk 1, padding].
    batch = {k: np.stack([first[k][0], second[k][0], first[k][1], second[k][1]]) for k in first}
    np.testing.assert_array_equal(batch["example_index"], [0, 2, 1, -1])  # unique per (record, chunk)
    np.testing.assert_array_equal(batch["page_index"], [[0, 1, -1, -1], [2, -1, -1, -1], [0, -1, -1, -1], [-1] * 4])
    for b, first_window in ((0, 0), (1, 16)):  # the record's window rows, in step order
        n = int(batch["step_mask"][b].sum())
        w = first_window + np.arange(n)
        np.testing.assert_array_equal(batch["window_rows"][b, :n, 0], w // 8)
        np.testing.assert_array_equal(batch["window_rows"][b, :n, 1], (w % 2) * W)
        assert (batch["window_rows"][b, n:] == -1).all()
    assert batch["ocr_json"].tolist() == [b"{}", b"{}", b"{}", b""]
    plain = next(pipeline.eval_batches(data_dir, "train", batch_size=4, max_steps=16, max_pages=4, min_words=2,
                                       center=False))
    assert "ocr_json" not in plain  # read only when layout labels are asked for

def test_eval_single_pass_and_max_examples(corpus):
    batches = list(pipeline.eval_batches(corpus, "train", batch_size=4, max_steps=4, max_pages=2, min_words=2, center=False))
    _check_streams(batches)
    mask = np.concatenate([b["example_mask"] for b in batches])
    seen = np.stack([np.concatenate([b[k] for b in batches])[mask] for k in ("record_index", "chunk_index")], 1)
    assert sorted(map(tuple, seen.tolist())) == [(r, c) for r, n in enumerate(CHUNKS) for c in range(n)]
    # Records start in order, one per free row: the first batch holds records 0-3.
    np.testing.assert_array_equal(batches[0]["record_index"], [0, 1, 2, 3])
    # At most 5 chunks begun: records 0-3 (4 chunks), then record 4 starts (5th); record 1's
    # second chunk finishes it; nothing starts after that.
    limited = list(pipeline.eval_batches(corpus, "train", batch_size=4, max_steps=4, max_pages=2,
                                         min_words=2, center=False, max_examples=5))
    _check_streams(limited)
    assert len(limited) == 2 and sum(int(b["example_mask"].sum()) for b in limited) == 6
    assert {int(r) for b in limited for r in b["record_index"][b["example_mask"]]} == {0, 1, 2, 3, 4}


def _check_streams(batches):
    """Every row walks whole documents in order: chunk k + 1 of a record follows chunk k in the
    same row; a record starts at chunk 0 with `reset` and ends with `doc_end`. An example
    without windows either waits for room under a window budget (no `reset`: the memory
    carries through unchanged) or is padding after a document (`reset`)."""
    for row in range(len(batches[0]["reset"])):
        prev = None  # (record, chunk, ended) of the row's previous example
        for b in batches:
            ex, rec, k = bool(b["example_mask"][row]), int(b["record_index"][row]), int(b["chunk_index"][row])
            if not ex:
                assert not b["doc_end"][row] and not b["step_mask"][row].any()
                if b["reset"][row]:
                    assert prev is None or prev[2]  # a row only runs dry between documents
                    prev = None
                continue  # a wait leaves the row where it was
            assert bool(b["reset"][row]) == (k == 0)
            if prev is not None and not prev[2]:
                assert (rec, k) == (prev[0], prev[1] + 1)
            else:
                assert k == 0
            prev = (rec, k, bool(b["doc_end"][row]))
        assert prev is None or prev[2]


def test_window_budget_holds_rows_back_and_loses_nothing(corpus):
    """Under a budget of 4 windows per pair of rows (chunks of 2 or 4 windows), no pair ever
    holds more; a row that does not fit waits, and every chunk is still read once, in order."""
    budget = pipeline.Budget(rows=2, windows=4)
    batches = list(pipeline.eval_batches(corpus, "train", batch_size=4, max_steps=4, max_pages=2, min_words=2,
                                         center=False, budget=budget))
    _check_streams(batches)
    used = np.stack([b["step_mask"].sum(axis=1).reshape(2, 2).sum(axis=1) for b in batches])
    assert used.max() <= 4
    waits = sum(int((~b["example_mask"] & ~b["reset"]).sum()) for b in batches)
    assert waits > 0  # the budget binds on this corpus
    mask = np.concatenate([b["example_mask"] for b in batches])
    seen = np.stack([np.concatenate([b[k] for b in batches])[mask] for k in ("record_index", "chunk_index")], 1)
    assert sorted(map(tuple, seen.tolist())) == [(r, c) for r, n in enumerate(CHUNKS) for c in range(n)]
    # Training streams under a budget resume exactly from their state (the turn included).
    cfg = _cfg(corpus)
    it = pipeline.make_train_iterator(cfg, seed=2, local_batch_size=4, process_index=0, process_count=1, budget=budget)
    _take(it, 3)
    state = it.get_state()
    expected = _take(it, 3)
    fresh = pipeline.make_train_iterator(cfg, seed=2, local_batch_size=4, process_index=0, process_count=1,
                                         budget=budget)
    fresh.set_state(state)
    assert all(_same(x, y) for x, y in zip(expected, _take(fresh, 3)))
    with pytest.raises(pipeline.DataError, match="window budget"):
        pipeline.make_train_iterator(cfg, seed=2, local_batch_size=3, process_index=0, process_count=1, budget=budget)


def test_train_streams_walk_whole_documents(corpus):
    it = pipeline.make_train_iterator(_cfg(corpus), seed=5, local_batch_size=3, process_index=0, process_count=1)
    batches = _take(it, 12)  # several epochs of 8 chunks
    _check_streams(batches)
    assert all(b["example_mask"].all() for b in batches)  # an infinite stream never runs dry
    # A document's chunks all carry its whole-document target; it is valid where the document ends.
    for b in batches:
        np.testing.assert_array_equal(b["doc_mask"], b["doc_end"])


def test_train_determinism_and_seeds(corpus):
    a = _take(pipeline.make_train_iterator(_cfg(corpus), seed=3, local_batch_size=2, process_index=0, process_count=1), 5)
    b = _take(pipeline.make_train_iterator(_cfg(corpus), seed=3, local_batch_size=2, process_index=0, process_count=1), 5)
    c = _take(pipeline.make_train_iterator(_cfg(corpus), seed=4, local_batch_size=2, process_index=0, process_count=1), 5)
    assert all(_same(x, y) for x, y in zip(a, b))
    assert not all(_same(x, y) for x, y in zip(a, c))
    assert a[0]["patches"].shape == (2, 4, W, W, 3) and a[0]["example_mask"].all()


def test_augmentation_keeps_layout(corpus):
    plain = next(pipeline.make_train_iterator(_cfg(corpus, augment=False), seed=0, local_batch_size=4,
                                              process_index=0, process_count=1))
    aug = next(pipeline.make_train_iterator(_cfg(corpus), seed=0, local_batch_size=4,
                                            process_index=0, process_count=1))
    for k in plain:
        if k != "patches":
            np.testing.assert_array_equal(plain[k], aug[k])
    assert not np.array_equal(plain["patches"], aug["patches"])


def test_augment_is_photometric_and_seeded():
    # A dark "text line" on white paper must stay a dark line at the same pixels.
    page = np.full((2, W, W, 3), 240, np.uint8)
    page[:, 100:120, 30:200] = 20
    for seed in range(10):
        out = pipeline.augment(page, np.random.default_rng(seed))
        assert out.shape == page.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out, pipeline.augment(page, np.random.default_rng(seed)))
        line, paper = out[:, 102:118, 40:190].mean(), out[:, :90].mean()
        assert paper - line > 100
    assert not np.array_equal(pipeline.augment(page, np.random.default_rng(0)),
                              pipeline.augment(page, np.random.default_rng(1)))


def test_resume_from_state_and_orbax(corpus, tmp_path):
    cfg = _cfg(corpus)
    it = pipeline.make_train_iterator(cfg, seed=1, local_batch_size=3, process_index=0, process_count=1)
    _take(it, 3)  # crosses an epoch boundary (8 examples per epoch)
    state = it.get_state()
    mngr = ocp.CheckpointManager(tmp_path / "ckpt")
    mngr.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
    expected = _take(it, 4)

    fresh = pipeline.make_train_iterator(cfg, seed=1, local_batch_size=3, process_index=0, process_count=1)
    fresh.set_state(state)
    assert all(_same(x, y) for x, y in zip(expected, _take(fresh, 4)))

    restored = pipeline.make_train_iterator(cfg, seed=1, local_batch_size=3, process_index=0, process_count=1)
    mngr.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored)))
    assert all(_same(x, y) for x, y in zip(expected, _take(restored, 4)))


def test_process_shards_are_disjoint_and_cover(corpus):
    seen = []
    for p in range(2):
        it = pipeline.make_train_iterator(_cfg(corpus, augment=False), seed=0, local_batch_size=1,
                                          process_index=p, process_count=2, num_epochs=1)
        seen.append({(int(b["record_index"][0]), int(b["chunk_index"][0])) for b in it})
    assert not {r for r, _ in seen[0]} & {r for r, _ in seen[1]}
    assert seen[0] | seen[1] == {(r, c) for r, n in enumerate(CHUNKS) for c in range(n)}


def test_worker_count_one_matches_in_process(corpus):
    it0 = pipeline.make_train_iterator(_cfg(corpus), seed=2, local_batch_size=2, process_index=0, process_count=1)
    it1 = pipeline.make_train_iterator(_cfg(corpus, worker_count=1), seed=2, local_batch_size=2,
                                       process_index=0, process_count=1)
    try:
        assert all(_same(x, y) for x, y in zip(_take(it0, 3), _take(it1, 3)))
    finally:
        it1.close()


def test_load_record(corpus):
    rec = pipeline.load_record(corpus, "train", 2)
    assert rec["doc_id"] == "d4" and len(rec["pages"]) == 2  # shard 0 holds docs 0, 2, 4
    assert rec["pages"][1].shape == (W, 2 * W, 3) and rec["pages"][1][0, 0].tolist() == [4, 1, 2]


def test_bad_config_and_dirs(corpus, tmp_path):
    with pytest.raises(pipeline.DataError, match="data.max_steps"):
        pipeline.make_train_iterator(_cfg(corpus, max_steps=0), seed=0, local_batch_size=1,
                                     process_index=0, process_count=1)
    with pytest.raises(pipeline.DataError, match="manifest.json: missing"):
        pipeline.read_manifest(str(tmp_path))
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(pipeline.DataError, match="not valid JSON"):
        pipeline.read_manifest(str(tmp_path))
    with pytest.raises(pipeline.DataError, match="no split 'val'"):
        list(pipeline.eval_batches(corpus, "val", batch_size=1, max_steps=4, max_pages=1, min_words=0, center=False))


def test_stagger_starts_rows_inside_their_first_document(corpus):
    """With `stagger`, a fresh iterator's rows read the same documents but begin the first one at
    a window of its own (that document has no target: the memory missed its start); every later
    document is read from its first window; a resumed iterator goes on identically."""
    make = lambda **kw: pipeline.make_train_iterator(_cfg(corpus, augment=False, **kw), seed=5,  # noqa: E731
                                                     local_batch_size=4, process_index=0, process_count=1)
    plain, staggered = _take(make(), 1)[0], make(stagger=True)
    batches = _take(staggered, 10)
    np.testing.assert_array_equal(batches[0]["record_index"], plain["record_index"])
    first = batches[0]["window_rows"][:, 0]
    assert (first != plain["window_rows"][:, 0]).any(axis=1).sum() >= 2  # rows begin at other windows
    seen = set()
    for b in batches:
        for row in range(4):
            if not b["reset"][row]:
                continue
            if row in seen:  # a later document: from its first window (page 0, top left)
                np.testing.assert_array_equal(b["window_rows"][row, 0, :3], [0, 0, 0])
            seen.add(row)
    # A staggered first document that begins past its first window never gets an end-of-document
    # target (the memory missed its start); the running term still scores its chunks.
    late = [r for r in range(4) if (first[r] != plain["window_rows"][r, 0]).any()]
    for r in late:
        for i, b in enumerate(batches):
            if i and b["reset"][r]:
                break
            assert not b["doc_mask"][r] and b["doc_known"][r] and b["doc_emb"][r].any()
    # Every chunk of a document with a target knows it; the end-of-document mask is a subset.
    for b in batches:
        assert not (b["doc_mask"] & ~b["doc_known"]).any()
    it = make(stagger=True)
    _take(it, 1)
    state = it.get_state()
    expected = _take(it, 4)
    fresh = make(stagger=True)
    fresh.set_state(state)
    assert all(_same(x, y) for x, y in zip(expected, _take(fresh, 4)))


def test_stream_groups_take_turns(corpus):
    """With `stream_groups` G, a batch is one group's streams, the groups in turn: stream
    g * rows + r is row r of batches g, g + G, ... and reads what row g * rows + r of an iterator
    with every stream in one batch reads, step for step; resume goes on identically."""
    make = lambda rows, **kw: pipeline.make_train_iterator(  # noqa: E731
        _cfg(corpus, augment=False, max_steps=1, max_pages=1, **kw), seed=5, local_batch_size=rows,
        process_index=0, process_count=1)
    plain, grouped = _take(make(4), 2), _take(make(2, stream_groups=2), 4)  # documents of >= 2 windows
    assert not any(b["reset"].any() for b in plain[1:])  # every stream still in its first document
    for k, b in enumerate(plain):
        for g in range(2):
            for key in ("record_index", "window_rows", "patches", "reset"):
                np.testing.assert_array_equal(grouped[2 * k + g][key], b[key][2 * g:2 * g + 2], err_msg=key)
    it = make(2, stream_groups=2)
    _take(it, 3)
    state = it.get_state()
    expected = _take(it, 5)
    fresh = make(2, stream_groups=2)
    fresh.set_state(state)
    assert all(_same(x, y) for x, y in zip(expected, _take(fresh, 5)))

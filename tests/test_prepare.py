"""prepare: end to end on synthetic documents, a bad-file zoo and TFDS; resume and determinism;
categories and layout sidecars of a source directory; page geometry checked against pixels, the
schema gate, a missing OCR engine, the command line."""

import json
import logging
import os
import re
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds
from array_record.python.array_record_module import ArrayRecordReader

import pdf_factory
import train_utils
from configs import demo
from docjepa.data import ocr, pipeline, prepare, synth
from docjepa.data.record import decode_record

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def _cfg(source, **prep):
    cfg = demo.get_config()
    cfg.prepare.source = source
    cfg.prepare.update(dict(workers=0, shard_docs=2, val_fraction=0.0, max_pages=2), **prep)
    # The texts of a slice are computed together on one device, and the tests' 8 simulated devices
    # share this machine's memory: 8 slices of 256 texts took 9.5 GB per process (each Beam worker
    # too), 8 of 16 take 1.4 GB.
    cfg.text.batch_size = 16
    return cfg


@pytest.fixture(scope="module")
def encoder():
    from docjepa.text import TextEncoder

    c = demo.get_config().text
    return TextEncoder.from_pretrained(None, pooling=c.pooling, normalize=c.normalize, max_length=c.max_length)


def _records(path):
    r = ArrayRecordReader(str(path))
    out = [decode_record(b) for b in r.read_all()]
    r.close()
    return out


def _shard_bytes(out):
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.array_record"))}


def test_validation_names_the_field(tmp_path):
    with pytest.raises(prepare.PrepareError, match=r"^config.prepare.stride: must be in \(0, window\]"):
        prepare.prepare(_cfg("synth:2", stride=300), str(tmp_path))
    with pytest.raises(prepare.PrepareError, match="^config.prepare.val_fraction"):
        prepare.prepare(_cfg("synth:2", val_fraction=1.0), str(tmp_path))
    with pytest.raises(prepare.PrepareError, match="^prepare.source: synth:N needs a positive integer"):
        prepare.prepare(_cfg("synth:many"), str(tmp_path))
    with pytest.raises(prepare.PrepareError, match="is not a directory, synth:N or tfds:NAME"):
        prepare.prepare(_cfg(str(tmp_path / "absent")), str(tmp_path))
    with pytest.raises(prepare.PrepareError, match="holds no"):
        prepare.prepare(_cfg(str(tmp_path)), str(tmp_path / "out"))


def test_split_and_text_ids():
    ids = [f"doc-{i}" for i in range(2000)]
    val = sum(prepare.split_of(d, 0.1) == "val" for d in ids)
    assert 150 < val < 250 and all(prepare.split_of(d, 0.0) == "train" for d in ids)
    assert prepare.text_id(" a  b\nc ") == prepare.text_id("a b c") >= 0
    assert prepare.text_id(" \n") == -1 and prepare.text_id("a b") != prepare.text_id("a c")


def test_synth_long_documents_only_in_the_chosen_splits():
    """`prepare.synth_long_splits=("val",)`: every validation document is long, the training
    documents are those of a corpus without long documents (the same pages, word for word)."""
    source = prepare.make_source("synth:12", 0)
    base = {"page_width": 448, "max_pages": 256, "synth_long": 0.0, "synth_long_pages": (5, 5),
            "synth_min_x_height": 8.0, "val_fraction": 0.5}
    long_val = base | {"synth_long": 1.0, "synth_long_splits": ("val",)}
    splits = set()
    for item in source.items():
        split = prepare.split_of(item.doc_id, 0.5)
        splits.add(split)
        doc, _ = source.read(item, long_val)
        if split == "val":
            assert len(doc.pages) == 5
        else:
            assert doc.to_json() == source.read(item, base)[0].to_json()
    assert splits == {"train", "val"}


@pytest.fixture(scope="module")
def synth_out(tmp_path_factory, encoder):
    out = tmp_path_factory.mktemp("synth")
    manifest = prepare.prepare(_cfg("synth:4"), str(out), progress=False, encoder=encoder)
    return out, manifest


def test_synth_end_to_end(synth_out):
    out, manifest = synth_out
    train = manifest["splits"]["train"]
    assert train["documents"] == 4 and manifest["splits"]["val"]["documents"] == 0
    assert train["files"] == [f"train-{k:05d}-of-00002.array_record" for k in range(2)]
    assert manifest["categories"] == list(synth.CATEGORIES) and manifest["rejected"] == {}
    assert manifest["encoder"]["dim"] == 384 and manifest["window"] == 224
    recs = [r for f in train["files"] for r in _records(out / f)]
    assert [r["doc_id"] for r in recs] == [f"synth-0-{i:07d}" for i in range(4)]
    assert sum(len(r["pages_png"]) for r in recs) == train["pages"]
    assert sum(len(r["windows"]) for r in recs) == train["windows"]
    for r in recs:
        doc = ocr.Document.from_json(r["ocr_json"])
        assert r["category_id"] == synth.CATEGORIES.index(r["category"]) == synth.CATEGORIES.index(doc.category)
        w = r["windows"]
        assert w.dtype == np.int32 and (np.diff(w[:, 0]) >= 0).all()
        assert r["window_emb"].shape == (len(w), 384) and r["window_emb"].dtype == np.float16
        assert r["page_emb"].shape == (len(r["pages_png"]), 384)
        for i, png in enumerate(r["pages_png"]):
            img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
            assert img.shape[:2] == (doc.pages[i].height, doc.pages[i].width) and img.shape[1] == 448
            assert r["page_text"][i] == doc.page_text(i) and r["page_nwords"][i] == len(doc.pages[i].words)
            assert w[w[:, 0] == i, 3].max() == 448 and w[w[:, 0] == i, 4].max() == img.shape[0]
        nonempty = np.asarray([bool(t.strip()) for t in r["window_text"]])
        np.testing.assert_array_equal(r["window_text_id"] >= 0, nonempty)
        np.testing.assert_array_equal(r["window_nwords"] > 0, nonempty)
        norms = np.linalg.norm(r["window_emb"].astype(np.float32), axis=1)
        np.testing.assert_allclose(norms[nonempty], 1.0, atol=2e-3)
        assert (norms[~nonempty] == 0).all()
        # Identical texts share one embedding (they were embedded once per shard).
        first = {}
        for t, e in zip(r["window_text"], r["window_emb"]):
            np.testing.assert_array_equal(first.setdefault(t, e), e)
    data_cfg = demo.get_config().data
    batch = next(pipeline.make_train_iterator(pipeline.mlc.ConfigDict(dict(data_cfg, dir=str(out))), seed=0,
                                              local_batch_size=2, process_index=0, process_count=1))
    s = data_cfg.max_steps
    assert batch["patches"].shape == (2, s, 224, 224, 3) and batch["window_emb"].shape == (2, s, 384)
    assert batch["window_box"].shape == (2, s, 4) and 0 <= batch["window_box"].min() <= batch["window_box"].max() <= 1


def test_resume_and_worker_determinism(synth_out, tmp_path, encoder):
    out, manifest = synth_out
    before = _shard_bytes(out)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.array_record")}
    # All shards are complete: nothing is rewritten and the manifest is rebuilt identically.
    assert prepare.prepare(_cfg("synth:4"), str(out), progress=False, encoder=encoder) == manifest
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.array_record")} == mtimes
    # An interrupted run: the last shard never got renamed into place.
    (out / "train-00001-of-00002.array_record").rename(out / "train-00001-of-00002.array_record.tmp")
    assert prepare.prepare(_cfg("synth:4"), str(out), progress=False, encoder=encoder) == manifest
    assert _shard_bytes(out) == before
    # Two worker processes write byte-identical shards.
    again = prepare.prepare(_cfg("synth:4", workers=2), str(tmp_path), progress=False, encoder=encoder)
    assert again["splits"] == manifest["splits"]
    assert _shard_bytes(tmp_path) == before
    with pytest.raises(prepare.PrepareError, match="different config"):
        prepare.prepare(_cfg("synth:4", stride=200), str(out), progress=False, encoder=encoder)


def _png_header(width, height):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages
    from PIL import Image, ImageDraw, ImageFont

    d = tmp_path_factory.mktemp("zoo")
    with PdfPages(d / "good.pdf") as pdf:  # page 2 is blank: dropped as no_text, page 1 kept
        for text in ("Invoice number 17 total due", None):
            fig = plt.figure(figsize=(4, 4))
            if text:
                fig.text(0.1, 0.8, text, fontsize=14)
            pdf.savefig(fig)
            plt.close(fig)
    img = Image.new("RGB", (600, 300), "white")
    ImageDraw.Draw(img).text((30, 60), "Meeting notes for Monday", font=ImageFont.truetype(FONT, 32), fill="black")
    img.save(d / "scan.png")
    (d / "empty.pdf").write_bytes(b"")
    (d / "random.pdf").write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 2048, dtype=np.uint8)))
    (d / "truncated.pdf").write_bytes((d / "good.pdf").read_bytes()[:300])
    (d / "huge.png").write_bytes(_png_header(100_000, 100_000))
    (d / "notes.txt").write_text("not a document")
    # Links that leave the tree, to a readable PDF and to a folder of them: never opened.
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.pdf").write_bytes((d / "good.pdf").read_bytes())
    os.symlink(outside / "secret.pdf", d / "passwd.pdf")
    os.symlink(outside, d / "elsewhere")
    return d


def test_bad_file_zoo(zoo, tmp_path, encoder):
    manifest = prepare.prepare(_cfg(str(zoo)), str(tmp_path), progress=False, encoder=encoder)
    rejected = [json.loads(line) for line in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    reasons = {(e["file"].rsplit("/", 1)[-1], e["reason"], e.get("page")) for e in rejected}
    assert reasons == {("empty.pdf", "zero_bytes", None), ("random.pdf", "not_a_pdf", None),
                       ("truncated.pdf", "truncated_pdf", None), ("huge.png", "too_many_pixels", None),
                       ("passwd.pdf", "symlink_outside_source", None), ("elsewhere", "symlink_outside_source", None),
                       ("good.pdf", "no_text", 1)}
    links = [e for e in rejected if e["reason"] == "symlink_outside_source"]
    assert all(" -> " in e["detail"] and "outside" in e["detail"] for e in links)
    # Rejected documents and dropped pages (of kept documents) are counted apart.
    assert manifest["rejected"] == {"not_a_pdf": 1, "symlink_outside_source": 2, "too_many_pixels": 1,
                                    "truncated_pdf": 1, "zero_bytes": 1}
    assert manifest["dropped_pages"] == {"no_text": 1}
    assert manifest["splits"]["train"]["documents"] == 2 and manifest["splits"]["train"]["pages"] == 2
    recs = [r for f in manifest["splits"]["train"]["files"] for r in _records(tmp_path / f)]
    assert {r["doc_id"]: r["page_text"] for r in recs} == {
        "good.pdf": ["Invoice number 17 total due"], "scan.png": ["Meeting notes for Monday"]}


class ToyScans(tfds.core.GeneratorBasedBuilder):
    """RVL-CDIP-like: one page image (PNG bytes) and a class label per example."""

    VERSION = tfds.core.Version("1.0.0")
    code_path = None

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(), dtype=np.object_),
            "label": tfds.features.ClassLabel(names=["memo", "letter"])}))

    def _split_generators(self, dl_manager):
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        for i, text in enumerate(["Quarterly memo about budgets", ""]):  # the second scan is blank
            img = np.full((300, 600, 3), 255, np.uint8)
            cv2.putText(img, text, (20, 150), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (0, 0, 0), 2)
            yield i, {"image": cv2.imencode(".png", img)[1].tobytes(), "label": 1 - i}


def test_tfds_builder_and_sources(tmp_path, encoder):
    from docjepa.data import tfds_docs

    tfds_docs.DocjepaDocs(data_dir=str(tmp_path / "tfds"), source="synth:3").download_and_prepare(
        file_format="array_record")
    ds = tfds.data_source("docjepa_docs", split="train", data_dir=str(tmp_path / "tfds"))
    assert len(ds) == 3
    doc = ocr.Document.from_json(ds[0]["ocr_json"])
    assert len(ds[0]["pages_png"]) == len(doc.pages) and doc.category in synth.CATEGORIES

    m = prepare.prepare(_cfg(f"tfds:docjepa_docs@{tmp_path / 'tfds'}"), str(tmp_path / "a"), progress=False, encoder=encoder)
    direct = prepare.prepare(_cfg("synth:3"), str(tmp_path / "b"), progress=False, encoder=encoder)
    assert m["splits"]["train"]["pages"] == direct["splits"]["train"]["pages"]
    assert m["splits"]["train"]["windows"] == direct["splits"]["train"]["windows"]

    ToyScans(data_dir=str(tmp_path / "tfds")).download_and_prepare(file_format="array_record")
    m = prepare.prepare(_cfg(f"tfds:toy_scans:test@{tmp_path / 'tfds'}"), str(tmp_path / "c"), progress=False, encoder=encoder)
    assert m["categories"] == ["memo", "letter"] and m["rejected"] == {"no_text": 1} and m["dropped_pages"] == {}
    (rec,) = _records(tmp_path / "c" / m["splits"]["train"]["files"][0])
    assert rec["category"] == "letter" and rec["category_id"] == 1
    assert "budgets" in rec["page_text"][0].lower()


# ----------------------------------------------------------------------------- labels of a source directory

# One 300 x 200 pt page with "Invoice" drawn at baseline y=100 (PDF user space, y up), and the
# title box around it in the sidecar's units: PDF points, origin top-left.
_LABELLED_PAGE = (b"/MediaBox [0 0 300 200]", pdf_factory.text(20, 100, "Invoice"))
_TITLE_BOX = [10.0, 70.0, 160.0, 110.0]


def _sidecar(*pages):
    return json.dumps({"pages": [{"layout": [{"cls": c, "box": b} for c, b in page]} for page in pages]})


def test_source_folders_are_categories_and_sidecars_give_layout(tmp_path, encoder):
    src = tmp_path / "src"
    for sub in ("invoice", "letter"):
        (src / sub).mkdir(parents=True)
    pdf = pdf_factory.build_pdf([_LABELLED_PAGE])
    for name in ("invoice/a.pdf", "letter/b.pdf", "letter/bad.pdf", "loose.pdf"):
        (src / name).write_bytes(pdf)
    (src / "invoice/a.pdf.layout.json").write_text(_sidecar([("title", _TITLE_BOX)]))
    (src / "letter/bad.pdf.layout.json").write_text(_sidecar([("poster", _TITLE_BOX)]))
    manifest = prepare.prepare(_cfg(str(src)), str(tmp_path / "out"), progress=False, encoder=encoder)

    assert manifest["categories"] == ["invoice", "letter"]
    assert manifest["rejected"] == {"bad_layout_sidecar": 1} and manifest["splits"]["train"]["documents"] == 3
    (entry,) = [json.loads(line) for line in (tmp_path / "out/rejected.jsonl").read_text().splitlines()]
    assert entry["file"] == str(src / "letter/bad.pdf")
    assert entry["detail"].startswith(f"{src / 'letter/bad.pdf.layout.json'}: pages[0].layout[0].cls: 'poster'")
    recs = {r["doc_id"]: r for f in manifest["splits"]["train"]["files"] for r in _records(tmp_path / "out" / f)}
    assert {d: (r["category"], r["category_id"]) for d, r in recs.items()} == {
        "invoice/a.pdf": ("invoice", 0), "letter/b.pdf": ("letter", 1), "loose.pdf": ("", -1)}
    (page,) = ocr.Document.from_json(recs["invoice/a.pdf"]["ocr_json"]).pages
    (title,) = page.layout
    assert title.cls == "title" and page.width == 448
    np.testing.assert_allclose(title.box, np.asarray(_TITLE_BOX) * 448 / 300, atol=1.0)
    (word,) = page.words  # the box is where the word is drawn: points map to the stored pixels
    assert title.box[0] <= word.box[0] and title.box[1] <= word.box[1]
    assert word.box[2] <= title.box[2] and word.box[3] <= title.box[3]
    assert all(not ocr.Document.from_json(recs[d]["ocr_json"]).pages[0].layout for d in ("letter/b.pdf", "loose.pdf"))


@pytest.mark.parametrize("text, error", [
    ("{", "<root>: not valid JSON"),
    ('{"boxes": []}', "boxes: unknown field"),
    (_sidecar(), "pages: has 0 entries, the document 1 pages"),
    (_sidecar([("title", [10, 20, 5, 30])]), "pages[0].layout[0].box: x1 < x0"),
    (_sidecar([("title", [0, 0, 301.5, 200])]), "pages[0].layout[0].box: [0, 0, 301.5, 200] lies outside the 300.0x200.0"),
    ('{"pages": [{"layout": [{"cls": "title"}]}]}', "pages[0].layout[0].box: expected [x0, y0, x1, y1]"),
])
def test_malformed_layout_sidecar_names_file_and_field(tmp_path, text, error):
    path = tmp_path / "a.pdf.layout.json"
    path.write_text(text)
    doc = ocr.Document("a.pdf", "a.pdf", [ocr.Page(600, 400, 144.0, [])], source_pages=1)
    with pytest.raises(ocr.BadDocument) as e:
        ocr.with_layout_sidecar(doc, path, scale=2.0)
    assert e.value.reason == "bad_layout_sidecar" and e.value.detail.startswith(f"{path}: {error}")


# ----------------------------------------------------------------------------- page geometry


def test_geometry_pdfs_round_trip_with_boxes_on_the_ink(tmp_path, encoder):
    """The regression PDFs (inherited boxes, CropBox < MediaBox, /Rotate 90 and 270, /UserUnit)
    through prepare: in every stored page, the word box is within 1 px of the word's dark pixels."""
    src = tmp_path / "src"
    src.mkdir()
    for name in pdf_factory.GEOMETRY:
        (src / f"{name}.pdf").write_bytes(pdf_factory.geometry_pdf(name))
    manifest = prepare.prepare(_cfg(str(src)), str(tmp_path / "out"), progress=False, encoder=encoder)
    assert manifest["rejected"] == {} and manifest["dropped_pages"] == {}
    recs = [r for f in manifest["splits"]["train"]["files"] for r in _records(tmp_path / "out" / f)]
    assert sorted(r["doc_id"] for r in recs) == sorted(f"{n}.pdf" for n in pdf_factory.GEOMETRY)
    for r in recs:
        (page,) = ocr.Document.from_json(r["ocr_json"]).pages
        image = cv2.imdecode(np.frombuffer(r["pages_png"][0], np.uint8), cv2.IMREAD_COLOR)
        assert image.shape[:2] == (page.height, page.width) and page.width == 448
        (word,) = page.words
        np.testing.assert_allclose(word.box, pdf_factory.ink_box(image), atol=1.0, err_msg=r["doc_id"])


class _BoxesOffThePage(prepare.Source):
    """Documents whose words a (hypothetical) broken reader put outside the page."""

    name = "offpage"

    def items(self):
        return [prepare.Item("mixed", 0), prepare.Item("all-bad", 1)]

    def read(self, item, cfg):
        image = np.full((300, 400, 3), 255, np.uint8)
        cv2.putText(image, "Total", (40, 100), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (0, 0, 0), 2)
        good = ocr.Page(400, 300, 72.0, [ocr.Word("Total", (40.0, 75.0, 130.0, 102.0))])
        bad = ocr.Page(400, 300, 72.0, [ocr.Word("Total", (40.0, 75.0, 130.0, 102.0)),
                                        ocr.Word("due", (140.0, 350.0, 190.0, 380.0), order=1)])  # y > 300
        pages = [good, bad] if item.locator == 0 else [bad]
        return ocr.Document(item.doc_id, self.name, pages), [image] * len(pages)


def test_pages_failing_the_schema_are_dropped_not_stored(tmp_path, encoder, monkeypatch):
    monkeypatch.setitem(prepare.SOURCES, "offpage", lambda rest, seed: _BoxesOffThePage())
    manifest = prepare.prepare(_cfg("offpage:"), str(tmp_path), progress=False, encoder=encoder)
    assert manifest["dropped_pages"] == {"ocr_schema": 1} and manifest["rejected"] == {"ocr_schema": 1}
    rejected = [json.loads(line) for line in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    by_file = {e["file"]: e for e in rejected}
    assert by_file["mixed"]["page"] == 1 and "pages[1].words[1].box" in by_file["mixed"]["detail"]
    assert "outside the 400x300 page" in by_file["mixed"]["detail"]
    assert "page" not in by_file["all-bad"]
    (rec,) = [r for f in manifest["splits"]["train"]["files"] for r in _records(tmp_path / f)]
    doc = ocr.Document.from_json(rec["ocr_json"])  # what is stored passes the schema
    assert rec["doc_id"] == "mixed" and len(doc.pages) == len(rec["pages_png"]) == 1
    assert rec["page_text"] == ["Total"]


# ----------------------------------------------------------------------------- OCR engine


def test_missing_ocr_engine(tmp_path, encoder, monkeypatch, caplog, zoo):
    assert ocr.tesseract_problem("eng") is None  # the engine of this machine
    assert "install tesseract-ocr-qqq" in ocr.tesseract_problem("eng+qqq")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no tesseract to be found
    assert "apt-get install tesseract-ocr" in ocr.tesseract_problem("eng")
    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "scan.png").write_bytes((zoo / "scan.png").read_bytes())
    with pytest.raises(prepare.PrepareError, match=r"^prepare.source: every document of .* needs OCR, but the "
                                                   r"Tesseract OCR engine .* apt-get install tesseract-ocr"):
        prepare.prepare(_cfg(str(scans)), str(tmp_path / "a"), progress=False, encoder=encoder)
    assert not (tmp_path / "a").exists()  # refused before any work
    # PDFs may have a text layer: one warning, then scans are listed as no_ocr_engine.
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "scan.png").write_bytes((zoo / "scan.png").read_bytes())
    (mixed / "text.pdf").write_bytes(pdf_factory.build_pdf([(b"/MediaBox [0 0 300 200]",
                                                             pdf_factory.text(20, 100, "Invoice"))] * 2))
    (mixed / "scanned.pdf").write_bytes(pdf_factory.build_pdf([(b"/MediaBox [0 0 300 200]", b"")]))
    with caplog.at_level(logging.WARNING, logger="docjepa.data.prepare"):
        m = prepare.prepare(_cfg(str(mixed)), str(tmp_path / "b"), progress=False, encoder=encoder)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "apt-get install tesseract-ocr" in warnings[0]
    assert m["rejected"] == {"no_ocr_engine": 2} and m["splits"]["train"]["documents"] == 1


# ----------------------------------------------------------------------------- command line


def _prepare_cli(src, out, *extra):
    cmd = [sys.executable, "-m", "docjepa.prepare", "--config", "configs/demo.py", f"--source={src}", f"--out={out}",
           "--config.prepare.workers=0", "--config.prepare.val_fraction=0.0", *extra]
    return subprocess.run(cmd, cwd=train_utils.ROOT, env=train_utils.env(), capture_output=True, text=True, timeout=300)


def test_cli_summary_progress_and_exit_code(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    words = [pdf_factory.text(20, 100, "Invoice total"), b"", pdf_factory.text(20, 100, "third page")]
    (src / "long.pdf").write_bytes(pdf_factory.build_pdf([(b"/MediaBox [0 0 300 200]", c) for c in words]))
    (src / "empty.pdf").write_bytes(b"")
    r = _prepare_cli(src, tmp_path / "out", "--config.prepare.max_pages=2")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout)
    assert summary["documents"] == {"kept": 1, "rejected": 1} and summary["pages"] == {"kept": 1, "dropped": 1}
    assert summary["rejected"] == {"zero_bytes": 1} and summary["dropped_pages"] == {"no_text": 1}
    assert summary["truncated"] == {"documents": 1, "pages": 1}  # long.pdf: 3 pages, max_pages=2
    # The embedding stage has its own bar with a rate and an ETA; no per-document lines.
    done = r"text embed train-00000-of-00001: 100%\|.*\| (\d+)/\1 \[\d\d:\d\d<00:00, +[\d.]+(text/s|s/text)\]"
    assert re.search(done, r.stderr), r.stderr[-2000:]
    lines = [ln for ln in r.stderr.replace("\r", "\n").splitlines() if ln.strip()]
    assert not [ln for ln in lines if "long.pdf" in ln or "empty.pdf" in ln], lines

    (src / "long.pdf").unlink()  # nothing left to keep: the run fails
    r = _prepare_cli(src, tmp_path / "out2")
    assert r.returncode == 1 and json.loads(r.stdout)["documents"] == {"kept": 0, "rejected": 1}
    assert r.stderr.strip().splitlines()[-1].startswith("error: no document kept (1 rejected, reasons in ")


# ----------------------------------------------------------------------------- Apache Beam
# apache_beam is a dev requirement: without it these tests fail (ImportError), they do not skip.


def _record_bytes(out):
    """{(shard file, doc_id): the record's bytes} of every shard under `out`."""
    recs = {}
    for path in sorted(out.glob("*.array_record")):
        r = ArrayRecordReader(str(path))
        recs.update({(path.name, decode_record(b, {"doc_id"})["doc_id"]): b for b in r.read_all()})
        r.close()
    return recs


@pytest.mark.long
def test_beam_direct_runner_writes_the_local_shards(synth_out, tmp_path, encoder):
    """Two DirectRunner worker processes (each loads its own encoder) write the records, shards,
    rejected.jsonl, text bank and manifest of the local process pool; a re-run resumes."""
    from docjepa.data import prepare_beam

    out, manifest = synth_out
    args = ["--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    beam_manifest, counters = prepare_beam.prepare_beam(_cfg("synth:4"), str(tmp_path), args)
    assert beam_manifest == manifest
    local = _record_bytes(out)
    assert len(local) == 4 and _record_bytes(tmp_path) == local  # same shard, same bytes, per document
    for name in ("rejected.jsonl", "text_bank.safetensors", *(p.name for p in out.glob("*-of-*.*"))):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name
    assert counters == {"documents_kept": 4, "documents_rejected": 0, "pages_dropped": 0, "documents_truncated": 0,
                        "shards_written": 2}
    # Either path resumes the other's shards: the pool completes a Beam run, Beam a complete one
    # (nothing rewritten, the manifest rebuilt from the shards' JSONs).
    (tmp_path / "train-00001-of-00002.array_record").unlink()
    assert prepare.prepare(_cfg("synth:4"), str(tmp_path), progress=False, encoder=encoder) == manifest
    assert _record_bytes(tmp_path) == local
    (tmp_path / "manifest.json").unlink()
    again, counters = prepare_beam.prepare_beam(_cfg("synth:4"), str(tmp_path), ["--runner=DirectRunner"],
                                                encoder=encoder)
    assert again == manifest and counters["shards_written"] == 0 and counters["documents_kept"] == 0


def test_beam_bad_file_zoo_rejects_as_local(zoo, tmp_path, encoder):
    from docjepa.data import prepare_beam

    local = prepare.prepare(_cfg(str(zoo)), str(tmp_path / "local"), progress=False, encoder=encoder)
    beam, counters = prepare_beam.prepare_beam(_cfg(str(zoo)), str(tmp_path / "beam"), ["--runner=DirectRunner"],
                                               encoder=encoder)
    rejected = (tmp_path / "local/rejected.jsonl").read_text().splitlines()
    assert len(rejected) == 7  # six documents and one page of good.pdf (test_bad_file_zoo)
    assert (tmp_path / "beam/rejected.jsonl").read_text().splitlines() == rejected
    assert beam == local and _record_bytes(tmp_path / "beam") == _record_bytes(tmp_path / "local")
    assert counters == {"documents_kept": 2, "documents_rejected": sum(local["rejected"].values()),
                        "pages_dropped": sum(local["dropped_pages"].values()), "documents_truncated": 0,
                        "shards_written": 4}


def test_beam_cli_runner_and_pipeline_options(tmp_path):
    # Without --runner, Apache Beam is not imported (make demo needs requirements.txt only).
    probe = "import sys, docjepa.prepare; assert 'apache_beam' not in sys.modules, 'apache_beam imported'"
    r = subprocess.run([sys.executable, "-c", probe], cwd=train_utils.ROOT, env=train_utils.env(), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    r = _prepare_cli("synth:1", tmp_path / "a", "--runner=DirectRunner", "--", "--direct_num_workers=1")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout)
    assert summary["documents"] == {"kept": 1, "rejected": 0}
    assert summary["beam_counters"]["documents_kept"] == 1 and summary["beam_counters"]["shards_written"] == 1
    r = _prepare_cli("synth:1", tmp_path / "b", "--runner=DirectRunner", "--", "--direct_num_worker=2")
    assert r.returncode == 2 and not (tmp_path / "b").exists()
    assert r.stderr.strip().splitlines()[-1].startswith("error: beam pipeline option '--direct_num_worker=2': not an")
    r = _prepare_cli("synth:1", tmp_path / "c", "--", "--direct_num_workers=2")  # no --runner: no Beam options
    assert r.returncode == 2 and "Beam pipeline options go after --runner R --" in r.stderr

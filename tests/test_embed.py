"""python -m docjepa.embed after python -m docjepa.prepare --config.prepare.embed=False: the bytes
of an inline prepare on as many devices (records, shard JSONs, manifest, rejected.jsonl, text bank),
on 1 or 8 simulated devices and with 2 processes; a run killed with SIGKILL and rerun; one line for bad input. The real embedded MiniLM encodes every
text: nothing is mocked."""

import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordReader
from safetensors.numpy import load_file

import train_utils
from docjepa.data import pipeline
from docjepa.data.record import decode_record

# One xdist unit that shares the two prepared corpora, started early among the long tests.
pytestmark = [pytest.mark.xdist_group("embed"), pytest.mark.long]

# 6 documents of at most 2 pages in shards of one (4 train, 2 val): a few hundred texts. Slices
# of 8 texts (embed reads the corpus's text config): a shard's ~50 texts fill 7 of the 8 devices'
# slices of a call, where slices of 64 left 7 devices computing padding.
PREPARE = [sys.executable, "-m", "docjepa.prepare", "--config", "configs/demo.py:quick", "--source", "synth:6",
           "--config.prepare.shard_docs=1", "--config.prepare.max_pages=2", "--config.prepare.workers=0",
           "--config.prepare.val_fraction=0.4", "--config.text.batch_size=8"]


def _run(cmd, devices=1, timeout=600):
    return train_utils.run(cmd, devices=devices, timeout=timeout)


def _embed_cmd(data, *extra):
    return [sys.executable, "-m", "docjepa.embed", f"--data={data}", *extra]


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """(inline, texts): the same corpus prepared with its embeddings, and without them."""
    root = tmp_path_factory.mktemp("embed")
    for name, extra in (("inline", []), ("texts", ["--config.prepare.embed=False"])):
        r = _run([*PREPARE, f"--out={root / name}", *extra])
        assert r.returncode == 0, r.stderr[-3000:]
    return root / "inline", root / "texts"


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _files(out):
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def _records(path):
    r = ArrayRecordReader(str(path))
    out = r.read_all()
    r.close()
    return out


def assert_same_corpus(got, want):
    """Every record (per document), shard JSON, manifest.json, rejected.jsonl and the text bank, bytes for bytes."""
    manifest = json.loads((want / "manifest.json").read_text())
    assert json.loads((got / "manifest.json").read_text()) == manifest
    for name in manifest["shards"]:
        a, b = _records(got / f"{name}.array_record"), _records(want / f"{name}.array_record")
        assert [decode_record(x, {"doc_id"})["doc_id"] for x in a] == [decode_record(x, {"doc_id"})["doc_id"] for x in b]
        for x, y in zip(a, b):
            assert x == y, f"{name}: record {decode_record(x, {'doc_id'})['doc_id']} differs"
    assert _files(got) == _files(want)


def test_texts_only_corpus_then_embed_is_the_inline_corpus(corpora, tmp_path):
    inline, texts = corpora
    manifest = json.loads((texts / "manifest.json").read_text())
    want = json.loads((inline / "manifest.json").read_text())
    # The first stage: the same shards and counts, texts without embeddings, no bank, no mean.
    assert manifest["encoder"] is None and "target_mean" not in manifest
    assert not (texts / "text_bank.safetensors").exists()
    assert manifest["splits"] == want["splits"] and manifest["shards"] == want["shards"]
    assert len(manifest["shards"]) == 6 and want["splits"]["val"]["documents"] > 0
    assert {k: v for k, v in manifest.items() if k != "encoder"} == {k: v for k, v in want.items()
                                                                      if k not in ("encoder", "target_mean")}
    rec = decode_record(_records(texts / f"{want['splits']['train']['files'][0]}")[0])
    assert "window_emb" not in rec and "page_emb" not in rec and rec["window_text"]
    with pytest.raises(pipeline.DataError, match="prepared without text embeddings"):
        pipeline.read_manifest(str(texts))

    out = _copy(texts, tmp_path / "two_stage")
    r = _run(_embed_cmd(out))
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout)
    assert summary["shards"] == 6 and summary["devices"] == 1
    assert summary["texts"] == sum(want["splits"][s][k] for s in ("train", "val") for k in ("windows", "pages"))
    assert_same_corpus(out, inline)

    r = _run(_embed_cmd(out))  # nothing left to embed: nothing changes
    assert r.returncode == 0 and json.loads(r.stdout)["shards"] == 0, r.stderr[-3000:]
    assert_same_corpus(out, inline)


def test_eight_devices_write_the_bytes_of_one(corpora, tmp_path):
    """8 simulated devices write the bytes of the 1-device inline prepare.

    XLA:CPU's float32 rows depend on the rows a device computes together (64 rows on one device
    and 8 on each of 8 differ in their last bits); the encoder gives each device whole slices of
    `text.batch_size` texts, so every device count computes the same rows the same way.
    """
    inline, texts = corpora
    out = _copy(texts, tmp_path / "eight")
    r = _run(_embed_cmd(out), devices=8)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["devices"] == 8
    assert_same_corpus(out, inline)


def test_two_processes_share_the_shards(corpora, tmp_path):
    """launch/local.sh: 2 processes of 1 device each embed 3 shards apiece; process 0 writes the manifest."""
    inline, texts = corpora
    out = _copy(texts, tmp_path / "two")
    stderr, other = train_utils.run_processes(2, 1, _embed_cmd(out), tmp_path / "logs")
    lines = [json.loads(ln) for ln in other.splitlines() if ln.startswith("{")]
    assert lines and lines[-1]["process"] == 1 and lines[-1]["shards"] == 3, other[-3000:]
    assert_same_corpus(out, inline)


def _embedded_shards(out):
    names = json.loads((out / "manifest.json").read_text())["shards"]
    return [n for n in names if json.loads((out / f"{n}.json").read_text())["encoder"] is not None]


def test_killed_run_resumes_to_the_same_bytes(corpora, tmp_path):
    inline, texts = corpora
    out = _copy(texts, tmp_path / "killed")
    log = tmp_path / "killed.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(_embed_cmd(out), cwd=train_utils.ROOT, env=train_utils.env(), stdout=f, stderr=f)
    deadline = time.time() + 600
    while not _embedded_shards(out):  # SIGKILL as soon as the first shard has been replaced
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _embedded_shards(out)
    assert 1 <= len(done) < 6, done  # killed mid-run
    assert json.loads((out / "manifest.json").read_text())["encoder"] is None

    r = _run(_embed_cmd(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["shards"] == 6 - len(done)  # the finished shards are kept
    assert_same_corpus(out, inline)


def _error_line(r, code=1):
    assert r.returncode == code, (r.returncode, r.stderr[-3000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-3000:]
    return lines[0]


def test_bad_input_is_one_line(corpora, tmp_path):
    inline, texts = corpora
    (tmp_path / "empty").mkdir()
    assert "is not a prepared corpus (no manifest.json" in _error_line(_run(_embed_cmd(tmp_path / "empty")))
    assert "--data: required" in _error_line(_run([sys.executable, "-m", "docjepa.embed"]), code=2)
    line = _error_line(_run(_embed_cmd(texts, "--config.text.pooling=cls")))
    assert "was prepared with text.pooling='mean', the config here gives 'cls'" in line
    # A shard embedded by another encoder (its JSON says so): the rest is not embedded with this one.
    out = _copy(texts, tmp_path / "mixed")
    name = json.loads((out / "manifest.json").read_text())["shards"][0]
    stats = json.loads((out / f"{name}.json").read_text())
    stats["encoder"] = {"name": "other-encoder", "dim": 768, "pooling": "mean", "max_length": 512}
    (out / f"{name}.json").write_text(json.dumps(stats))
    assert "already embedded with {'name': 'other-encoder'" in _error_line(_run(_embed_cmd(out)))
    # An inline prepare does not resume into shards written without embeddings.
    line = _error_line(_run([*PREPARE, f"--out={_copy(texts, tmp_path / 'resume')}"]))
    assert "written without text embeddings (prepare.embed=False)" in line

"""The text bank and target centring (data/bank.py) and the bank-negative objective terms."""

import json
import shutil

import grain
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

import train_utils as tu
from docjepa import losses, objective, sharding
from docjepa.data import bank, pipeline
from docjepa.data.record import decode_record


def _train_records(corpus):
    manifest = pipeline.read_manifest(str(corpus))
    files = [str(corpus / f) for f in manifest["splits"]["train"]["files"]]
    source = grain.sources.ArrayRecordDataSource(files)
    return manifest, [decode_record(source[i]) for i in range(len(source))]


def test_prepare_writes_every_distinct_target_and_the_corpus_mean(synth_corpus):
    manifest, records = _train_records(synth_corpus)
    loaded = bank.load(str(synth_corpus), manifest, min_words=0, center=False)
    for level in bank.LEVELS:
        emb = np.concatenate([r[f"{level}_emb"] for r in records]).astype(np.float64)
        ids = np.concatenate([r[f"{level}_text_id"] for r in records])
        present = ids >= 0
        # The manifest mean is the mean of every non-empty target, occurrences counted.
        np.testing.assert_allclose(manifest["target_mean"][level], emb[present].mean(0), atol=1e-6)
        got = loaded[level]
        assert sorted(got["text_id"]) == sorted(set(ids[present]))  # each distinct text once
        for tid, e, doc, page in zip(got["text_id"], got["emb"], got["doc"], got["page"]):
            rec = records[doc]
            rows = np.flatnonzero(rec[f"{level}_text_id"] == tid)
            assert rows.size  # the entry's document holds its text ...
            if level == "window":
                assert page in rec["windows"][rows, 0]  # ... on the page it names
            want = rec[f"{level}_emb"][rows[0]].astype(np.float32)
            np.testing.assert_allclose(e, want / np.linalg.norm(want), atol=1e-6)


def test_pipeline_and_bank_centre_with_the_same_mean(synth_corpus):
    manifest = pipeline.read_manifest(str(synth_corpus))
    kw = dict(batch_size=4, max_steps=8, max_pages=2, min_words=0, max_examples=4)
    raw = next(pipeline.eval_batches(str(synth_corpus), "train", center=False, **kw))
    cen = next(pipeline.eval_batches(str(synth_corpus), "train", center=True, **kw))
    mean = np.asarray(manifest["target_mean"]["window"], np.float32)
    m = raw["step_mask"]
    np.testing.assert_allclose(cen["window_emb"][m], raw["window_emb"][m] - mean, atol=1e-6)
    centred = bank.load(str(synth_corpus), manifest, min_words=0, center=True)["window"]
    plain = bank.load(str(synth_corpus), manifest, min_words=0, center=False)["window"]
    # Centring spreads the targets: their mean pairwise cosine drops.
    cos = lambda e: float(np.mean(e @ e.T))  # noqa: E731
    assert cos(centred["emb"]) < cos(plain["emb"]) - 0.05
    np.testing.assert_allclose(np.linalg.norm(centred["emb"], axis=1), 1.0, atol=1e-5)


def _toy_bank(dim=6):
    emb = np.eye(6, dim, dtype=np.float32)
    emb[5] = emb[0] * 0.99 + emb[1] * 0.01  # a near-duplicate of entry 0's text
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return {"emb": emb,
            "text_id": np.array([10, 11, 12, 13, 14, 15], np.int32),
            "doc": np.array([0, 0, 0, 1, 2, -1], np.int32),
            "page": np.array([0, 0, 1, 0, 0, -1], np.int32),
            "box": np.array([[0, 0, 224, 224], [300, 0, 524, 224], [0, 0, 224, 224], [0, 0, 224, 224],
                             [0, 0, 224, 224], [0, 0, 0, 0]], np.int32),
            "valid": np.array([True, True, True, True, True, True])}


def test_bank_exclusions_mask_false_negatives_only():
    b = _toy_bank()
    rows = {"text_id": np.array([10, 99], np.int32), "doc": np.array([0, 0], np.int32),
            "page": np.array([0, 0], np.int32), "box": np.array([[100, 0, 324, 224], [600, 0, 824, 224]], np.int32)}
    targets = np.stack([b["emb"][0], np.eye(6, dtype=np.float32)[3] * -1])
    ex = np.asarray(objective.bank_exclusions(rows, targets, b, max_cosine=0.9))
    # Row 0 (text 10, page 0 of doc 0, x 100-324): its own text; entry 1 overlaps it on the same
    # page; entry 5 is a near-duplicate of its target. Entry 2 (another page), 3 and 4 (other
    # documents) are true negatives. Text 10 is in the batch, so entry 0 is excluded for row 1 too.
    np.testing.assert_array_equal(ex[0], [True, True, False, False, False, True])
    # Row 1 (x 600-824) overlaps nothing and its target is far from every entry.
    np.testing.assert_array_equal(ex[1], [True, False, False, False, False, False])
    b["valid"][4] = False
    assert np.asarray(objective.bank_exclusions(rows, targets, b, 0.9))[:, 4].all()  # padding


def test_bank_term_completes_siglip_over_batch_and_bank():
    """In-batch SigLIP + the bank's negatives-only term == SigLIP against [batch texts; bank]."""
    rng = np.random.default_rng(0)
    n, k, d = 6, 9, 8
    zimg, ztxt, bk = (rng.normal(size=s).astype(np.float32) for s in ((n, d), (n, d), (k, d)))
    valid = np.array([1, 1, 0, 1, 1, 1], bool)
    exclude = rng.random((n, k)) < 0.2
    tp, b = 1.1, -2.5
    got = losses.sigmoid_loss(zimg, ztxt, tp, b, mask=valid) + losses.bank_negative_loss(
        zimg, bk, tp, b, row_valid=valid, exclude=jnp.asarray(exclude))
    # Reference: one logit matrix against all texts, positives on the diagonal, masked cells dropped.
    norm = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    logits = norm(zimg) @ norm(np.concatenate([ztxt, bk])).T * np.exp(tp) + b
    sign = -np.ones((n, n + k))
    sign[np.arange(n), np.arange(n)] = 1
    keep = valid[:, None] & np.concatenate([valid[None, :].repeat(n, 0), ~exclude], 1)
    want = -np.sum(np.where(keep, -np.logaddexp(0, -sign * logits), 0)) / valid.sum()
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_bank_term_sharded_over_the_mesh_matches_one_device():
    """The bank sharded along its entries over 8 devices, rows replicated: same loss and gradient
    as on one device (float64, so the bound is about the sharding, not the CPU's rounding)."""
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        z = jnp.asarray(rng.normal(size=(8, 4)))
        bk = jnp.asarray(rng.normal(size=(16, 4)))
        valid = jnp.asarray(rng.random(8) > 0.2)
        exclude = jnp.asarray(rng.random((8, 16)) < 0.3)

        def f(z, bk):
            return losses.bank_negative_loss(z, bk, 0.7, -1.0, row_valid=valid, exclude=exclude)

        mesh = sharding.make_mesh((("data", 4), ("fsdp", 2), ("tensor", 1)))
        bsh = NamedSharding(mesh, P(("data", "fsdp")))
        one = jax.jit(jax.value_and_grad(f))(z, bk)
        eight = jax.jit(jax.value_and_grad(f), in_shardings=(NamedSharding(mesh, P()), bsh))(z, bk)
    np.testing.assert_allclose(eight[0], one[0], rtol=1e-12)
    np.testing.assert_allclose(eight[1], one[1], rtol=1e-10, atol=1e-14)


def test_training_refuses_a_corpus_of_another_encoder_or_without_a_mean(synth_corpus, tmp_path):
    r = tu.run(tu.train_cmd(synth_corpus, tmp_path / "w", 1, "--config.text.pooling=cls"))
    assert r.returncode != 0
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error: config.text.pooling: 'cls', but ") and "was embedded with 'mean'" in line
    old = tmp_path / "old"
    shutil.copytree(synth_corpus, old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["target_mean"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    (old / bank.FILE).unlink()
    r = tu.run(tu.train_cmd(old, tmp_path / "w2", 1))
    assert r.returncode != 0 and "no target_mean" in r.stderr.strip().splitlines()[-1]
    r = tu.run(tu.train_cmd(old, tmp_path / "w3", 1, "--config.data.center_targets=False"))
    assert r.returncode != 0 and f"{bank.FILE}: missing" in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "w3" / "checkpoints").exists()


def test_bias_init_counts_the_bank():
    cfg = mlc.ConfigDict({"batch_size": 2, "max_steps": 4, "max_pages": 2})
    loss = mlc.ConfigDict({"bias_init_auto": True, "bias_init": -10.0, "window_bank_weight": 1.0,
                           "page_bank_weight": 0.0, "bank_size": 0})
    got = objective.bias_inits(loss, cfg, {"window": 100, "page": 50})
    np.testing.assert_allclose([got["window"], got["page"]], -np.log([8 + 100, 4]))
    loss.bank_size = 10
    assert objective.bias_inits(loss, cfg, {"window": 100})["window"] == pytest.approx(-np.log(18))

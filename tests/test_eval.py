"""Evaluation: metric code on hand-computed cases, layout labels, features on a mesh and across
processes, and the CLI end to end."""

import dataclasses
import functools
import json
import shutil
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

import train_utils as tu
from configs import demo
from docjepa import export, sharding, state as factory
from docjepa.evals import common, features, layout, prior, report
from docjepa.data import ocr, pipeline


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_recall_perfect_and_shuffled():
    rng = np.random.default_rng(0)
    emb = _unit(rng.normal(size=(400, 32)))
    ids = np.arange(400)
    perfect = common.recall_at_k(emb, emb, ids, ids)
    assert perfect == {1: 1.0, 5: 1.0, 10: 1.0}
    shuffled = common.recall_at_k(emb, emb[rng.permutation(400)], ids, ids)
    for k in common.KS:  # a random pairing scores chance, k / 400, up to sampling noise
        assert abs(shuffled[k] - common.chance_recall(ids, ids, k)) < 0.03
    assert common.chance_recall(ids, ids, 10) == pytest.approx(10 / 400)


def test_recall_hand_computed_multi_positive():
    q = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    c = np.array([[0.0, 1.0], [1.0, 0.0], [0.8, 0.6]])
    # Similarities: q0 -> [0, 1, .8], q1 -> [1, 0, .6], q2 -> [.8, .6, .96].
    qid, cid = np.array([10, 11, 12]), np.array([11, 10, 11])  # candidates 0 and 2 share a text
    # q0 ranks c1 (id 10) first: hit. q1 ranks c0 (id 11) first: hit. q2 (id 12) has no positive.
    assert common.recall_at_k(q, c, qid, cid, ks=(1, 2, 3)) == {1: 2 / 3, 2: 2 / 3, 3: 2 / 3}
    # With q1's id changed to 10 its positive c1 is ranked last: only a hit at k = 3.
    assert common.recall_at_k(q, c, np.array([10, 10, 12]), cid, ks=(1, 2, 3)) == {1: 1 / 3, 2: 1 / 3, 3: 2 / 3}
    # Chance: q0 has 1 positive of 3, q1 has 2, q2 has 0.
    assert common.chance_recall(qid, cid, 1) == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert common.chance_recall(qid, cid, 2) == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_mean_iou_hand_computed():
    true = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    # class 0: inter 1, union 3; class 1: inter 2, union 3; class 2: inter 1, union 2; class 3 absent.
    miou, ious = common.mean_iou(pred, true, 4)
    np.testing.assert_allclose(ious[:3], [1 / 3, 2 / 3, 1 / 2])
    assert np.isnan(ious[3]) and miou == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)


def test_layout_labels_follow_element_boxes():
    page = ocr.Page(width=448, height=448, dpi=96, words=[], layout=[
        ocr.LayoutElement("paragraph", (0, 0, 448, 448)),
        ocr.LayoutElement("table", (0, 0, 112, 224)),  # drawn over the paragraph
    ])
    labels = features.layout_labels(ocr.Document("d", "test", [page]), np.array([[0, 0, 0, 224, 224], [0, 224, 224, 448, 448]]), grid=4)
    table, para = features.LAYOUT_LABELS.index("table"), features.LAYOUT_LABELS.index("paragraph")
    expected = np.full((4, 4), para)
    expected[:, :2] = table  # cells with centres x in {28, 84} < 112, all rows (y < 224)
    np.testing.assert_array_equal(labels[0], expected)
    np.testing.assert_array_equal(labels[1], np.full((4, 4), para))


def test_window_labels_come_from_boxes_or_pseudo_layout_as_configured():
    rows = np.array([[0, 0, 0, 224, 224]])
    boxed = ocr.Document("boxed", "test", [ocr.Page(224, 224, 96, [], [ocr.LayoutElement("table", (0, 0, 224, 224))])])
    bare = ocr.Document("bare", "test", [ocr.Page(224, 224, 96, [])])
    masks = np.zeros((1, 224, 224), np.uint8)
    masks[:, :112] = 1  # the top half of the window is a pseudo-layout region
    table = features.LAYOUT_LABELS.index("table")
    region = np.repeat(np.array([[1], [1], [0], [0]]), 4, axis=1)
    labels, pseudo = features.window_labels(boxed, rows, 4, "auto", masks)
    assert not pseudo and (labels == table).all()
    assert features.window_labels(bare, rows, 4, "boxes", None) is None  # no truth: left out, not background
    for source, doc in (("auto", bare), ("pseudo", boxed)):
        labels, pseudo = features.window_labels(doc, rows, 4, source, masks)
        assert pseudo and labels.dtype == np.int32
        np.testing.assert_array_equal(labels[0], region)


def _layout_features(rng, pseudo):
    """Tokens whose label is their feature's sign: separable, whichever label set they carry."""
    x = rng.normal(size=(len(pseudo), 4))
    empty = {name: np.zeros((0,)) for name in features.Features.__dataclass_fields__ if name != "val_loss"}
    return features.Features(**{**empty, "layout_x": x, "layout_y": (x[:, 0] > 0).astype(np.int32),
                                "layout_pseudo": np.asarray(pseudo)}, val_loss=0.0)


def test_layout_probe_reports_box_and_pseudo_labels_apart():
    rng = np.random.default_rng(0)
    mixed = [False] * 200 + [True] * 100
    out = layout.evaluate(_layout_features(rng, mixed), _layout_features(rng, mixed), None)
    assert out["probe/layout/tokens_train"] == 200 and out["probe/layout_pseudo/tokens_train"] == 100
    assert out["probe/layout/acc"] > 0.9 and out["probe/layout_pseudo/acc"] > 0.9
    boxes_only = layout.evaluate(_layout_features(rng, [False] * 50), _layout_features(rng, [False] * 50), None)
    assert sorted(boxes_only) == [f"probe/layout/{k}" for k in ("acc", "majority_miou", "miou", "tokens_train")]


def test_markdown_table_has_one_row_per_metric():
    table = report.markdown_table({"trained": {"a": 0.5, "b": 1.0}, "random_init": {"a": 0.25}})
    lines = table.strip().splitlines()
    assert lines[0] == "| metric | trained | random_init |"
    assert lines[2] == "| a | 0.5000 | 0.2500 |" and lines[3] == "| b | 1.0000 |  |"


def _window_features(txt: np.ndarray, key: np.ndarray) -> features.Features:
    empty = {name: np.zeros((0,)) for name in features.Features.__dataclass_fields__ if name != "val_loss"}
    return features.Features(**{**empty, "window_txt": txt, "window_ids": np.arange(len(txt)), "window_key": key},
                             val_loss=0.0)


def test_prior_recovers_what_layout_explains_and_nothing_else():
    rng = np.random.default_rng(0)
    texts = _unit(rng.normal(size=(20, 32)))  # one text per layout key, plus a little noise
    key_tr = rng.integers(0, 20, 400)
    train = _window_features(_unit(texts[key_tr] + 0.05 * rng.normal(size=(400, 32))), key_tr)
    val = _window_features(_unit(texts + 0.05 * rng.normal(size=(20, 32))), np.arange(20))
    out = prior.evaluate(train, val, None)
    assert out["prior/window/i2t_r1"] == 1.0 and out["prior/window/t2i_r1"] == 1.0
    assert "prior/page/i2t_r1" not in out  # levels without items are left out
    # Val texts that do not depend on the key: the prior scores chance, 10 / 400 at R@10.
    val = _window_features(_unit(rng.normal(size=(400, 32))), rng.integers(0, 20, 400))
    out = prior.evaluate(train, val, None)
    assert abs(out["prior/window/i2t_r10"] - 10 / 400) < 0.03 and abs(out["prior/window/t2i_r10"] - 10 / 400) < 0.03


def test_layout_key_separates_category_first_page_and_cell():
    box = np.array([[0.0, 0.0, 0.5, 0.25], [0.5, 0.0, 1.0, 0.25], [0.0, 0.0, 0.5, 0.25], [0.0, 0.0, 0.5, 0.25]])
    keys = features.layout_key(np.array([1, 1, 1, 2]), np.array([0, 0, 3, 0]), box)
    assert len(set(keys.tolist())) == 4
    assert features.layout_key(np.array([1]), np.array([0]), box[:1]) == keys[0]
    assert features.layout_key(np.array([1, 1]), np.array([2, 5])).tolist() == [2, 2]  # pages after the first


def _tiny_features(data_dir, sizes, devices=None) -> features.Features:
    """Every column (layout tokens and page-end trace included) of a random-initialised tiny model
    over the first 8 chunks of `data_dir`'s train split, 4 rows a batch, on a (data, fsdp, tensor)
    mesh of `sizes`."""
    cfg = demo.get_config("quick")
    cfg.data.dir, cfg.evals.batch_size = str(data_dir), 4
    cfg.model.hiera.overrides.embed_dim = 8
    cfg.model.ttm.memory_size, cfg.model.ttm.num_read, cfg.model.ttm.num_layers = 8, 2, 1
    mesh = sharding.make_mesh(tuple(zip(sharding.MESH_AXES, sizes)), devices)
    dim = factory.embed_dim_of(cfg, pipeline.read_manifest(data_dir))
    make_model = functools.partial(factory.build_model, cfg, dim, 0)
    graphdef, abstract = nnx.split(nnx.eval_shape(make_model), nnx.Param)
    param_sh = nnx.to_pure_dict(sharding.state_shardings(abstract, mesh))
    params = jax.device_put(jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(make_model(), nnx.Param))), param_sh)
    extract = features.FeatureExtractor(cfg, graphdef, mesh, param_sh, layout=True, trace=True)
    return extract(params, str(data_dir), "train", 8)


def _two_process_main(data_dir: str, out: str) -> None:
    """Run by each process of the two-process test: its Features, as every host ends with them."""
    sharding.maybe_initialize_distributed()
    feats = _tiny_features(data_dir, (2, 1, 2))  # one batch shard per process, tensor over its 2 devices
    np.savez(Path(out) / f"process_{jax.process_index()}.npz", **dataclasses.asdict(feats))


def _assert_same_features(got: dict, want: dict) -> None:
    """Item for item: ids, keys, labels, refs and texts exactly; model outputs to float32 rounding
    (another mesh sums over its devices in another order)."""
    assert got.keys() == want.keys()
    for name, y in want.items():
        x = got[name]
        assert np.shape(x) == np.shape(y) and np.asarray(x).dtype == np.asarray(y).dtype, name
        if name in ("window", "page", "doc", "layout_x", "page_end_trace", "val_loss"):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5, err_msg=name)
        else:
            np.testing.assert_array_equal(x, y, err_msg=name)


@pytest.fixture(scope="module")
def one_device_features(synth_corpus):
    return _tiny_features(synth_corpus, (1, 1, 1), jax.devices()[:1])


@pytest.mark.xdist_group("eval_sharded")  # with the two-process test: one `one_device_features`
def test_eval_outputs_stay_sharded_and_match_one_device(synth_corpus, one_device_features, monkeypatch):
    """On 8 devices (2 x 2 batch shards, tensor 2) the forward's outputs, stage maps included,
    come back split over the batch, not replicated, and each is read back as this process's rows;
    the Features equal those of one device."""
    seen = {}
    read = sharding.local_rows

    def spy(tree, mesh):
        seen.update(tree)
        return read(tree, mesh)

    monkeypatch.setattr(sharding, "local_rows", spy)
    got = _tiny_features(synth_corpus, (2, 2, 2))
    assert sorted(seen) == ["doc", "page", "stage", "trace", "window"]
    for name, x in seen.items():
        rows = sharding.batch_sharding(x.sharding.mesh, x.ndim)
        assert x.sharding.is_equivalent_to(rows, x.ndim) and not x.sharding.is_fully_replicated, name
    assert len(got.layout_x) and len(got.page_end_trace)
    _assert_same_features(dataclasses.asdict(got), dataclasses.asdict(one_device_features))


@pytest.mark.long
@pytest.mark.xdist_group("eval_sharded")
def test_two_processes_each_evaluate_their_rows_to_the_same_features(synth_corpus, one_device_features, tmp_path):
    """2 processes x 2 CPU devices (gloo): each reads back and labels only its half of every batch,
    then the columns are gathered; both end with the Features of one process on one device, in
    its order (batch by batch), layout tokens sampled alike."""
    code = "import sys; sys.path.insert(0, 'tests'); import test_eval; test_eval._two_process_main(*sys.argv[1:])"
    tu.run_processes(2, 2, [sys.executable, "-c", code, str(synth_corpus), str(tmp_path)], tmp_path / "logs")
    want = dataclasses.asdict(one_device_features)
    for p in range(2):
        with np.load(tmp_path / f"process_{p}.npz") as got:
            _assert_same_features({k: got[k] for k in got.files}, want)


@pytest.mark.xdist_group("eval")  # with test_eval_restore.py: the eval runs share `jax_cache`
def test_eval_cli_end_to_end(synth_corpus, stage1_run, tmp_path, jax_cache):
    wd = tmp_path / "w"
    shutil.copytree(stage1_run, wd)  # the shared 2-step run of `python -m docjepa.train`
    cmd = [sys.executable, "-m", "docjepa.eval", *tu.FAST, f"--workdir={wd}",
           f"--config.data.dir={synth_corpus}", "--config.evals.max_examples=16"]
    r = tu.run(cmd, cache=jax_cache)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads((wd / "eval" / "step_2.json").read_text())
    for key in ("val/loss", "retrieval/window/i2t_r1", "retrieval/page/t2i_r5", "retrieval/doc/chance_r1",
                "retrieval/window/pool", "probe/layout/miou", "prior/window/i2t_r10", "prior/doc/t2i_r1", "random_init/retrieval/window/i2t_r1"):
        assert key in result and np.isfinite(result[key]), key
    assert 0 <= result["retrieval/window/i2t_r1"] <= 1
    for name in ("step_2.md", "step_2_recall.png", "step_2_retrieval_grid.png"):
        assert (wd / "eval" / name).stat().st_size > 0
    assert "| retrieval/window/i2t_r1 |" in r.stdout
    # Another prepared corpus (--data) is reported beside, not over, the training data's report.
    cmd = [sys.executable, "-m", "docjepa.eval", *tu.FAST, f"--workdir={wd}", f"--data={synth_corpus}",
           "--random_init=false", "--config.evals.names=('retrieval',)", "--config.evals.max_examples=8"]
    r = tu.run(cmd, cache=jax_cache)
    assert r.returncode == 0, r.stderr[-3000:]
    other = json.loads((wd / "eval" / synth_corpus.name / "step_2.json").read_text())
    assert "retrieval/page/i2t_r1" in other and "random_init/val/loss" not in other
    assert json.loads((wd / "eval" / "step_2.json").read_text()) == result
    # The trained encoder leaves for PyTorch: transformers' HieraModel loads the export and
    # computes the restored model's Hiera features; the rest of the model rides beside it.
    import torch
    from safetensors.numpy import load_file
    from transformers import HieraModel

    r = tu.run([sys.executable, "-m", "docjepa.export", f"--workdir={wd}", f"--out={tmp_path / 'export'}"])
    assert r.returncode == 0 and "exported step 2" in r.stdout, r.stderr[-3000:]
    theirs = HieraModel.from_pretrained(tmp_path / "export").eval()
    ours, step = export.restore_model(str(wd))
    image = np.random.default_rng(0).normal(size=(1, 224, 224, 3)).astype(np.float32)
    with torch.no_grad():
        out = theirs(torch.tensor(image.transpose(0, 3, 1, 2)))
        ref = theirs.pooler.layernorm(out.last_hidden_state).numpy()
    assert step == 2
    np.testing.assert_allclose(np.asarray(ours.encoder(image)), ref, atol=1e-4)
    rest = load_file(tmp_path / "export" / "docjepa.safetensors")
    assert "ttm/memory_init" in rest and "window_head/proj/kernel" in rest and not any(k.startswith("encoder") for k in rest)
    np.testing.assert_array_equal(rest["ttm/memory_init"], np.asarray(ours.ttm.memory_init[...]))


def test_eval_chunks_read_whole_pages_whatever_training_reads():
    from configs import demo

    eval_chunks = features.eval_chunks
    cfg = demo.get_config()
    cfg.data.max_steps, cfg.data.max_pages = 1, 1  # one-window training chunks
    cfg.evals.max_steps = cfg.evals.max_pages = 0
    assert (eval_chunks(cfg).data.max_steps, eval_chunks(cfg).data.max_pages) == (1, 1)  # 0: training's
    cfg.evals.max_steps, cfg.evals.max_pages = 12, 2
    e = eval_chunks(cfg)
    assert (e.data.max_steps, e.data.max_pages) == (12, 2) and (cfg.data.max_steps, cfg.data.max_pages) == (1, 1)

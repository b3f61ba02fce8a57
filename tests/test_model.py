"""The composed model: window-box embedding, document target and the document term's reach."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import demo
from docjepa import objective, state as factory, validate
from docjepa.data import pipeline
from docjepa.models import docjepa as docjepa_model


def _cfg():
    cfg = demo.get_config("quick")
    cfg.data.batch_size, cfg.data.max_steps, cfg.data.max_pages = 2, 3, 2
    cfg.model.ttm.memory_size, cfg.model.ttm.num_read, cfg.model.ttm.num_layers = 8, 2, 1
    cfg.model.hiera.overrides.embed_dim = 8
    # In-batch terms at the end of documents; the bank's: test_bank.py; the running one's: below.
    cfg.loss.window_bank_weight = cfg.loss.page_bank_weight = cfg.loss.doc_running_weight = 0.0
    return cfg


def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    patches = rng.integers(0, 256, (2, 3, 224, 224, 3), dtype=np.uint8)
    step_mask = np.array([[True, True, True], [True, True, False]])
    page_ids = np.array([[0, 0, 1], [0, 1, -1]], np.int32)
    boxes = np.array([[[0, 0, .5, .3], [.5, 0, 1, .3], [0, 0, .5, .3]],
                      [[0, .7, .5, 1], [.5, .7, 1, 1], [0, 0, 0, 0]]], np.float32)
    return patches, step_mask, page_ids, boxes


@nnx.jit
def _forward(model, patches, step_mask, page_ids, boxes):
    return model(patches, step_mask, page_ids, boxes, max_pages=2)


def _window(model, boxes):
    patches, step_mask, page_ids, _ = _inputs()
    return np.asarray(_forward(model, patches, step_mask, page_ids, boxes)["window"])


def test_window_box_embedding_starts_neutral_and_then_moves_outputs():
    cfg = _cfg()
    model = factory.build_model(cfg, 16, 0)
    _, _, _, boxes = _inputs()
    moved = boxes.copy()
    moved[..., [1, 3]] = 1 - moved[..., [3, 1]]  # the same windows, mirrored top <-> bottom
    # Zero-initialised projection: at step 0 the model is the position-free model.
    np.testing.assert_array_equal(_window(model, boxes), _window(model, moved))
    kernel = model.box_embed.proj.kernel
    kernel[...] = jax.random.normal(jax.random.key(1), kernel.shape) * 0.1
    a, b = _window(model, boxes), _window(model, moved)
    assert np.abs(a - b).max() > 1e-3
    # Off: no parameter for it, and the boxes are ignored.
    cfg.model.window_position = False
    off = factory.build_model(cfg, 16, 0)
    assert off.box_embed is None
    np.testing.assert_array_equal(_window(off, boxes), _window(off, moved))


def test_doc_target_mean_of_valid_normalised_pages():
    spec = pipeline._Spec(max_steps=4, max_pages=2, min_words=3, window=224, dim=2,
                          mean={"window": np.zeros(2, np.float32), "page": np.array([1, 1], np.float32)})
    page_emb = np.array([[4, 1], [1, 3], [6, 6]], np.float32)  # centred: [3, 0], [0, 2], [5, 5]
    target, ok = spec.doc_target({"page_emb": page_emb, "page_nwords": np.array([5, 3, 2])})
    np.testing.assert_allclose(target, [0.5, 0.5], atol=1e-6)
    assert ok
    target, ok = spec.doc_target({"page_emb": page_emb, "page_nwords": np.array([0, 1, 2])})
    assert not ok and not target.any()  # no page with enough words: no document target


def test_doc_term_trains_the_memory_and_only_it_when_alone():
    """With only the document term weighted, the TTM memory init and the doc head receive
    gradient while the window and page heads receive none."""
    cfg = _cfg()
    cfg.loss.window_weight, cfg.loss.page_weight, cfg.loss.doc_weight = 0.0, 0.0, 1.0
    model = factory.build_model(cfg, 16, 0)
    graphdef, params = nnx.split(model, nnx.Param)
    patches, step_mask, page_ids, boxes = _inputs()
    rng = np.random.default_rng(3)
    batch = {"window_emb": rng.normal(size=(2, 3, 16)).astype(np.float32), "window_mask": step_mask,
             "window_text_id": np.arange(6, dtype=np.int32).reshape(2, 3),
             "page_emb": rng.normal(size=(2, 2, 16)).astype(np.float32), "page_mask": np.ones((2, 2), bool),
             "page_text_id": np.arange(4, dtype=np.int32).reshape(2, 2),
             "doc_emb": np.ones((2, 16), np.float32), "doc_mask": np.ones((2,), bool)}

    def loss(p):
        m = nnx.merge(graphdef, p)
        out = m(patches, step_mask, page_ids, boxes, max_pages=2)
        total, terms = objective.loss_terms(m, out, batch, cfg.loss)
        return total, terms

    (total, terms), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    assert set(terms) == {"loss/doc"} and np.isfinite(float(terms["loss/doc"]))  # weight 0: not computed
    np.testing.assert_allclose(float(total), float(terms["loss/doc"]), rtol=1e-6)
    norm = lambda tree: float(jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(tree))))  # noqa: E731
    assert norm(grads["ttm"]["memory_init"]) > 0 and norm(grads["doc_head"]) > 0
    assert norm(grads["window_head"]) == 0 and norm(grads["page_head"]) == 0


def test_running_doc_term_scores_every_known_chunk():
    """`loss.doc_running_weight` scores the document target after every chunk whose document has
    one (`doc_known`), wherever the document ends: the end-of-document term on those rows."""
    cfg = _cfg()
    model = factory.build_model(cfg, 16, 0)
    out = _forward(model, *_inputs())
    rng = np.random.default_rng(4)
    batch = {"doc_emb": rng.normal(size=(2, 16)).astype(np.float32), "doc_mask": np.zeros((2,), bool),
             "doc_known": np.ones((2,), bool)}
    cfg.loss.window_weight = cfg.loss.page_weight = 0.0
    cfg.loss.doc_weight, cfg.loss.doc_running_weight = 0.0, 1.0
    _, running = objective.loss_terms(model, out, batch, cfg.loss)
    cfg.loss.doc_weight, cfg.loss.doc_running_weight = 1.0, 0.0
    _, end = objective.loss_terms(model, out, {**batch, "doc_mask": batch["doc_known"]}, cfg.loss)
    assert set(running) == {"loss/doc_running"} and float(running["loss/doc_running"]) > 0
    np.testing.assert_allclose(float(running["loss/doc_running"]), float(end["loss/doc"]), rtol=1e-6)
    cfg.loss.doc_weight, cfg.loss.doc_running_weight = 0.0, 1.0
    _, none = objective.loss_terms(model, out, {**batch, "doc_known": np.zeros((2,), bool)}, cfg.loss)
    assert float(none["loss/doc_running"]) == 0  # no document with a target: nothing scored


def test_zero_weight_terms_are_not_traced(monkeypatch):
    """The objective is a registry: a weight-0 term is never called, so it costs nothing;
    all weights 0 is refused by validation with one line."""
    cfg = _cfg()
    model = factory.build_model(cfg, 16, 0)
    patches, step_mask, page_ids, boxes = _inputs()
    out = _forward(model, patches, step_mask, page_ids, boxes)
    batch = {"window_emb": np.ones((2, 3, 16), np.float32), "window_mask": step_mask,
             "window_text_id": np.arange(6, dtype=np.int32).reshape(2, 3),
             "page_emb": np.ones((2, 2, 16), np.float32), "page_mask": np.ones((2, 2), bool),
             "page_text_id": np.arange(4, dtype=np.int32).reshape(2, 2),
             "doc_emb": np.ones((2, 16), np.float32), "doc_mask": np.ones((2,), bool),
             # what tells false negatives apart: document, window rows (page, box px), page index
             "record_index": np.arange(2, dtype=np.int32), "page_index": np.tile(np.arange(2, dtype=np.int32), (2, 1)),
             "window_rows": np.tile(np.array([[0, 0, 0, 224, 224], [0, 224, 0, 448, 224], [1, 0, 0, 224, 224]],
                                             np.int32), (2, 1, 1))}

    def boom(*args):
        raise AssertionError("a weight-0 term was traced")

    monkeypatch.setitem(objective.TERMS, "loss/page", objective.Term("page_weight", boom))
    cfg.loss.page_weight = 0.0
    total, terms = objective.loss_terms(model, out, batch, cfg.loss)
    assert set(terms) == {"loss/window", "loss/doc"}
    np.testing.assert_allclose(float(total), float(terms["loss/window"] + terms["loss/doc"]), rtol=1e-6)
    cfg.loss.page_weight = 1.0
    with pytest.raises(AssertionError, match="weight-0 term was traced"):
        objective.loss_terms(model, out, batch, cfg.loss)
    cfg.loss.window_weight = cfg.loss.page_weight = cfg.loss.doc_weight = 0.0
    with pytest.raises(validate.ConfigError, match=r"^config.loss: at least one of loss.window_weight"):
        validate.check(cfg, "train")


def test_bias_init_auto_is_minus_log_items_per_level():
    cfg = _cfg()  # batch 2 x 3 steps x 2 pages
    got = objective.bias_inits(cfg.loss, cfg.data)
    np.testing.assert_allclose([got["window"], got["page"], got["doc"]], -np.log([6, 4, 2]))
    model = factory.build_model(cfg, 16, 0)
    np.testing.assert_allclose(float(model.page_scale.b[...]), -np.log(4), rtol=1e-6)
    cfg.loss.bias_init, cfg.loss.bias_init_auto = -4.5, False
    validate.check(cfg, "train")
    assert set(objective.bias_inits(cfg.loss, cfg.data).values()) == {-4.5}
    cfg.loss.bias_init = float("nan")
    with pytest.raises(validate.ConfigError, match="loss.bias_init"):
        validate.check(cfg, "train")


def test_feature_centering_batch_mean_in_training_running_mean_after():
    """Training centres on the batch (its mean comes back), evaluation on the running mean,
    which the train step moves by the configured momentum; without centring neither happens."""
    cfg = _cfg()
    model = factory.build_model(cfg, 16, 0)
    patches, step_mask, page_ids, boxes = _inputs()
    out = model(patches, step_mask, page_ids, boxes, max_pages=2, train=True)
    means = out["feature_means"]
    # The collapse monitor: random windows give a random-init encoder clearly distinct features.
    assert 0.01 < float(out["health"]["encoder_spread"]) < 1.0
    assert set(means) == {"step_center", "doc_center"} and np.abs(np.asarray(means["step_center"])).max() > 0
    # Running mean still zero: evaluation does not centre yet, so it differs from training.
    ev = model(patches, step_mask, page_ids, boxes, max_pages=2)
    assert "feature_means" not in ev and np.abs(np.asarray(ev["window"]) - np.asarray(out["window"])).max() > 1e-3
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    moved = docjepa_model.update_running_means(params, means, 0.75)
    np.testing.assert_allclose(moved["step_center"]["mean"], 0.25 * np.asarray(means["step_center"]), rtol=1e-6)
    # With the running mean equal to this batch's mean, evaluation reproduces training here.
    moved = docjepa_model.update_running_means(params, means, 0.0)
    nnx.update(model, moved)
    ev = model(patches, step_mask, page_ids, boxes, max_pages=2)
    np.testing.assert_allclose(ev["window"], out["window"], atol=1e-5)
    cfg.model.center_features = False
    plain = factory.build_model(cfg, 16, 0)
    assert plain.step_center is None
    assert plain(patches, step_mask, page_ids, boxes, max_pages=2, train=True)["feature_means"] == {}


def test_packed_encoding_equals_dense_on_real_windows():
    """With a window budget, only the real windows go through Hiera (packed, then scattered
    back); every output on real windows, pages, documents and the memory is the dense one."""
    cfg = _cfg()
    model = factory.build_model(cfg, 16, 0)
    patches, step_mask, page_ids, boxes = _inputs()
    step_mask[0, 1:] = False                                   # rows hold 1 and 2 real windows
    page_ids = np.where(step_mask, page_ids, -1)

    @nnx.jit(static_argnames="pack")
    def forward(model, pack):
        return model(patches, step_mask, page_ids, boxes, max_pages=2, pack=pack, trace=True)

    dense = forward(model, None)
    for pack in ((2, 3), (1, 3)):                              # one group of 3 slots; a group per row
        packed = forward(model, pack)
        np.testing.assert_allclose(packed["window"][step_mask], dense["window"][step_mask], atol=1e-5)
        for key in ("page", "doc", "memory", "trace"):
            np.testing.assert_allclose(packed[key], dense[key], atol=1e-5, err_msg=f"{key} {pack}")
    budget = pipeline.window_budget(0.5, 8, 16, shards=2, accum=4)
    assert budget == pipeline.Budget(rows=2, windows=16)       # rows shared by a shard and a microbatch
    assert pipeline.window_budget(1.0, 8, 16) is None
    with pytest.raises(pipeline.DataError, match="window_capacity"):
        pipeline.window_budget(0.0, 8, 16)


def test_pixel_normalisations():
    """"imagenet" is what Meta's weights expect; "ink" puts blank paper at exactly 0 in every
    channel (no constant offset on a mostly blank window) and black ink at 255 / 64."""
    from docjepa.models.docjepa import PIXELS

    paper, ink = np.full((1, 3), 255.0, np.float32), np.zeros((1, 3), np.float32)
    np.testing.assert_array_equal(PIXELS["ink"](paper), 0.0)
    np.testing.assert_allclose(PIXELS["ink"](ink), 255.0 / 64.0)
    np.testing.assert_allclose(PIXELS["imagenet"](paper), [[2.2489, 2.4286, 2.64]], atol=1e-3)

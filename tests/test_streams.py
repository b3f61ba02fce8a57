"""Whole documents: a 64-page document is read with the same program, and so the same peak
memory, as a 4-page one, in training batches and in evaluation with the memory carried."""

import functools

import jax
import numpy as np
from flax import nnx

from configs import demo
from docjepa import evals, sharding, state as factory
from docjepa.data import pipeline
from test_pipeline import D, _doc, _write_corpus


def _corpus(tmp_path):
    # Pages of 2 windows: 64 pages = 128 windows = 32 chunks of 4; then a 4-page document.
    return _write_corpus(tmp_path, [_doc(1, pages=64, rows=1), _doc(2, pages=4, rows=1)], shards=1)


def test_training_batches_have_one_shape_whatever_the_document_length(tmp_path):
    data = demo.get_config("quick").data
    data.dir, data.max_steps, data.max_pages, data.center_targets = _corpus(tmp_path), 4, 2, False
    it = pipeline.make_train_iterator(data, seed=0, local_batch_size=2, process_index=0, process_count=1,
                                      num_epochs=1)
    batches = list(it)
    shapes = {tuple((k, v.shape, v.dtype.str) for k, v in sorted(b.items())) for b in batches}
    assert len(shapes) == 1  # the step's program (and so its peak memory) is one for every batch
    long_row = [b for b in batches if (b["record_index"] == 0).any()]
    assert sum(int(b["example_mask"][b["record_index"] == 0].sum()) for b in long_row) == 32  # read whole
    ends = [b["doc_pages"][b["doc_end"]] for b in batches]
    assert sorted(np.concatenate(ends).tolist()) == [4, 64]


def test_evaluation_reads_a_64_page_document_whole_with_one_program(tmp_path):
    cfg = demo.get_config("quick")
    cfg.data.dir, cfg.data.max_steps, cfg.data.max_pages, cfg.data.center_targets = _corpus(tmp_path), 4, 2, False
    cfg.model.ttm.memory_size, cfg.model.ttm.num_read, cfg.model.ttm.num_layers = 8, 2, 1
    cfg.model.hiera.overrides.embed_dim = 8
    cfg.evals.batch_size, cfg.evals.max_examples = 2, 1000
    mesh = sharding.make_mesh((("data", 1), ("fsdp", 1), ("tensor", 1)), jax.devices()[:1])
    make_model = functools.partial(factory.build_model, cfg, D, 0)
    graphdef, abstract = nnx.split(nnx.eval_shape(make_model), nnx.Param)
    param_sh = sharding.state_shardings(abstract, mesh)
    params = nnx.to_pure_dict(nnx.state(make_model(), nnx.Param))
    ev = evals.Evaluation(cfg, graphdef, mesh, nnx.to_pure_dict(param_sh), ["retrieval", "memory"], cfg.data.dir)
    results, feats = ev.run(params)
    assert ev.extract.forward._cache_size() == 1  # 33 batches, one compiled forward
    # Each document is one item, taken after its last window; page ends of all 68 pages traced.
    np.testing.assert_array_equal(np.sort(feats.doc_pages), [4, 64])
    assert len(feats.page_end_ref) == 68 and feats.page_end_trace.shape[1] > 0
    assert results["retrieval/doc/pool"] == 2.0 and np.isfinite(results["val/loss"])

"""Elastic resume: a train state checkpointed on 8 devices restores onto a mesh of 4, every
array equal and laid out on the new mesh's shardings; the data streams of P processes resume
on another process count; and a run of 2 processes resumes on 1 as if never interrupted, and on 2."""

import functools
import json
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

import train_utils as tu
from configs import demo
from docjepa import checkpoint, sharding, state as factory
from docjepa.data import pipeline
from test_pipeline import _cfg, _doc, _same, _take, _write_corpus


def _abstract_state(cfg, mesh, dim):
    """The train state's ShapeDtypeStructs carrying `mesh`'s shardings (nothing compiled)."""
    _, abstract = nnx.split(nnx.eval_shape(functools.partial(factory.build_model, cfg, dim, cfg.seed)), nnx.Param)
    tx, _ = factory.build_optimizer(cfg.optim, cfg.train.steps, factory.decay_mask(abstract))
    shardings = factory.train_state_shardings(tx, abstract, mesh, cfg)
    return checkpoint.abstract_with_shardings(factory.abstract_train_state(tx, abstract, cfg), shardings)


def test_state_saved_on_8_devices_restores_on_4(tmp_path):
    cfg = demo.get_config("quick")
    cfg.model.hiera.overrides.embed_dim = 16
    cfg.model.ttm.memory_size, cfg.model.ttm.num_read, cfg.model.ttm.num_layers = 8, 2, 1
    dim = 32
    eight = sharding.make_mesh((("data", 2), ("fsdp", 2), ("tensor", 2)))
    four = sharding.make_mesh((("data", 1), ("fsdp", 2), ("tensor", 2)), jax.devices()[:4])
    rng = np.random.default_rng(0)
    state = jax.tree.map(lambda a: jax.device_put(rng.standard_normal(a.shape).astype(a.dtype), a.sharding),
                         _abstract_state(cfg, eight, dim))
    ckpt = checkpoint.Checkpointer(tmp_path, keep=1, async_save=False)
    ckpt.save(3, state, None)
    ckpt.wait()
    abstract4 = _abstract_state(cfg, four, dim)
    restored = ckpt.restore(3, abstract4)
    ckpt.close()
    for (path, a), b, want in zip(jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(restored),
                                  jax.tree.leaves(abstract4)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=jax.tree_util.keystr(path))
        assert b.sharding == want.sharding and set(b.sharding.device_set) <= set(four.devices.flat)
    # The fsdp x tensor split is really there on the 4 devices: some parameter is cut on both,
    # and the carried memory's rows moved from 2 x 2 batch shards to 2.
    assert any("fsdp" in str(x.sharding.spec) and "tensor" in str(x.sharding.spec)
               for x in jax.tree.leaves(restored["params"]))
    assert len(state["memory"].sharding.device_set) == 8 and len(restored["memory"].sharding.device_set) == 4


def _streams_cfg(tmp_path):
    """8 documents of 1-5 pages, one chunk per page: rows are mid-document at most steps."""
    docs = [_doc(i, pages=1 + i % 5, rows=1) for i in range(8)]
    return _cfg(_write_corpus(tmp_path, docs), max_pages=1)


def _ids(batches) -> list[list[tuple[int, int] | None]]:
    """(record, chunk) of each row of each batch; None on padding."""
    return [[(int(r), int(c)) if m else None for r, c, m in zip(b["record_index"], b["chunk_index"], b["example_mask"])]
            for b in batches]


def test_data_streams_resplit_onto_another_process_count(tmp_path):
    """2 -> 1 process: the one takes over the global batch's rows, each with its document and its
    shard, and yields exactly the batches the two would have yielded together (concatenated in
    process order, as the global batch is). 1 -> 2: a row keeps its document, and the shard the
    rows shared is dealt out between the processes: over an epoch every chunk is read once."""
    cfg = _streams_cfg(tmp_path)

    def make(p, n, rows, epochs=None):
        return pipeline.make_train_iterator(cfg, seed=0, local_batch_size=rows, process_index=p, process_count=n,
                                            num_epochs=epochs)

    two = [make(p, 2, 2) for p in range(2)]
    for it in two:
        _take(it, 3)
    states = [json.loads(json.dumps(it.get_state())) for it in two]  # as saved: JSON
    assert any(r[1] > 0 for s in states for r in s["rows"])  # some row is inside a document
    expected = [{k: np.concatenate([a[k], b[k]]) for k in a} for a, b in zip(_take(two[0], 4), _take(two[1], 4))]
    one = make(0, 1, 4)
    one.resplit(states, 0, 1)
    for x, y in zip(expected, _take(one, 4)):  # example_index: a running id per iterator, not per row
        assert _same({k: v for k, v in x.items() if k != "example_index"}, y)
    with pytest.raises(pipeline.DataError, match=r"^data\.batch_size: 8, but the checkpoint's data iterator state "
                                                 r"holds 4 streams"):
        make(0, 1, 8).resplit(states, 0, 1)

    whole = _ids(make(0, 1, 4, epochs=1))
    one = make(0, 1, 4, epochs=1)
    before = _ids(_take(one, 2))
    state = one.get_state()
    halves = [make(p, 2, 2, epochs=1) for p in range(2)]
    for p, it in enumerate(halves):
        it.resplit([state], p, 2)
    after = [_ids(it) for it in halves]
    first = after[0][0] + after[1][0]  # the global rows of the first batch after the resplit
    going_on = [i for i, r in enumerate(state["rows"]) if r[1] > 0]
    assert going_on and all(first[r] == (before[-1][r][0], before[-1][r][1] + 1) for r in going_on)
    chunks = lambda batches: [x for b in batches for x in b if x is not None]  # noqa: E731
    read = chunks(before) + chunks(after[0]) + chunks(after[1])
    assert len(read) == len(set(read)) and set(read) == set(chunks(whole))


@pytest.mark.xdist_group("train")  # with test_train's subprocess runs: one unit, started early (see there)
def test_two_processes_resume_on_one(synth_corpus, tmp_path, jax_cache):
    """2 processes x 2 CPU devices train 4 steps; their checkpoint of step 2 is resumed by 1 process
    of 4 devices (the same data x 4 mesh), which takes over both processes' streams from their
    two data states and ends where the 2 processes ended: the same parameters, carried memory
    and losses, the same data position, the same chunks in every row of the global batch."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    args = ("--config.train.ckpt_every=2", "--config.data.batch_size=4")
    out0, _ = tu.run_processes(2, 2, tu.train_cmd(synth_corpus, straight, 4, *args), tmp_path / "logs", jax_cache)
    assert "mesh {'data': 4, 'fsdp': 1, 'tensor': 1} over 4 devices, 2 processes" in out0  # launch/local.sh's layout
    assert tu.checkpoint_steps(straight) == [2, 4]
    shutil.copytree(straight / "checkpoints" / "2", resumed / "checkpoints" / "2")  # as if stopped after step 2
    r = tu.run(tu.train_cmd(synth_corpus, resumed, 4, *args), devices=4, cache=jax_cache)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "over 4 devices, 1 processes" in r.stderr and "resumed from step 2" in r.stderr
    assert tu.checkpoint_steps(resumed) == [2, 4]

    # Steps 3 and 4 reduce over the same 4 devices, across 2 processes (gloo) in one run and
    # within 1 in the other, so float32 sums may be ordered differently (~1e-7 relative; the
    # losses below agree to 1e-7). Adam's update lr g / (sqrt(v) + eps) amplifies that noise
    # where a gradient is ~0 (attention key biases: the softmax is shift invariant), up to
    # ~3e-5 in one element here, so the parameters are compared as a whole: their difference
    # is ~4e-5 of how far steps 3 and 4 moved them, and the carried memory (no optimizer in
    # between) differs by ~6e-6 of its ~3. Resuming with the two processes' streams swapped
    # gives 6e-2, 0.4 and losses off by 1e-2: the bounds sit 20-4000x from both.
    a, b, at2 = (tu.load_params(wd, step) for wd, step in ((straight, 4), (resumed, 4), (straight, 2)))
    assert a.keys() == b.keys() and "['memory']" in a
    params = [k for k in a if k.startswith("['params']")]
    norm = lambda x: np.sqrt(sum(np.sum(np.square(x[k].astype(np.float64))) for k in params))  # noqa: E731
    assert norm({k: a[k] - b[k] for k in params}) < 1e-3 * norm({k: a[k] - at2[k] for k in params})
    np.testing.assert_allclose(b["['memory']"], a["['memory']"], rtol=0, atol=1e-4)
    losses = [{rec["step"]: rec["loss"] for rec in map(json.loads, (wd / "metrics.jsonl").read_text().splitlines())
               if "loss" in rec} for wd in (straight, resumed)]
    assert sorted(losses[1]) == [3, 4]
    np.testing.assert_allclose([losses[1][3], losses[1][4]], [losses[0][3], losses[0][4]], rtol=1e-5)

    # The data position after step 4, and the chunks each global row read in steps 3 and 4.
    data = demo.get_config("quick").data  # as tu.FAST trains
    data.dir, data.max_steps, data.max_pages = str(synth_corpus), 4, 2
    states = lambda wd, step: checkpoint.data_states(wd / "checkpoints" / str(step) / "data")  # noqa: E731

    def one_process(saved):
        it = pipeline.make_train_iterator(data, seed=0, local_batch_size=4, process_index=0, process_count=1)
        it.resplit(saved, 0, 1)
        return it

    assert len(states(straight, 4)) == 2 and len(states(resumed, 4)) == 1
    assert states(resumed, 4)[0] == one_process(states(straight, 4)).get_state()
    two = [pipeline.make_train_iterator(data, seed=0, local_batch_size=2, process_index=p, process_count=2)
           for p in range(2)]
    rows = [x + y for x, y in zip(_ids(_take(two[0], 4)), _ids(_take(two[1], 4)))]
    assert any(r[1] > 0 for s in states(straight, 2) for r in s["rows"])  # the resume falls inside documents
    assert _ids(_take(one_process(states(resumed, 2)), 2)) == rows[2:]

    # And 2 processes resume from the same checkpoint, each from its own data state, and end
    # bitwise where the uninterrupted 2 processes ended (the same layout and reduction order;
    # the same 4 steps: the straight run's compiled step, read from `jax_cache`).
    again = tmp_path / "again"
    shutil.copytree(straight / "checkpoints" / "2", again / "checkpoints" / "2")
    outs = tu.run_processes(2, 2, tu.train_cmd(synth_corpus, again, 4, *args), tmp_path / "logs_again", jax_cache)
    assert all("resumed from step 2" in out for out in outs)
    assert states(again, 4) == states(straight, 4)
    c = tu.load_params(again, 4)
    assert c.keys() == a.keys()
    for k in a:
        np.testing.assert_array_equal(c[k], a[k], err_msg=k)

"""Training: sharded step equivalence, NaN guard, config errors, multi-process, resume, SIGTERM.

The end-to-end tests run `python -m docjepa.train` (and `launch/local.sh`) in subprocesses
on a corpus made by the real `python -m docjepa.prepare` from synthetic documents.
"""

import functools
import json
import signal
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter
from flax import nnx

import train_utils as tu
from configs import demo
from docjepa import sharding, state as factory, train
from docjepa.data import pipeline
from docjepa.data.record import decode_record, encode_record

# Tests that run the entry points in subprocesses go to one worker as one unit, scheduled ahead
# of single tests (xdist's loadgroup starts the larger units first); the in-process ones spread.
subprocess_group = pytest.mark.xdist_group("train")
# The NaN-guard and SIGTERM / kill -9 runs: a window budget (6 of the 8 slots of a step) and 6
# steps. Their step is compiled once (`jax_cache`): train.steps is the lr schedule's length, a
# constant of the compiled step.
BUDGET_RUN = ("--config.data.window_capacity=0.75",)
BUDGET_STEPS = 6


def _cfg(bank: bool = False):
    """The quick demo config, narrowed; text-bank terms only when the test passes a bank."""
    cfg = demo.get_config("quick")
    if not bank:
        cfg.loss.window_bank_weight = cfg.loss.page_bank_weight = 0.0
    cfg.data.batch_size, cfg.data.max_steps, cfg.data.max_pages = 4, 4, 2
    cfg.optim.warmup_steps = 0
    cfg.model.ttm.memory_size, cfg.model.ttm.num_read, cfg.model.ttm.num_layers = 16, 4, 1
    cfg.model.hiera.overrides.embed_dim = 16  # hiera_tiny_test narrowed: same structure, faster to compile
    return cfg


def _batch(cfg, dim: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    b, s, p = cfg.data.batch_size, cfg.data.max_steps, cfg.data.max_pages
    step_mask = np.ones((b, s), bool)
    step_mask[1, 3:] = False
    page_ids = np.where(step_mask, np.minimum(np.arange(s) // 2, p - 1), -1).astype(np.int32)
    text_ids = rng.integers(0, 6, (b, s)).astype(np.int32)  # repeated ids: multi-positive labels
    return {
        "patches": rng.integers(0, 256, (b, s, 224, 224, 3), dtype=np.uint8),
        "step_mask": step_mask, "page_ids": page_ids,
        "window_box": np.sort(rng.random((b, s, 4)), axis=-1).astype(np.float32)[..., [0, 2, 1, 3]],
        "window_emb": rng.normal(size=(b, s, dim)).astype(np.float32),
        "window_mask": step_mask & (rng.random((b, s)) > 0.2), "window_text_id": text_ids,
        "page_emb": rng.normal(size=(b, p, dim)).astype(np.float32),
        "page_mask": np.ones((b, p), bool), "page_text_id": np.arange(b * p, dtype=np.int32).reshape(b, p),
        "record_index": np.array([0, 0, 1, 2], np.int32)[:b],  # two chunks of one document
        "window_rows": np.concatenate([np.maximum(page_ids, 0)[..., None],
                                       rng.integers(0, 400, (b, s, 1)) + np.array([0, 0, 224, 224])], -1).astype(np.int32),
        "page_index": np.broadcast_to(np.arange(p, dtype=np.int32), (b, p)).copy(),
        "doc_emb": rng.normal(size=(b, dim)).astype(np.float32),
        "doc_mask": np.array([False, True, True, True])[:b],  # row 0's document goes on
        "doc_known": np.ones((b,), bool),                      # every document has a target (running term)
        "reset": np.array([True, False, True, True])[:b],     # row 1 continues a document
    }


def _bank(dim: int, size: int = 24, seed: int = 1) -> dict[str, dict[str, np.ndarray]]:
    """A text bank laid out as `state.device_bank` gives it; some entries share the batch's
    documents and text ids, so every kind of false-negative mask is exercised."""
    rng = np.random.default_rng(seed)
    out = {}
    for level in ("window", "page"):
        emb = rng.normal(size=(size, dim)).astype(np.float32)
        out[level] = {"emb": emb / np.linalg.norm(emb, axis=1, keepdims=True),
                      "text_id": rng.integers(0, 12, size).astype(np.int32), "doc": rng.integers(0, 4, size).astype(np.int32),
                      "page": rng.integers(0, 2, size).astype(np.int32), "valid": np.arange(size) < size - 2}
        if level == "window":
            out[level]["box"] = (rng.integers(0, 400, (size, 1)) + np.array([0, 0, 224, 224])).astype(np.int32)
    return out


def _one_step(cfg, mesh, batch, dim, bank=None, also=None):
    """Init on `mesh`, run one jitted step; (metrics, params before, params after, shardings,
    Adam's first moment after the step = (1 - b1) x the clipped gradient, the carried memory
    after the step) on the host; with `also`, another batch of the same shapes, the metrics of
    the same compiled step on it from the initial state, last.
    Parameters are created in the model's compute dtype when that is float64 (x64 checks)."""
    make_model = functools.partial(factory.build_model, cfg, dim, cfg.seed)
    graphdef, abstract_params = nnx.split(nnx.eval_shape(make_model), nnx.Param)
    tx, schedule = factory.build_optimizer(cfg.optim, 10, factory.decay_mask(abstract_params))
    wide = cfg.model.dtype == "float64"
    state_sh = factory.train_state_shardings(tx, abstract_params, mesh, cfg)

    @functools.partial(jax.jit, out_shardings=state_sh)
    def init():
        model = make_model()
        if wide:
            nnx.update(model, jax.tree.map(lambda x: x.astype(jnp.float64), nnx.state(model, nnx.Param)))
        return factory.init_train_state(model, tx, cfg.data.batch_size)

    widen = lambda t: jax.tree.map(lambda v: v.astype(np.float64) if v.dtype == np.float32 else v, t)  # noqa: E731
    if wide:
        batch, bank, also = widen(batch), widen(bank), widen(also)
    if bank is not None:
        bank = jax.tree.map(lambda v: jax.device_put(v, sharding.batch_sharding(mesh, v.ndim)), bank)
    step = jax.jit(train.make_train_step(graphdef, tx, schedule, cfg, mesh), donate_argnums=0)
    state = init()
    before = jax.device_get(state["params"])
    state, metrics = step(state, sharding.global_batch(batch, mesh), bank)
    mu = optax.tree_utils.tree_get(state["opt"], "mu")
    out = (jax.device_get(metrics), before, jax.device_get(state["params"]), state_sh, jax.device_get(mu),
           jax.device_get(state["memory"]))
    if also is not None:
        out += (jax.device_get(step(init(), sharding.global_batch(also, mesh), bank)[1]),)
    return out


@pytest.mark.long
def test_sharded_step_matches_single_device():
    """(data=2, fsdp=2, tensor=2) over 8 devices == 1 device, in float64; and the same with the
    ring-chunked SigLIP (`loss.chunked`: text blocks passed around the 4 batch shards, no
    device holding the global logits) through the real train step.

    Sharding changes only the order of floating-point reductions (split contractions, psums
    of partial gradients). In float64 that moves a result by ~1e-15 relative per operation,
    ~1e-12 through the whole step; a real sharding bug (a missing psum, a gradient reduced over
    the wrong axis, a dropped batch shard) changes the loss or the gradient by a large fraction
    of itself. The bounds below (1e-9 relative on loss and gradient norm, 1e-10 of each
    tensor's largest element on Adam's first moment, i.e. the gradient; 1e-9 absolute on the
    updated parameters, see below) sit orders of magnitude from both, so they hold on any CPU
    vendor, thread count or XLA version. (In float32 the same comparison differs by ~1e-4 relative in the gradient
    norm, which depends on the CPU's kernels: float32 is checked for running sharded, not
    for equality, by the multi-process tests.)
    """
    cfg, dim = _cfg(bank=True), 32
    cfg.model.dtype = "float64"
    batch, bank = _batch(cfg, dim), _bank(dim)
    with jax.enable_x64(True):
        one = sharding.make_mesh((("data", 1), ("fsdp", 1), ("tensor", 1)), jax.devices()[:1])
        eight = sharding.make_mesh((("data", 2), ("fsdp", 2), ("tensor", 2)))
        m1, _, p1, _, mu1, mem1 = _one_step(cfg, one, batch, dim, bank)
        m8, before, p8, sh8, mu8, mem8 = _one_step(cfg, eight, batch, dim, bank)
        cfg.loss.chunked = True
        m8r, _, p8r, _, mu8r, _ = _one_step(cfg, eight, batch, dim, bank)
    assert m1["loss/window_bank"] > 0 and m1["loss/page_bank"] > 0  # the bank terms take part
    assert p1["window_head"]["proj"]["kernel"].dtype == np.float64 and m1["loss"].dtype == np.float64
    # The 8-device layout really is sharded: some weights are split over fsdp and tensor.
    specs = {str(s.spec) for s in jax.tree.leaves(sh8["params"])}
    assert any("fsdp" in s for s in specs) and any("tensor" in s for s in specs)
    for m in (m8, m8r):
        np.testing.assert_allclose(m["loss"], m1["loss"], rtol=1e-9)
        np.testing.assert_allclose(m["grad_norm"], m1["grad_norm"], rtol=1e-9)
    moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), p1, before)
    assert max(jax.tree.leaves(moved)) > 1e-4  # the step changed the parameters

    def close(a, b):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10 * max(np.abs(b).max(), 1e-3))

    jax.tree.map(close, mu8, mu1)
    jax.tree.map(close, mu8r, mu1)
    # Adam's first update is lr * g / (|g| + eps): where the exact gradient is zero (attention
    # key biases, by the softmax's shift invariance) rounding noise |g| ~ 1e-17 moves a parameter
    # by lr |g| / eps ~ 1e-12, differently per layout. A bug moves it by ~lr = 1e-3.
    for p in (p8, p8r):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-9), p, p1)
    # The streams' carried memory (rows sharded over data x fsdp) is the same computation.
    assert sh8["memory"].spec[0] == ("data", "fsdp") and mem8.shape[:2] == (4, 16)
    np.testing.assert_allclose(mem8, mem1, rtol=0, atol=1e-10)
    # The feature-centring running means are set by the step, not by the gradient.
    assert np.abs(p1["step_center"]["mean"]).max() > 0


@pytest.fixture(scope="module")
def small_step():
    """One compiled train step of `_cfg()` on one device, shared by the tests that run it."""
    cfg, dim = _cfg(), 16
    mesh = sharding.make_mesh((("data", 1), ("fsdp", 1), ("tensor", 1)), jax.devices()[:1])
    make_model = functools.partial(factory.build_model, cfg, dim, cfg.seed)
    graphdef, abstract_params = nnx.split(nnx.eval_shape(make_model), nnx.Param)
    tx, schedule = factory.build_optimizer(cfg.optim, 10, factory.decay_mask(abstract_params))
    step = jax.jit(train.make_train_step(graphdef, tx, schedule, cfg, mesh))
    # Committed to the device like the step's outputs, so the step compiles once for both.
    init = jax.jit(lambda: factory.init_train_state(make_model(), tx, cfg.data.batch_size),
                   out_shardings=jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    return cfg, dim, graphdef, step, init


@pytest.mark.xdist_group("small_step")  # one compile of the shared step
def test_step_carries_each_rows_memory_and_resets_new_documents(small_step):
    """The memory a row ends step t with is the memory it starts step t + 1 with, unless its
    chunk begins a new document (`reset`): then it starts from `memory_init`."""
    cfg, dim, graphdef, step, init = small_step
    first, second = _batch(cfg, dim, seed=1), _batch(cfg, dim, seed=2)  # second: row 1 goes on
    state, _ = step(init(), first)
    carried = np.asarray(state["memory"])
    after, _ = step(state, second)

    @jax.jit
    def memory_after(params, memory, reset):
        out = nnx.merge(graphdef, params)(*(second[k] for k in ("patches", "step_mask", "page_ids", "window_box")),
                                          max_pages=2, memory=memory, reset=reset)
        return out["memory"]

    go_on = np.asarray(memory_after(state["params"], carried, np.zeros(4, bool)))
    fresh = np.asarray(memory_after(state["params"], carried, np.ones(4, bool)))
    got = np.asarray(after["memory"])
    np.testing.assert_allclose(got[1], go_on[1], atol=1e-5)
    np.testing.assert_allclose(got[[0, 2, 3]], fresh[[0, 2, 3]], atol=1e-5)
    assert np.abs(go_on[1] - fresh[1]).max() > 1e-3  # the carry matters
    # A row that waits for room under a window budget (no windows, no reset) keeps its memory.
    wait = {k: v.copy() for k, v in second.items()}
    for k in ("step_mask", "window_mask", "page_mask", "doc_mask", "reset"):
        wait[k][1] = False
    wait["page_ids"][1] = -1
    waited, _ = step(after, wait)
    np.testing.assert_array_equal(np.asarray(waited["memory"])[1], got[1])


def test_stream_groups_carry_each_groups_memory():
    """With `data.stream_groups` = 2 the state holds both groups' memories; batch t reads and
    writes group t % 2's and leaves the other's as it was."""
    cfg, dim = _cfg(), 16
    cfg.data.stream_groups = 2
    mesh = sharding.make_mesh((("data", 1), ("fsdp", 1), ("tensor", 1)), jax.devices()[:1])
    make_model = functools.partial(factory.build_model, cfg, dim, cfg.seed)
    graphdef, abstract_params = nnx.split(nnx.eval_shape(make_model), nnx.Param)
    tx, schedule = factory.build_optimizer(cfg.optim, 10, factory.decay_mask(abstract_params))
    step = jax.jit(train.make_train_step(graphdef, tx, schedule, cfg, mesh))
    state = factory.init_train_state(make_model(), tx, 4, groups=2)
    assert state["memory"].shape[:2] == (4, 2)
    init = np.asarray(state["memory"])
    batches = [_batch(cfg, dim, seed=s) for s in (1, 2, 3)]
    batches[2]["reset"][:] = False  # group 0's streams go on with their documents

    @jax.jit
    def memory_after(params, batch, memory):
        return nnx.merge(graphdef, params)(*(batch[k] for k in ("patches", "step_mask", "page_ids", "window_box")),
                                           max_pages=2, memory=memory, reset=batch["reset"])["memory"]

    states = [state]
    for b in batches:
        states.append(step(states[-1], b)[0])
    mems = [np.asarray(s["memory"]) for s in states]
    np.testing.assert_array_equal(mems[1][:, 1], init[:, 1])  # step 0: group 1 untouched
    np.testing.assert_array_equal(mems[2][:, 0], mems[1][:, 0])  # step 1: group 0 untouched
    np.testing.assert_allclose(mems[2][:, 1], memory_after(states[1]["params"], batches[1], init[:, 1]), atol=1e-5)
    np.testing.assert_allclose(mems[3][:, 0], memory_after(states[2]["params"], batches[2], mems[1][:, 0]), atol=1e-5)
    assert np.abs(mems[3][:, 0] - memory_after(states[2]["params"], batches[2], init[:, 0])).max() > 1e-3


@pytest.mark.xdist_group("small_step")  # one compile of the shared step
def test_nonfinite_step_is_skipped(small_step):
    cfg, dim, _, step, init = small_step
    batch = _batch(cfg, dim)
    state, _ = step(init(), _batch(cfg, dim, seed=5))  # a carried memory that must survive too
    batch["window_emb"][0, 0, 0] = np.nan
    batch["window_mask"][0, 0] = True
    before = jax.device_get(state)
    after, metrics = step(state, batch)
    assert metrics["finite"] == 0.0 and not np.isfinite(metrics["loss"])
    after = jax.device_get(after)
    assert int(after["step"]) == int(before["step"]) + 1
    jax.tree.map(np.testing.assert_array_equal, {k: after[k] for k in ("params", "opt", "memory")},
                 {k: before[k] for k in ("params", "opt", "memory")})


@subprocess_group
def test_bad_config_fails_before_compiling(synth_corpus, tmp_path):
    r = tu.run(tu.train_cmd(synth_corpus, tmp_path / "w", 2, "--config.data.batch_size=0"))
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1] == "error: config.data.batch_size: must be a positive integer (got 0)"
    assert not (tmp_path / "w" / "checkpoints").exists()
    r = tu.run(tu.train_cmd(tmp_path / "missing", tmp_path / "w", 2))
    assert r.returncode != 0 and "missing: data directory does not exist" in r.stderr.strip().splitlines()[-1]


def _poison(src, dst):
    """Copy a prepared corpus with every window target set to NaN (corrupt data)."""
    dst.mkdir()
    for f in src.iterdir():
        if not f.name.endswith(".array_record"):
            (dst / f.name).write_bytes(f.read_bytes())
            continue
        reader = ArrayRecordReader(str(f))
        blobs = reader.read_all()
        reader.close()
        writer = ArrayRecordWriter(str(dst / f.name), "group_size:1")
        for blob in blobs:
            rec = decode_record(blob)
            rec["window_emb"] = np.full_like(rec["window_emb"], np.nan)
            writer.write(encode_record(rec))
        writer.close()
    return dst


@subprocess_group
def test_nan_guard_stops_after_k_in_a_row(synth_corpus, tmp_path, jax_cache):
    bad = _poison(synth_corpus, tmp_path / "bad")
    wd = tmp_path / "w"
    r = tu.run(tu.train_cmd(bad, wd, BUDGET_STEPS, *BUDGET_RUN, "--config.train.max_nonfinite=3",
                            "--config.train.ckpt_every=1"), cache=jax_cache)
    assert r.returncode != 0
    assert "3 consecutive non-finite steps" in r.stderr.strip().splitlines()[-1]
    assert tu.checkpoint_steps(wd)  # saved along the way ...
    for step in tu.checkpoint_steps(wd):  # ... and never from a non-finite state
        assert all(np.isfinite(v).all() for v in tu.load_params(wd, step).values())


@subprocess_group
def test_sigterm_and_kill9_resume_bitwise(synth_corpus, tmp_path, jax_cache):
    """A run stopped by SIGTERM saves its current step and exits 0; resumed (profiling its first
    two steps), then killed with SIGKILL between checkpoints and resumed again, it ends bitwise
    where the uninterrupted run ends. Under the window budget rows wait and Hiera sees packed
    windows, and the resumes still restore the streams' turn exactly."""
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    cmd = lambda wd, every, *extra: tu.train_cmd(synth_corpus, wd, BUDGET_STEPS, *BUDGET_RUN,  # noqa: E731
                                                 f"--config.train.ckpt_every={every}", *extra)
    r = tu.run(cmd(straight, 2), cache=jax_cache)
    assert r.returncode == 0, r.stderr[-3000:]
    start = lambda *args: subprocess.Popen(cmd(stopped, *args), cwd=tu.ROOT, env=tu.env(cache=jax_cache),  # noqa: E731
                                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    proc = start(1000)  # no periodic checkpoint: only SIGTERM saves
    tu.wait_for_step(stopped, 1, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    steps = tu.checkpoint_steps(stopped)
    assert len(steps) == 1 and steps[0] < 4 and f"SIGTERM: saving step {steps[0]}" in err, err[-3000:]

    first = steps[0] + 1
    proc = start(2, f"--config.train.profile_steps=({first}, {first + 1})")
    tu.wait_for_step(stopped, 5, proc)
    proc.kill()  # SIGKILL between the checkpoints of steps 4 and 6
    _, err = proc.communicate(timeout=300)
    assert f"resumed from step {steps[0]}" in err, err[-3000:]
    assert 6 not in tu.checkpoint_steps(stopped)
    # The resumed run profiled its first two steps and logged the input stall.
    assert list((stopped / "profile").rglob("*.xplane.pb")), "no profiler trace written"
    records = [json.loads(line) for line in (stopped / "metrics.jsonl").read_text().splitlines()]
    waits = [rec["data_wait_s"] for rec in records if rec.get("step") == first + 1 and "data_wait_s" in rec]
    assert waits and 0 < waits[0] < 60

    r = tu.run(cmd(stopped, 2), cache=jax_cache)
    assert r.returncode == 0 and "resumed from step" in r.stderr, r.stderr[-3000:]
    assert "window budget: Hiera encodes 6 windows per group of 2 rows" in r.stderr
    a, b = tu.load_params(straight, BUDGET_STEPS), tu.load_params(stopped, BUDGET_STEPS)
    assert a.keys() == b.keys() and "['memory']" in a  # parameters and the carried TTM memory
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # The resume point fell inside a document: some row's next chunk continues it, so the
    # memory restored from step 4 was carried on, not reset.
    data = demo.get_config("quick").data  # as tu.FAST trains
    data.dir, data.max_steps, data.max_pages = str(synth_corpus), 4, 2
    it = pipeline.make_train_iterator(data, seed=0, local_batch_size=2, process_index=0, process_count=1,
                                      budget=pipeline.window_budget(0.75, 2, 4))
    it.set_state(tu.data_state(stopped, 4))
    assert not next(it)["reset"].all()


def test_preemption_agrees_across_processes_every_n_steps_only(monkeypatch):
    """With several processes the flag is all-gathered (a barrier) on every Nth step only; any
    process's SIGTERM stops all of them there. One process needs no all-gather."""
    from docjepa import checkpoint

    gathers = []

    def allgather(flag):  # this host saw nothing, another host got the SIGTERM
        gathers.append(int(flag))
        return np.array([int(flag), 1])

    monkeypatch.setattr(checkpoint.multihost_utils, "process_allgather", allgather)
    preempt = checkpoint.Preemption(check_every=4)
    try:
        monkeypatch.setattr(checkpoint.jax, "process_count", lambda: 2)
        assert [s for s in range(1, 9) if preempt.requested(s)] == [4, 8]
        assert gathers == [0, 0]
        monkeypatch.setattr(checkpoint.jax, "process_count", lambda: 1)
        assert not preempt.requested(1)
        signal.raise_signal(signal.SIGTERM)
        assert preempt.requested(1) and len(gathers) == 2
    finally:
        preempt.restore_handler()


@pytest.mark.long
def test_grad_accumulation_keeps_the_whole_batch_negatives():
    """grad_accum=2 (GradCache) is the step of the whole batch: the same loss over all its
    negatives (window, page, document and text-bank terms; the pseudo-layout term too), the
    same gradient, update and carried memory, as grad_accum=1. Centring off: it is the one
    per-microbatch statistic."""
    cfg, dim = _cfg(bank=True), 16
    cfg.model.center_features = False
    cfg.loss.layout_weight, cfg.data.layout_grid = 1.0, 28
    batch, bank = _batch(cfg, dim, seed=3), _bank(dim)
    b, s = batch["step_mask"].shape
    batch["layout_mask"] = (np.random.default_rng(4).random((b, s, 28, 28)) > 0.5).astype(np.uint8)
    # Microbatch 0 alone: rows 2 and 3 without windows, pages or a document, so that rows 0 and 1
    # see only each other's negatives (and the bank's).
    alone = {k: v.copy() for k, v in batch.items()}
    for k in ("step_mask", "window_mask", "page_mask", "doc_mask"):
        alone[k][2:] = False
    alone["page_ids"][2:] = -1
    mesh = sharding.make_mesh((("data", 1), ("fsdp", 1), ("tensor", 1)), jax.devices()[:1])
    whole = _one_step(cfg, mesh, batch, dim, bank, also=alone)
    cfg.optim.grad_accum = 2
    accum = _one_step(cfg, mesh, batch, dim, bank)
    for key in ("loss", "loss/window", "loss/page", "loss/doc", "loss/window_bank", "loss/layout", "grad_norm"):
        np.testing.assert_allclose(accum[0][key], whole[0][key], rtol=2e-5, err_msg=key)
    # Adam's first moment (the clipped gradient) and the carried memory. Not the parameters:
    # Adam's first update is lr x g / (|g| + eps), which float noise flips where g is near 0.
    for i in (4, 5):  # tolerance: float noise relative to the largest entry of the whole tree
        scale = max(np.abs(x).max() for x in jax.tree.leaves(whole[i]))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5 * scale), accum[i], whole[i])
    # A microbatch alone would see half the negatives: a different loss.
    assert abs(float(whole[6]["loss/window"]) - float(whole[0]["loss/window"])) > 1e-3


def test_bfloat16_compute_keeps_float32_params():
    cfg, dim = _cfg(), 16
    cfg.model.dtype = "bfloat16"
    mesh = sharding.make_mesh((("data", 1), ("fsdp", 1), ("tensor", 1)), jax.devices()[:1])
    metrics, _, after, *_ = _one_step(cfg, mesh, _batch(cfg, dim), dim)
    assert metrics["finite"] == 1.0 and np.isfinite(metrics["loss"])
    assert {a.dtype for a in jax.tree.leaves(after)} == {np.dtype("float32")}

"""Evaluation restores the parameters only, defaults to the run's own config.json, and says in
one line what is wrong with a workdir or checkpoint."""

import shutil
import sys

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

import train_utils as tu
from docjepa import checkpoint, run_config, sharding, state as factory
from docjepa.data import pipeline

pytestmark = pytest.mark.xdist_group("eval")  # with test_eval.py: the eval runs share `jax_cache`


@pytest.fixture(scope="module")
def trained(stage1_run):
    """A 2-step run of the tiny TTM model (the test run's shared one, not written to): its state
    has params, Adam moments and memory."""
    return stage1_run


def _rewrite(src, dst, *, memory: bool, optimizer: str):
    """A copy of `src` whose step-2 state lacks the carried memory or holds another optimizer's
    state (SGD with momentum instead of Adam), as another run's checkpoint could."""
    state = ocp.StandardCheckpointer().restore(src / "checkpoints" / "2" / "state")
    assert "memory" in state and "mu" in str(jax.tree_util.tree_structure(state["opt"]))
    if not memory:
        del state["memory"]
    if optimizer == "sgd":
        state["opt"] = optax.sgd(0.1, momentum=0.9).init(state["params"])
    dst.mkdir(parents=True)
    shutil.copy(src / "config.json", dst / "config.json")
    ckpt = checkpoint.Checkpointer(dst, keep=1, async_save=False)
    ckpt.save(2, state, None)
    ckpt.close()
    return dst


def _abstract_params(workdir):
    cfg = run_config.load(workdir)
    embed_dim = factory.embed_dim_of(cfg, pipeline.read_manifest(cfg.data.dir))
    _, params = nnx.split(nnx.eval_shape(lambda: factory.build_model(cfg, embed_dim, cfg.seed)), nnx.Param)
    mesh = sharding.make_mesh(cfg.mesh, jax.devices()[:1])
    return checkpoint.abstract_with_shardings(nnx.to_pure_dict(params),
                                              nnx.to_pure_dict(sharding.state_shardings(params, mesh)))


def _flat(tree):
    """{"encoder/blocks/0/...": array}: orbax restores list indices as string keys, nnx as ints."""
    return {jax.tree_util.keystr(k, simple=True, separator="/"): np.asarray(v)
            for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.mark.parametrize("memory,optimizer", [(False, "adam"), (True, "sgd")])
def test_params_only_restore_ignores_memory_and_optimizer(trained, tmp_path, memory, optimizer):
    wd = _rewrite(trained, tmp_path / "w", memory=memory, optimizer=optimizer)
    params, step = checkpoint.restore_params(wd, None, _abstract_params(wd))
    assert step == 2
    want = _flat(ocp.StandardCheckpointer().restore(trained / "checkpoints" / "2" / "state")["params"])
    got = _flat(params)
    assert got.keys() == want.keys()
    for k, v in got.items():
        np.testing.assert_array_equal(v, want[k], err_msg=k)


def _eval(workdir, *extra, cache=None):
    cmd = [sys.executable, "-m", "docjepa.eval", f"--workdir={workdir}", "--random_init=false", *extra,
           "--config.evals.names=('retrieval',)", "--config.evals.max_examples=4"]
    return tu.run(cmd, cache=cache)


def _one_line_error(r, code: int) -> str:
    assert r.returncode == code, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error: "), r.stderr[-3000:]
    return line


def test_eval_defaults_to_the_runs_config_json(trained, tmp_path, jax_cache):
    """No --config: the run's config.json, with overrides on top; the checkpoint has neither
    the carried memory nor Adam's moments."""
    wd = _rewrite(trained, tmp_path / "w", memory=False, optimizer="sgd")
    r = _eval(wd, cache=jax_cache)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (wd / "eval" / "step_2.json").exists() and "| retrieval/window/i2t_r1 |" in r.stdout


def test_eval_missing_step_or_workdir_is_a_usage_error(trained, synth_corpus, tmp_path):
    line = _one_line_error(_eval(trained, "--step=7"), 2)
    assert line == f"error: {trained}: no checkpoint at step 7; steps saved: 2"
    line = _one_line_error(_eval(tmp_path / "none"), 2)
    assert f"{tmp_path / 'none'}/config.json does not exist" in line
    line = _one_line_error(_eval(tmp_path / "none", "--config=configs/demo.py:quick",
                                 f"--config.data.dir={synth_corpus}"), 2)
    assert line.startswith(f"error: {tmp_path / 'none'}: no checkpoints/")


def test_eval_mismatched_or_corrupt_checkpoint_is_one_line(trained, tmp_path):
    line = _one_line_error(_eval(trained, "--config.model.ttm.memory_size=8"), 1)
    assert f"{trained}: checkpoint step 2: params/ttm/memory_init has shape (16," in line and "(8," in line
    corrupt = tmp_path / "corrupt"
    shutil.copytree(trained, corrupt)
    (corrupt / "checkpoints" / "2" / "state" / "_METADATA").write_bytes(b"")  # as a copy cut short leaves it
    line = _one_line_error(_eval(corrupt), 1)
    assert f"{corrupt}: checkpoint step 2 is unreadable" in line

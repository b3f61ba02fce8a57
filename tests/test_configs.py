"""Configs load, validate and build; the cluster launchers are well-formed.

Models are built abstractly (nnx.eval_shape): production sizes cost no memory here.
"""

from __future__ import annotations

import functools
import json
import math
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jax
import pytest
from absl import flags
from flax import nnx
from ml_collections import config_flags

import train_utils
from configs import common, demo
from docjepa import run_config, sharding, state as factory, validate
from docjepa.models import hiera
from test_hiera import META_PARAMS

ROOT = train_utils.ROOT
# (file, arg): every config a person can launch. scaling.py is tested with its own family.
CONFIGS = [
    ("configs/demo.py", None), ("configs/demo.py", "quick"),
    ("configs/hiera_b_ttm.py", None), ("configs/hiera_b_ttm.py", "gpu1"), ("configs/hiera_b_ttm.py", "smoke"),
    ("configs/hiera_l_ttm.py", None), ("configs/hiera_l_ttm.py", "gpu1"), ("configs/hiera_l_ttm.py", "smoke"),
]
# Stage 2's configs (python -m docjepa.finetune), checked by its own validation.
STAGE2 = [("configs/stage2_demo.py", None), ("configs/stage2_demo.py", "quick")]
NOT_LAUNCHABLE = {"__init__.py", "common.py", "scaling.py"}
# Text widths of the targets each production config is meant for (roberta-base / roberta-large).
PRODUCTION = {"configs/hiera_b_ttm.py": ("hiera_base_224", 768), "configs/hiera_l_ttm.py": ("hiera_large_224", 1024)}


def load(path: str, arg: str | None):
    """The config as `--config path[:arg]` gives it to docjepa.train (config_flags)."""
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, flag_values=fv)
    fv(["prog", f"--config={ROOT / path}" + (f":{arg}" if arg else "")])
    return fv.config


def test_every_config_file_is_covered():
    files = {p.name for p in (ROOT / "configs").glob("*.py")} - NOT_LAUNCHABLE
    assert files == {Path(p).name for p, _ in CONFIGS + STAGE2}


@pytest.mark.parametrize("path,arg", CONFIGS)
def test_config_loads_and_validates(path, arg):
    cfg = load(path, arg)
    for section in ("prepare", "train", "eval"):
        validate.check(cfg, section)
    assert cfg.data.batch_size % cfg.optim.grad_accum == 0


@pytest.mark.parametrize("path,arg", STAGE2)
def test_stage2_config_loads_and_validates(path, arg):
    from docjepa import finetune

    finetune.check(load(path, arg))


def test_bench_loader_gives_the_same_configs():
    """bench/ scripts load configs with bench.common.load_config; it must give what
    config_flags gives, also for scaling.py, whose module defines dataclasses."""
    from bench import common

    for path, arg in CONFIGS:
        spec = str(ROOT / path) + (f":{arg}" if arg else "")
        assert common.load_config(spec).to_dict() == load(path, arg).to_dict(), spec
    assert common.load_config(str(ROOT / "configs/scaling.py")).model.hiera.name


def test_unknown_variant_is_rejected():
    with pytest.raises(flags.IllegalFlagValueError, match="not one of"):
        load("configs/hiera_b_ttm.py", "gpu8")


def test_variants_fit_one_device():
    for path in PRODUCTION:
        for arg in ("gpu1", "smoke"):
            mesh = sharding.make_mesh(load(path, arg).mesh, jax.devices()[:1])
            assert mesh.size == 1


@pytest.mark.parametrize("path", sorted(PRODUCTION))
def test_production_model_sizes(path):
    name, text_dim = PRODUCTION[path]
    cfg = load(path, None)
    assert cfg.model.hiera.name == name and cfg.model.dtype == "bfloat16" and cfg.model.hiera.remat
    assert cfg.loss.chunked and cfg.data.batch_size * cfg.data.max_steps >= 16384
    assert (cfg.train.ckpt_every, cfg.train.eval_every) == (1000, 5000)
    model = nnx.eval_shape(functools.partial(factory.build_model, cfg, text_dim, cfg.seed))
    assert hiera.param_count(model.encoder) == META_PARAMS[name]
    width = model.encoder.out_dim
    assert model.ttm.memory_init.shape == (96, width) and width % cfg.model.ttm.num_heads == 0
    assert model.window_head.proj.kernel.shape == (width, text_dim)
    # Encoder + a 2-layer TTM at the encoder's width (~2 x 12 x width^2) + three heads.
    extra = hiera.param_count(model) - META_PARAMS[name]
    assert 24 * width**2 < extra < 26 * width**2 + 3 * width * (text_dim + 4)


def test_large_config_shards_state_over_fsdp():
    """hiera_l_ttm's mesh on 8 devices: parameters and Adam moments are split ~8 ways."""
    cfg = load("configs/hiera_l_ttm.py", None)
    mesh = sharding.make_mesh(cfg.mesh)
    assert dict(mesh.shape) == {"data": 1, "fsdp": 8, "tensor": 1}
    _, params = nnx.split(nnx.eval_shape(functools.partial(factory.build_model, cfg, 1024, 0)), nnx.Param)
    tx, _ = factory.build_optimizer(cfg.optim, cfg.train.steps, factory.decay_mask(params))
    shardings = factory.train_state_shardings(tx, params, mesh, cfg)
    abstract = jax.eval_shape(tx.init, nnx.to_pure_dict(params))
    state = {"params": nnx.to_pure_dict(params), "opt": abstract}

    def local_bytes(x, s) -> int:
        return math.prod(s.shard_shape(x.shape)) * x.dtype.itemsize

    total = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
    local = sum(jax.tree.leaves(jax.tree.map(local_bytes, state, {k: shardings[k] for k in state})))
    assert total > 2.9e9                      # params + two Adam moments, fp32, 248M parameters
    assert local < 1.05 * total / 8


# ------------------------------------------------------------------------------------ launchers

def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "launch").iterdir()))
def test_launch_scripts_parse(script):
    result = run_script("bash", "-n", f"launch/{script}")
    assert result.returncode == 0, result.stderr


def test_tpu_pod_dry_run_prints_one_ssh_command():
    extra = "--config.model.ttm.memory_size=64", "--config.data.dir=gs://b/data with space"
    result = run_script("launch/tpu_pod.sh", "--dry-run", "my-tpu", "us-east5-a", "configs/hiera_b_ttm.py",
                        "gs://b/runs/b", *extra)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    argv = shlex.split(lines[0])
    assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-tpu"]
    assert "--worker=all" in argv and "--zone=us-east5-a" in argv
    remote = next(a for a in argv if a.startswith("--command=")).removeprefix("--command=")
    assert shlex.split(remote)[:3] == ["cd", "~/docjepa", "&&"]
    assert shlex.split(remote)[3:] == ["PYTHONPATH=.", "DOCJEPA_DISTRIBUTED=auto", ".venv/bin/python", "-m", "docjepa.train", "--config",
                                       "configs/hiera_b_ttm.py", "--workdir", "gs://b/runs/b", *extra]


def test_tpu_pod_setup_installs_on_all_workers_first():
    result = run_script("launch/tpu_pod.sh", "--dry-run", "--setup", "--repo", "https://example.com/docjepa.git",
                        "t", "z", "configs/demo.py:quick", "/mnt/shared/run")
    assert result.returncode == 0, result.stderr
    setup, launch = result.stdout.strip().splitlines()
    assert "--worker=all" in setup and "jax\\[tpu\\]" in setup and "requirements.txt" in setup
    assert "docjepa.train" in launch and "configs/demo.py:quick" in launch


@pytest.mark.parametrize("args,message", [
    (("t", "z", "configs/demo.py"), "usage"),
    (("t", "z", "configs/missing.py", "gs://b/r"), "not found"),
    (("t", "z", "configs/demo.py", "runs/local"), "shared"),
    (("--setup", "t", "z", "configs/demo.py", "gs://b/r"), "--repo"),
])
def test_tpu_pod_rejects_bad_arguments(args, message):
    result = run_script("env", "-u", "DOCJEPA_REPO", "launch/tpu_pod.sh", "--dry-run", *args)
    assert result.returncode == 2 and message in result.stderr


def test_slurm_script_runs_train_with_requeue():
    script = (ROOT / "launch/slurm_gpu.sbatch").read_text()
    assert re.search(r"^srun .*\\\n\s*\.venv/bin/python -m docjepa\.train --config \"\$CONFIG\" --workdir \"\$WORKDIR\"",
                     script, re.M)
    for line in ("#SBATCH --requeue", "#SBATCH --signal=B:USR1@", "#SBATCH --ntasks-per-node=1"):
        assert line in script
    result = run_script("bash", "launch/slurm_gpu.sbatch")
    assert result.returncode == 2 and "usage" in result.stderr


def test_slurm_xla_flags_exist_in_installed_xla():
    """XLA aborts on unknown XLA_FLAGS; every flag the script sets must parse here."""
    xla_flags = re.findall(r"--xla_\w+=[\w.]+", (ROOT / "launch/slurm_gpu.sbatch").read_text())
    assert len(xla_flags) >= 3
    check = [sys.executable, "-c", "import jax; jax.numpy.zeros(1).block_until_ready()"]
    env = train_utils.env()
    for flag in xla_flags + ["--xla_gpu_no_such_flag=true"]:
        env["XLA_FLAGS"] = flag
        ok = subprocess.run(check, env=env, capture_output=True, timeout=120).returncode == 0
        assert ok == ("no_such" not in flag), flag


def test_saved_config_of_an_older_run_gets_new_fields_defaults(tmp_path):
    """A workdir's config.json written before a field existed loads with that field's default
    (and keeps every field it saved), so such runs still evaluate."""
    saved = demo.get_config(None).to_dict()
    del saved["evals"]["max_steps"], saved["loss"]["max_negative_cosine"]
    saved["optim"]["lr"] = 0.123
    (tmp_path / "config.json").write_text(json.dumps(saved, default=list))
    cfg = run_config.load(tmp_path)
    defaults = common.base()
    assert cfg.evals.max_steps == defaults.evals.max_steps
    assert cfg.loss.max_negative_cosine == defaults.loss.max_negative_cosine
    assert cfg.optim.lr == 0.123 and cfg.data.batch_size == 60
    for section in ("train", "eval"):
        validate.check(cfg, section)

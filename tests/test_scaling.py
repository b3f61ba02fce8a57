"""Scaling studies: config args, the grid, the data subsets, the power-law fit, the CLI end to end."""

import json
import sys

import grain
import jax
import numpy as np
import pytest
from flax import nnx

import train_utils
from configs import scaling as cfg_scaling
from docjepa import metrics, scaling, state as factory
from docjepa.data import pipeline
from docjepa.models import hiera

ROOT = train_utils.ROOT


def test_config_args():
    c = cfg_scaling.get_config("size=l,steps=7,data=3,cpu,lr=0.01")
    size = cfg_scaling.CPU_SIZES["l"]
    assert c.model.hiera.overrides.to_dict() == {"embed_dim": size.embed_dim, "num_heads": size.num_heads,
                                                 "stages": size.stages}
    assert (c.model.ttm.memory_size, c.model.ttm.num_read, c.model.ttm.dim) == (size.memory_size, size.num_read,
                                                                                size.ttm_dim)
    assert (c.train.steps, c.scaling.train_docs, c.optim.lr, c.model.dtype) == (7, 3, 0.01, "float32")
    big = cfg_scaling.get_config("size=xl")
    assert big.model.hiera.overrides.embed_dim == 144 and big.model.dtype == "bfloat16" and not big.scaling.cpu
    assert cfg_scaling.get_config("cpu=false,size=s").model.hiera.overrides.embed_dim == 64


@pytest.mark.parametrize("arg, message", [
    ("foo=1", "unknown key 'foo'"),
    ("size=xxl", "size='xxl'; choose one of"),
    ("steps=ten", "steps='ten': expected int"),
    ("steps", "'steps' needs a value"),
    ("steps=-1", "steps=-1 must be >= 0"),
    ("size=xs+s", "one value per run"),
    ("cpu=maybe", "cpu='maybe': expected bool"),
])
def test_config_bad_args(arg, message):
    with pytest.raises(ValueError, match=message.replace("+", r"\+")):
        cfg_scaling.get_config(arg)


def test_sizes_build_and_grow():
    """Every CPU size builds through hiera.create's overrides, each larger than the one before;
    the accelerator sizes are valid Hiera configs (building them on CPU would take long)."""
    counts = []
    for name, size in cfg_scaling.CPU_SIZES.items():
        c = cfg_scaling.get_config(f"size={name},cpu")
        model = nnx.eval_shape(lambda: factory.build_model(c, 384, 0))
        assert model.encoder.out_dim == 8 * size.embed_dim  # three doublings
        counts.append(sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param))))
    assert counts == sorted(counts) and len(set(counts)) == len(counts), counts
    for name in cfg_scaling.SIZES:
        c = cfg_scaling.get_config(f"size={name}")
        hiera.HieraConfig(**c.model.hiera.overrides.to_dict())  # raises on an invalid size
        assert c.model.ttm.dim % c.model.ttm.num_heads == 0


def test_sweep_grid():
    assert [p["size"] for p in cfg_scaling.sweep("cpu")] == list(cfg_scaling.CPU_SIZES)
    assert [p["size"] for p in cfg_scaling.sweep(None)] == list(cfg_scaling.SIZES)
    grid = cfg_scaling.sweep("size=xs+s,steps=10+20,data=5,cpu")
    assert [(p["size"], p["steps"]) for p in grid] == [("xs", 10), ("xs", 20), ("s", 10), ("s", 20)]
    assert {cfg_scaling.format_arg(p) for p in grid} >= {"size=xs,steps=10,data=5,cpu"}
    for p in grid:
        assert cfg_scaling.parse(cfg_scaling.format_arg(p)) == {**cfg_scaling.parse(None), **p}
    with pytest.raises(ValueError, match="size='xxl'"):
        cfg_scaling.sweep("size=xs+xxl")


def test_plan_and_subset(tmp_path, synth_corpus):
    _, points = scaling.plan("configs/scaling.py:size=xs+s,data=3+0,cpu", tmp_path, str(synth_corpus))
    assert [p.name for p in points] == ["size-xs_data-3_cpu", "size-xs_data-0_cpu", "size-s_data-3_cpu",
                                        "size-s_data-0_cpu"]
    assert points[1].data_dir == str(synth_corpus) and points[0].workdir == tmp_path / "runs" / points[0].name
    subset = points[0].data_dir
    assert subset == points[2].data_dir and subset.startswith(str(tmp_path / "data"))
    scaling.prepare_data(points, str(synth_corpus))

    def records(d, split):
        m = pipeline.read_manifest(d)
        return list(grain.sources.ArrayRecordDataSource([f"{d}/{f}" for f in m["splits"][split]["files"]]))

    manifest = pipeline.read_manifest(subset)
    assert manifest["splits"]["train"]["documents"] == 3
    assert records(subset, "train") == records(str(synth_corpus), "train")[:3]
    for split in set(manifest["splits"]) - {"train"}:
        assert records(subset, split) == records(str(synth_corpus), split)
    with pytest.raises(ValueError, match="has only"):
        scaling.write_subset(str(synth_corpus), str(tmp_path / "too_many"), 10_000)


def test_power_law_fit_recovers_parameters():
    c = np.geomspace(1e12, 1e18, 8)
    fit = scaling.fit_power_law(c, scaling.power_law(c, 2e3, 0.2, 1.5))
    assert fit["method"] == "curve_fit" and fit["points"] == 8
    np.testing.assert_allclose([fit["a"], fit["b"], fit["c"]], [2e3, 0.2, 1.5], rtol=1e-3)
    # Too few points for three parameters: a straight line in log-log space (c = 0).
    line = scaling.fit_power_law(c[:3], scaling.power_law(c[:3], 50.0, 0.1, 0.0))
    assert line["method"] == "loglinear"
    np.testing.assert_allclose([line["a"], line["b"], line["c"]], [50.0, 0.1, 0.0], rtol=1e-6)
    with pytest.raises(ValueError, match="need >= 2 points"):
        scaling.fit_power_law([1e12], [1.0])


def _scaling(*args):
    return train_utils.run([sys.executable, "-m", "docjepa.scaling", *args], timeout=600)


def test_print_mode(tmp_path, synth_corpus):
    out = _scaling("--sweep", "configs/scaling.py:size=xs+s,steps=3,cpu", "--out", str(tmp_path),
                   "--data", str(synth_corpus), "--mode", "print")
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line for line in out.stdout.splitlines() if not line.startswith("#")]
    assert len(lines) == 4, out.stdout
    for line, (module, size) in zip(lines, [("train", "xs"), ("eval", "xs"), ("train", "s"), ("eval", "s")]):
        assert line.startswith(f"python -m docjepa.{module} --config configs/scaling.py:size={size},steps=3,cpu ")
        assert f"--workdir={tmp_path}/runs/size-{size}_steps-3_cpu" in line
        assert f"--config.data.dir={synth_corpus}" in line
    assert "--random_init=false" in lines[1] and "--mode fit" in out.stdout.splitlines()[-1]
    assert not (tmp_path / "runs").exists()  # printing runs nothing

    slurm = _scaling("--sweep", "configs/scaling.py:size=xs,cpu", "--out", str(tmp_path), "--data", str(synth_corpus),
                     "--mode", "print", "--launcher", "slurm")
    assert (f"sbatch launch/slurm_gpu.sbatch configs/scaling.py:size=xs,cpu {tmp_path}/runs/size-xs_cpu "
            f"--config.data.dir={synth_corpus}") in slurm.stdout.splitlines(), slurm.stdout

    bad = _scaling("--sweep", "configs/scaling.py:foo=1", "--out", str(tmp_path), "--mode", "print")
    assert bad.returncode != 0 and "error: configs/scaling.py: unknown key 'foo'" in bad.stderr


@pytest.mark.long
def test_local_sweep_end_to_end(tmp_path, synth_corpus, jax_cache):
    """Two sizes trained and evaluated for real, fitted; a second call finds them finished."""
    args = ["--sweep", "configs/scaling.py:size=xs+s,steps=2,batch=2,cpu", "--out", str(tmp_path),
            "--data", str(synth_corpus)]
    cmd = [sys.executable, "-m", "docjepa.scaling", *args]
    first = train_utils.run(cmd, cache=jax_cache, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    result = json.loads((tmp_path / "scaling.json").read_text())
    assert [p["name"] for p in result["points"]] == ["size-xs_steps-2_batch-2_cpu", "size-s_steps-2_batch-2_cpu"]
    for p in result["points"]:
        run = tmp_path / "runs" / p["name"]
        flops = next(r for r in metrics.read_jsonl(run / "metrics.jsonl") if "flops_per_device_step" in r)
        assert p["compute"] == flops["flops_per_device_step"] * 2 and p["devices"] == 1
        ev = json.loads((run / "eval" / "step_2.json").read_text())
        assert p["val/loss"] == ev["val/loss"] and p["retrieval/window/i2t_err1"] == 1 - ev["retrieval/window/i2t_r1"]
    assert result["points"][0]["params"] < result["points"][1]["params"]
    assert set(result["fits"]) == {"val/loss", "retrieval/window/i2t_err1"}
    assert all(f["method"] == "loglinear" and f["points"] == 2 for f in result["fits"].values())
    assert (tmp_path / "scaling.png").stat().st_size > 0 and "val/loss: " in first.stdout

    again = train_utils.run(cmd, cache=jax_cache, timeout=600)
    assert again.returncode == 0 and "2 of 2 points already finished" in again.stdout
    assert "docjepa.train" not in again.stdout

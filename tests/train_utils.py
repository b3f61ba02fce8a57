"""Helpers for tests that run the real entry points in subprocesses on a tiny corpus."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# A small, fast training setup: 2 examples of 4 patches per step, tiny Hiera, no in-train eval.
FAST = [
    "--config", "configs/demo.py:quick",
    "--config.data.batch_size=2", "--config.data.max_steps=4", "--config.data.max_pages=2",
    "--config.train.log_every=1", "--config.evals.in_train=()", "--config.optim.warmup_steps=0",
    "--config.model.ttm.memory_size=16", "--config.model.ttm.num_read=4", "--config.model.ttm.num_layers=1",
]


def env(devices: int = 1, cache: Path | None = None) -> dict[str, str]:
    e = dict(os.environ)
    e.update(PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3")
    # The runs here take a few steps each, so XLA:CPU's compile time is most of their cost; LLVM
    # without its optimisation passes compiles in two thirds of the time (a 2-step run: 48 -> 34 s).
    e["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"
                      " --xla_cpu_multi_thread_eigen=false")  # one core each: conftest.py
    if cache is not None:  # compiled steps are reused by the restart runs of a test
        e.update(JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return e


def prepare(out: Path, source: str = "synth:8") -> Path:
    cmd = [sys.executable, "-m", "docjepa.prepare", "--config", "configs/demo.py:quick", "--source", source,
           "--out", str(out)]
    subprocess.run(cmd, cwd=ROOT, env=env(), check=True, capture_output=True, timeout=900)
    return out


def train_cmd(data: Path, workdir: Path, steps: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "docjepa.train", *FAST, f"--config.data.dir={data}", f"--workdir={workdir}",
            f"--config.train.steps={steps}", *extra]


def run(cmd: list[str], devices: int = 1, cache: Path | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=env(devices, cache), capture_output=True, text=True, timeout=timeout)


def run_processes(k: int, devices: int, cmd: list[str], log_dir: Path, cache: Path | None = None,
                  timeout: int = 900) -> tuple[str, str]:
    """Run `cmd` as `k` cooperating processes of `devices` CPU devices each (launch/local.sh, gloo);
    the stderr of process 0 and the log of process 1, after asserting that all exited with 0."""
    e = env(cache=cache)
    e["LOG_DIR"] = str(log_dir)
    r = subprocess.run(["bash", "launch/local.sh", str(k), "--cpu-devices", str(devices), "--", *cmd], cwd=ROOT,
                       env=e, capture_output=True, text=True, timeout=timeout)
    other = (log_dir / "process_1.log").read_text()
    assert r.returncode == 0, r.stderr[-3000:] + other[-3000:]
    return r.stderr, other


def wait_for_step(workdir: Path, step: int, proc: subprocess.Popen, timeout: float = 600) -> None:
    """Block until metrics.jsonl records `step` (the run logs every step)."""
    path = workdir / "metrics.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training exited early with {proc.returncode}: {proc.stderr.read()[-3000:]}")
        if path.exists() and any(f'"step": {step},' in line for line in path.read_text().splitlines()):
            return
        time.sleep(0.2)
    raise AssertionError(f"step {step} not reached in {timeout}s")


def checkpoint_steps(workdir: Path) -> list[int]:
    d = workdir / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


def load_params(workdir: Path, step: int) -> dict[str, np.ndarray]:
    """The saved parameters of `step` and, with the TTM, the streams' carried memory, flattened
    to {path: array}, read onto one device whatever mesh or processes saved it (the reader
    bench/device_check.py compares with)."""
    from bench.device_check import final_state

    return final_state(workdir, step)


def data_state(workdir: Path, step: int) -> dict:
    """The grain iterator state saved with `step` (process 0)."""
    import json

    return json.loads((workdir / "checkpoints" / str(step) / "data" / "process_0-of-1.json").read_text())

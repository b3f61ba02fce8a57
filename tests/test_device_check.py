"""bench/device_check.sh, the one-shot accelerator check, run on CPU with --cpu: the step part,
real training with a checkpoint, and the resumed run compared bitwise with the uninterrupted one."""

import subprocess
import sys

import pytest

import train_utils


def _env(cache=None) -> dict[str, str]:
    return {**train_utils.env(cache=cache), "PYTHON": sys.executable}


@pytest.mark.xdist_group("train")
def test_device_check_cpu_trains_and_resumes_bitwise(synth_corpus, tmp_path, jax_cache):
    # The quick config narrowed as train_utils.FAST narrows it: 2 steps of the train runs are the
    # step of the suite's shared 2-step run (`stage1_run`), read from `jax_cache` once compiled.
    fast = [f"--set={a.removeprefix('--config.')}" for a in train_utils.FAST if a.startswith("--config.")]
    proc = subprocess.run(
        ["bash", "bench/device_check.sh", "--cpu", "--data", str(synth_corpus), "--steps", "2", "--resume_at", "1",
         "--bench_steps", "1", "--workdir", str(tmp_path), "--no_write", *fast],
        cwd=train_utils.ROOT, env=_env(jax_cache), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    assert "bitwise equal" in lines["resume"], proc.stdout
    assert "2 steps" in lines["train"] and "configs/demo.py:quick" in lines["step"], proc.stdout
    # Both runs really ran: the resumed one started from the copied step-1 checkpoint.
    assert train_utils.checkpoint_steps(tmp_path / "a") == [1, 2]
    assert train_utils.checkpoint_steps(tmp_path / "b") == [1, 2]


def test_device_check_refuses_bad_input_before_compiling(tmp_path):
    run = lambda *a: subprocess.run(["bash", "bench/device_check.sh", *a], cwd=train_utils.ROOT,  # noqa: E731
                                    env=_env(), capture_output=True, text=True, timeout=300)
    proc = run("--cpu", "--data", str(tmp_path))
    assert proc.returncode != 0 and "is not a prepared corpus" in proc.stderr
    proc = run("--wheels", str(tmp_path / "absent"))
    assert proc.returncode == 2 and "--wheels" in proc.stderr
    proc = run("--cpu", "--steps", "5", "--resume_at", "2")
    assert proc.returncode != 0 and "--resume_at" in proc.stderr

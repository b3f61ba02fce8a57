"""One-shot accelerator check: the production step's speed and memory, then real training with a
checkpoint, a resume from it, and a comparison with the uninterrupted run.

    bench/device_check.sh [--cpu] [--wheels DIR] [--data DIR] [--no_write]     (see that script)
    PYTHONPATH=. python bench/device_check.py [--cpu] [--data DIR] [--steps 100] [--resume_at 50]
        [--set FIELD=VALUE ...]

1. step: `bench/train_step.measure` of configs/hiera_b_ttm.py:gpu1 in bfloat16 (global batch 16
   x 64 windows on one device) on random batches: median step time, analytic model FLOPs ->
   TFLOP/s and MFU, XLA's per-device peak (arguments + outputs + temporaries) and, on GPUs,
   the allocator's peak bytes in use.
2. train: `python -m docjepa.train` on a prepared corpus (`--data`, made by docjepa.prepare; its
   text-encoder settings are read from its manifest) for `--steps` steps with a checkpoint every
   `--resume_at` steps: the real grain pipeline, orbax, the carried TTM memory.
3. resume: a second workdir holding only the checkpoint of step `--resume_at` trains on to
   `--steps`; its final parameters and memory are compared with the first run's, leaf by leaf.
   On GPUs XLA runs with --xla_gpu_deterministic_ops so that equal inputs give equal bits.

`--cpu` runs the same three parts with the demo's tiny model (configs/demo.py:quick), so the
test suite exercises the script where no accelerator exists. Prints one table and appends a
row to BENCHMARKS.md (unless --no_write).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from bench import common  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TITLE = "Accelerator check (bench/device_check.sh)"
COLUMNS = ("date", "machine", "command", "config", "batch x steps", "dtype", "step s", "patches/s",
           "model TFLOP/s", "MFU", "XLA peak MiB", "allocator peak MiB", "train steps/s", "resume")
NOTE = ("step: one jitted train step on random batches (bench/train_step.measure), median after warm-up; "
        "model TFLOP/s and MFU from the analytic count (docjepa/flops.py). train: `python -m docjepa.train` "
        "on a prepared synthetic corpus, steps/s after compilation from its metrics. resume: the run restarted "
        "from its mid-run checkpoint ends bitwise equal to the uninterrupted run, or the largest difference.")
# (config, step-bench overrides) per mode; the train part uses the same config on the corpus.
MODES = {
    "device": ("configs/hiera_b_ttm.py:gpu1", {"dtype": "bfloat16", "embed_dim": 768}),
    "cpu": ("configs/demo.py:quick", {"dtype": "float32", "embed_dim": 384}),
}


def manifest_text_flags(data: Path) -> list[str]:
    """`--config.text.K=V` for the text-encoder settings the corpus was embedded with, so the
    train run's config matches the corpus whatever encoder prepared it."""
    try:
        stored = json.loads((data / "manifest.json").read_text())["config"]["text"]
    except (OSError, KeyError, ValueError) as e:
        sys.exit(f"error: --data: {data} is not a prepared corpus ({e}); run python -m docjepa.prepare first")
    return [f"--config.text.{k}={stored[k]}" for k in ("model_dir", "pooling", "normalize", "max_length")
            if k in stored]


def train(config: str, data: Path, workdir: Path, steps: int, ckpt_every: int, env: dict[str, str],
          overrides: list[str]) -> float:
    """Run docjepa.train to `steps` (`overrides`: "field.path=value" on top of `config`); returns
    steps/s after the first (compiling) step."""
    cmd = [sys.executable, "-m", "docjepa.train", "--config", config, f"--workdir={workdir}",
           f"--config.data.dir={data}", *manifest_text_flags(data), *(f"--config.{item}" for item in overrides),
           f"--config.train.steps={steps}", f"--config.train.ckpt_every={ckpt_every}", "--config.train.keep=10",
           "--config.train.log_every=1", "--config.evals.in_train=()"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"error: {' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    times = [r["step_time_s"] for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
             if "step_time_s" in r]
    return 1.0 / float(np.median(times)) if times else float("nan")


def final_state(workdir: Path, step: int) -> dict[str, np.ndarray]:
    """Parameters and carried memory saved at `step`, flattened to {path: array}; read onto one
    device, so a checkpoint of any mesh or number of processes can be read."""
    import jax
    import orbax.checkpoint as ocp

    path, reader = workdir / "checkpoints" / str(step) / "state", ocp.StandardCheckpointer()
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    tree = reader.restore(path, jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                                             reader.metadata(path).item_metadata))
    flat, _ = jax.tree_util.tree_flatten_with_path({k: tree[k] for k in ("params", "memory") if k in tree})
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in flat}


def compare(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> str:
    """'bitwise equal (N leaves)' or the largest absolute difference and where."""
    if a.keys() != b.keys():
        return f"different trees: {sorted(a.keys() ^ b.keys())[:3]}"
    diffs = {k: float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)))) if a[k].size else 0.0
             for k in a if not np.array_equal(a[k], b[k])}
    if not diffs:
        return f"bitwise equal ({len(a)} leaves)"
    worst = max(diffs, key=diffs.get)
    return f"{len(diffs)}/{len(a)} leaves differ, max |diff| {diffs[worst]:.2e} at {worst}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="the demo's tiny model on CPU (for the test suite)")
    parser.add_argument("--data", default="data/device_check", help="a corpus made by python -m docjepa.prepare")
    parser.add_argument("--steps", type=int, default=100, help="training steps of the train part")
    parser.add_argument("--resume_at", type=int, default=50, help="checkpoint the resumed run starts from")
    parser.add_argument("--bench_steps", type=int, default=10, help="timed steps of the step part")
    parser.add_argument("--workdir", default="", help="where the two runs go (default: a temporary folder)")
    parser.add_argument("--no_write", action="store_true", help="print only, do not touch BENCHMARKS.md")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="config override for every part (python literal), e.g. data.batch_size=2")
    args = parser.parse_args()
    if not 0 < args.resume_at < args.steps or args.steps % args.resume_at:
        sys.exit(f"error: --resume_at: {args.resume_at} must be in (0, --steps={args.steps}) and divide it")
    data = Path(args.data).resolve()
    manifest_text_flags(data)  # fail on a bad corpus before anything compiles

    import jax

    from bench import train_step

    mode = "cpu" if args.cpu else "device"
    config, overrides = MODES[mode]
    device = jax.devices()[0]
    if mode == "device" and device.platform == "cpu":
        sys.exit("error: no accelerator found (jax.devices() is CPU); pass --cpu to run the check on CPU")

    # ------------------------------------------------------------------ step
    t0 = time.perf_counter()
    step = train_step.measure(config, steps=args.bench_steps, overrides=args.set, **overrides)
    t_step = time.perf_counter() - t0
    allocator = (device.memory_stats() or {}).get("peak_bytes_in_use") if device.platform != "cpu" else None
    print(f"step part done in {t_step:.0f} s: {({k: v for k, v in step.items() if k != 'cfg'})}, "
          f"allocator peak {allocator}", flush=True)  # kept if a later part fails

    # ----------------------------------------------------------------- train
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # PYTHONPATH kept: it may hold the --wheels site
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    if device.platform == "gpu":
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_gpu_deterministic_ops=true").strip()
    if args.cpu:
        flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
        env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join([*flags, "--xla_force_host_platform_device_count=1"]))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="device_check_"))
    shutil.rmtree(work / "a", ignore_errors=True)
    shutil.rmtree(work / "b", ignore_errors=True)
    # The resumed run reads the first one's compiled step: from the caller's persistent compilation
    # cache if it names one (the test suite's, shared by its runs), else from one in the workdir.
    for key, value in (("JAX_COMPILATION_CACHE_DIR", str(work / "jax_cache")),
                       ("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0"),
                       ("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")):
        env.setdefault(key, value)
    t0 = time.perf_counter()
    steps_per_s = train(config, data, work / "a", args.steps, args.resume_at, env, args.set)
    t_train = time.perf_counter() - t0

    # ---------------------------------------------------------------- resume
    (work / "b" / "checkpoints").mkdir(parents=True)
    shutil.copytree(work / "a" / "checkpoints" / str(args.resume_at), work / "b" / "checkpoints" / str(args.resume_at))
    t0 = time.perf_counter()
    train(config, data, work / "b", args.steps, args.resume_at, env, args.set)
    t_resume = time.perf_counter() - t0
    resume = compare(final_state(work / "a", args.steps), final_state(work / "b", args.steps))

    accel = None if device.platform == "cpu" else f"{device.device_kind} x1"
    row = (common.today(), common.machine(accel), common.command(), config,
           f"{step['batch']} x {step['max_steps']}", overrides["dtype"], f"{step['step_s']:.3f}",
           f"{step['patches_per_s']:.1f}", f"{step['model_tflops']:.2f}",
           f"{step['mfu']:.1%}" if step["mfu"] is not None else "n/a", common.mib(step["peak_bytes"]),
           common.mib(allocator) if allocator else "n/a", f"{steps_per_s:.2f}", resume)
    common.print_table(("part", "result"), [
        ("device", f"{device.device_kind} ({device.platform}), jax {jax.__version__}"),
        ("step", f"{config} {overrides['dtype']}, batch {step['batch']} x {step['max_steps']} windows: "
                 f"{step['step_s']:.3f} s, {step['patches_per_s']:.1f} patches/s ({t_step:.0f} s with compile)"),
        ("FLOPs", f"{step['model_flops']:.3e} model FLOPs per step (analytic), XLA cost analysis "
                  f"{step['xla_flops']:.3e} per device"),
        ("throughput", f"{step['model_tflops']:.2f} TFLOP/s, MFU {row[9]}"),
        ("memory", f"XLA peak {row[10]} MiB per device; allocator peak {row[11]} MiB"),
        ("train", f"{args.steps} steps in {t_train:.0f} s with compile, {steps_per_s:.2f} steps/s"),
        ("resume", f"from step {args.resume_at} in {t_resume:.0f} s: {resume}"),
    ])
    if not args.no_write:
        common.append_rows(TITLE, COLUMNS, [row], note=NOTE)
    if not resume.startswith("bitwise equal"):
        sys.exit(f"error: the resumed run differs from the uninterrupted one: {resume}")


if __name__ == "__main__":
    main()

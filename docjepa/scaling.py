"""Scaling studies: python -m docjepa.scaling --sweep configs/scaling.py[:ARG] --out DIR.

The sweep config's `sweep(arg)` lists the grid points (dicts of config args) and its
`format_arg(point)` turns one into the `get_config` arg. For each point the study trains
(`python -m docjepa.train`) into DIR/runs/NAME and evaluates the final checkpoint
(`python -m docjepa.eval`). Modes:

  local  run every unfinished point here, one after the other (finished points are skipped,
         an interrupted run resumes from its checkpoint), then fit;
  print  print one train and one eval command per point (--launcher slurm|tpu: the train
         lines go through launch/slurm_gpu.sbatch or launch/tpu_pod.sh);
  fit    only collect the finished points and fit.

The fit: total training compute C = (model FLOPs per device per step) x devices x steps, read
from each run's metrics.jsonl (`flops_per_device_step`: the analytic count of docjepa/flops.py;
XLA's cost analysis, logged beside it, counts one TTM step of a chunk's scan and one microbatch
of gradient accumulation, so sizes whose TTM share or accumulation differ would sit at wrong
relative compute), and L(C) = a * C^-b + c, the saturating power law of Hestness et al. 2017
(arXiv:1712.00409) and Kaplan et al. 2020 (arXiv:2001.08361), for the validation loss and the
retrieval error 1 - R@1. Results: DIR/scaling.json and DIR/scaling.png.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections as mlc  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from tqdm import tqdm  # noqa: E402

from docjepa import cli, metrics  # noqa: E402
from docjepa.data import bank, pipeline  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LOSS = "val/loss"


@dataclasses.dataclass
class Point:
    """One run of the study: its config arg, resolved config, workdir and corpus."""

    name: str
    arg: str
    cfg: mlc.ConfigDict
    workdir: Path
    data_dir: str

    @property
    def eval_json(self) -> Path:
        return self.workdir / "eval" / f"step_{self.cfg.train.steps}.json"


# ------------------------------------------------------------------------------ planning


def load_sweep(spec: str) -> tuple[ModuleType, str, str]:
    """'configs/scaling.py:cpu' -> (module, path, arg); the module needs sweep and format_arg."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--sweep: {path}: no such config file")
    if str(ROOT) not in sys.path:  # config files import `configs.common`
        sys.path.insert(0, str(ROOT))
    module_spec = importlib.util.spec_from_file_location(f"_sweep_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module  # dataclasses look their module up there
    module_spec.loader.exec_module(module)
    missing = [f for f in ("get_config", "sweep", "format_arg") if not hasattr(module, f)]
    if missing:
        raise ValueError(f"--sweep: {path} defines no {', '.join(missing)}")
    return module, path, arg


def run_name(point: dict[str, Any]) -> str:
    """{'size': 'xs', 'steps': 60, 'cpu': True} -> 'size-xs_steps-60_cpu' (a directory name)."""
    return "_".join(k if v is True else f"{k}-{v}" for k, v in point.items() if v is not False)


def plan(spec: str, out: Path, data: str | None) -> tuple[str, list[Point]]:
    """The points of the sweep `spec` under `out`; `data` (or each config's data.dir) is the corpus."""
    module, path, arg = load_sweep(spec)
    points = []
    for p in module.sweep(arg or None):
        point_arg = module.format_arg(p)
        cfg = module.get_config(point_arg)
        docs = int(cfg.get("scaling", {}).get("train_docs", 0))
        corpus = data or cfg.data.dir
        data_dir = str(out / "data" / f"{Path(corpus).name}_docs{docs}") if docs else corpus
        points.append(Point(run_name(p), point_arg, cfg, out / "runs" / run_name(p), data_dir))
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        raise ValueError(f"--sweep {spec}: grid points with the same name: {names}")
    return path, points


def write_subset(src: str, dst: str, docs: int) -> None:
    """`dst` = the first `docs` training documents of `src` (records copied verbatim), same val split."""
    import grain
    from array_record.python.array_record_module import ArrayRecordWriter

    from docjepa.data.record import decode_record

    dst_path = Path(dst)
    if (dst_path / "manifest.json").exists():
        return
    manifest = pipeline.read_manifest(src)
    train_split = manifest["splits"]["train"]
    if docs > train_split["documents"]:
        raise ValueError(f"data={docs}: {src} has only {train_split['documents']} training documents")
    tmp = dst_path.with_name(dst_path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    source = grain.sources.ArrayRecordDataSource([os.path.join(src, f) for f in train_split["files"]])
    writer = ArrayRecordWriter(str(tmp / "train-00000-of-00001.array_record"), "group_size:1")
    pages = windows = 0
    for i in range(docs):
        blob = source[i]
        rec = decode_record(blob, {"pages_png", "windows"})
        pages, windows = pages + len(rec["pages_png"]), windows + len(rec["windows"])
        writer.write(blob)
    writer.close()
    manifest["splits"]["train"] = {"files": ["train-00000-of-00001.array_record"], "documents": docs,
                                   "pages": pages, "windows": windows}
    for split, info in manifest["splits"].items():
        if split != "train":
            for f in info["files"]:
                shutil.copy2(Path(src) / f, tmp / f)
    manifest["subset_of"] = {"dir": str(Path(src).absolute()), "train_docs": docs}
    manifest.pop("shards", None)  # prepare's shards and their JSONs, which a subset does not have
    manifest["target_mean"] = bank.build(str(tmp), manifest["splits"]["train"]["files"])  # of the subset
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    tmp.rename(dst_path)


def commands(point: Point, sweep_path: str, python: str = sys.executable) -> tuple[list[str], list[str]]:
    """The train and eval command lines of one point."""
    config = ["--config", f"{sweep_path}:{point.arg}", f"--config.data.dir={point.data_dir}",
              f"--workdir={point.workdir}"]
    return ([python, "-m", "docjepa.train", *config],
            [python, "-m", "docjepa.eval", *config, "--random_init=false"])


def prepare_data(points: Sequence[Point], data: str | None) -> None:
    for p in points:
        docs = int(p.cfg.get("scaling", {}).get("train_docs", 0))
        if docs:
            write_subset(data or p.cfg.data.dir, p.data_dir, docs)


def run_local(points: Sequence[Point], sweep_path: str) -> None:
    """Train and evaluate every unfinished point; logs in RUN/{train,eval}.log."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    todo = [p for p in points if not p.eval_json.exists()]
    print(f"{len(points) - len(todo)} of {len(points)} points already finished", flush=True)
    for p in tqdm(todo, desc="scaling", disable=not sys.stderr.isatty()):
        p.workdir.mkdir(parents=True, exist_ok=True)
        for kind, cmd in zip(("train", "eval"), commands(p, sweep_path)):
            print(f"[{p.name}] {shlex.join(cmd)}", flush=True)
            log = p.workdir / f"{kind}.log"
            with log.open("w") as f:
                rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
            if rc:
                tail = "\n".join(log.read_text().splitlines()[-15:])
                raise RuntimeError(f"{p.name}: {kind} exited with {rc}; log {log}:\n{tail}")


def launch_line(point: Point, sweep_path: str, launcher: str) -> str:
    """The train job of one point through launch/slurm_gpu.sbatch or launch/tpu_pod.sh (CONFIG WORKDIR FLAGS)."""
    config, flags_ = f"{sweep_path}:{point.arg}", [f"--config.data.dir={point.data_dir}"]
    if launcher == "slurm":
        return shlex.join(["sbatch", "launch/slurm_gpu.sbatch", config, str(point.workdir), *flags_])
    return '"$TPU_NAME" "$ZONE" '.join(["launch/tpu_pod.sh ", shlex.join([config, str(point.workdir), *flags_])])


def print_commands(points: Sequence[Point], sweep_path: str, spec: str, out: Path, data: str | None,
                   launcher: str = "none") -> str:
    """One train and one eval line per point (train through `launcher` unless 'none'), then the fit."""
    lines = [f"# {len(points)} points of {spec}; every line is one job"]
    for p in points:
        train_cmd, eval_cmd = commands(p, sweep_path, python="python")
        lines += [f"# {p.name}", shlex.join(train_cmd) if launcher == "none" else launch_line(p, sweep_path, launcher),
                  shlex.join(eval_cmd)]
    data_flag = f" --data {data}" if data else ""
    lines.append(f"# when all are done: python -m docjepa.scaling --sweep {spec} --out {out}{data_flag} --mode fit")
    return "\n".join(lines)


# --------------------------------------------------------------------------- collecting


def param_count(cfg: mlc.ConfigDict, data_dir: str) -> int:
    """Parameters of the model of `cfg` (abstract: nothing is allocated)."""
    import jax
    from flax import nnx

    from docjepa import state as factory

    embed_dim = factory.embed_dim_of(cfg, pipeline.read_manifest(data_dir))
    model = nnx.eval_shape(lambda: factory.build_model(cfg, embed_dim, cfg.seed))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def collect(points: Sequence[Point], retrieval_key: str) -> list[dict[str, Any]]:
    """One row per finished point: compute, parameters, the fitted metrics and the whole eval."""
    rows = []
    for p in points:
        if not p.eval_json.exists():
            continue
        record = next((r for r in metrics.read_jsonl(p.workdir / "metrics.jsonl") if "flops_per_device_step" in r), None)
        if record is None:
            raise ValueError(f"{p.workdir}/metrics.jsonl: no flops_per_device_step record")
        if "xla_flops_per_device_step" not in record:  # written before the analytic count
            raise ValueError(f"{p.workdir}/metrics.jsonl: flops_per_device_step is XLA's count (one TTM step "
                             "per chunk), from a train.py older than docjepa/flops.py; train this point again")
        ev = json.loads(p.eval_json.read_text())
        if retrieval_key not in ev:
            raise ValueError(f"{p.eval_json}: no {retrieval_key!r} (keys: {sorted(ev)})")
        steps = int(p.cfg.train.steps)
        rows.append({
            "name": p.name, "arg": p.arg, "steps": steps, "data_dir": p.data_dir,
            "params": param_count(p.cfg, p.data_dir),
            "flops_per_device_step": record["flops_per_device_step"], "devices": int(record["devices"]),
            "compute": record["flops_per_device_step"] * record["devices"] * steps,
            LOSS: ev[LOSS], retrieval_key: ev[retrieval_key], error_key(retrieval_key): 1.0 - ev[retrieval_key],
            "eval": ev,
        })
    return rows


def error_key(retrieval_key: str) -> str:
    """'retrieval/window/i2t_r1' -> 'retrieval/window/i2t_err1' (1 - R@1)."""
    head, _, tail = retrieval_key.rpartition("_r")
    return f"{head}_err{tail}"


# -------------------------------------------------------------------------------- fitting


def power_law(x: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a * np.power(x, -b) + c


def fit_power_law(x: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
    """Fit y = a * x^-b + c; with fewer than 4 points (or no scipy), the line log y = log a - b log x (c = 0).

    x is rescaled by its geometric mean before fitting, which keeps the problem well
    conditioned at FLOP scales (1e9..1e22); `a` is reported in the original units.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2 or np.any(x <= 0):
        raise ValueError(f"power-law fit: need >= 2 points with x > 0, got x={x.tolist()}")
    scale = float(np.exp(np.mean(np.log(x))))
    u = x / scale
    pos = y > 0
    slope, intercept = np.polyfit(np.log(u[pos]), np.log(y[pos]), 1) if pos.sum() >= 2 else (0.0, 0.0)
    loglinear = {"a": float(np.exp(intercept) * scale ** -slope), "b": float(-slope), "c": 0.0, "method": "loglinear"}
    if len(x) < 4:
        return _with_residual(loglinear, x, y)
    try:
        from scipy.optimize import curve_fit
    except ImportError:
        return _with_residual(loglinear, x, y)
    best = None
    for frac in (0.0, 0.5, 0.9, 0.99):  # starts for the floor c, below the smallest y
        c0 = frac * float(y.min())
        shifted = np.maximum(y - c0, 1e-12)
        s, i = np.polyfit(np.log(u), np.log(shifted), 1)
        try:
            p, _ = curve_fit(power_law, u, y, p0=(np.exp(i), max(-s, 1e-3), c0),
                             bounds=([0.0, 0.0, 0.0], [np.inf, 10.0, float(y.min())]), maxfev=20000)
        except (RuntimeError, ValueError):
            continue
        sse = float(np.sum((power_law(u, *p) - y) ** 2))
        if best is None or sse < best[0]:
            best = (sse, p)
    if best is None:
        return _with_residual(loglinear, x, y)
    a, b, c = (float(v) for v in best[1])
    return _with_residual({"a": a * scale**b, "b": b, "c": c, "method": "curve_fit"}, x, y)


def _with_residual(fit: dict[str, Any], x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    pred = power_law(x, fit["a"], fit["b"], fit["c"])
    return {**fit, "rmse": float(np.sqrt(np.mean((pred - y) ** 2))), "points": int(len(x))}


def fit_all(rows: Sequence[dict[str, Any]], retrieval_key: str) -> dict[str, dict[str, Any]]:
    c = [r["compute"] for r in rows]
    return {key: fit_power_law(c, [r[key] for r in rows]) for key in (LOSS, error_key(retrieval_key))}


def plot(rows: Sequence[dict[str, Any]], fits: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    """One panel per fitted metric: the points (labelled by run), the fit, its parameters."""
    fig, axes = plt.subplots(1, len(fits), figsize=(6 * len(fits), 4.5), squeeze=False)
    c = np.array([r["compute"] for r in rows])
    grid = np.geomspace(c.min() / 1.5, c.max() * 1.5, 200)
    for ax, (key, f) in zip(axes[0], fits.items()):
        ys = np.array([r[key] for r in rows])
        ax.scatter(c, ys, color="C0", zorder=3, label="runs")
        for r in rows:
            ax.annotate(r["name"], (r["compute"], r[key]), fontsize=7, xytext=(4, 4), textcoords="offset points")
        label = f"{f['a']:.3g} * C^-{f['b']:.3g} + {f['c']:.3g}  ({f['method']}, rmse {f['rmse']:.2g})"
        ax.plot(grid, power_law(grid, f["a"], f["b"], f["c"]), color="C1", label=label)
        ax.set_xscale("log")
        mid, half = (ys.max() + ys.min()) / 2, (ys.max() - ys.min()) / 2
        if half < 0.01 * abs(mid):  # a flat metric is drawn flat, not zoomed into its rounding noise
            ax.set_ylim(mid - 0.05 * abs(mid), mid + 0.05 * abs(mid))
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.set_xlabel("training compute C (FLOPs)")
        ax.set_ylabel(key)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def markdown(rows: Sequence[dict[str, Any]], retrieval_key: str) -> str:
    head = f"| run | params | C (FLOPs) | {LOSS} | {retrieval_key} |\n|---|---|---|---|---|\n"
    return head + "\n".join(f"| {r['name']} | {r['params'] / 1e6:.3f}M | {r['compute']:.3e} | {r[LOSS]:.4g} | "
                            f"{r[retrieval_key]:.4g} |" for r in rows)


def report(points: Sequence[Point], out: Path, spec: str, retrieval_key: str) -> dict[str, Any]:
    """Collect, fit, write DIR/scaling.{json,png,md}; returns the JSON content."""
    rows = collect(points, retrieval_key)
    if len(rows) < 2:
        raise ValueError(f"{out}: {len(rows)} of {len(points)} points finished; need >= 2 to fit")
    rows.sort(key=lambda r: r["compute"])
    fits = fit_all(rows, retrieval_key)
    result = {"sweep": spec, "retrieval_key": retrieval_key, "points": rows, "fits": fits}
    (out / "scaling.json").write_text(json.dumps(result, indent=1))
    plot(rows, fits, out / "scaling.png", f"docjepa scaling: {spec} ({len(rows)} runs)")
    (out / "scaling.md").write_text(markdown(rows, retrieval_key) + "\n")
    return result


# ------------------------------------------------------------------------------------ CLI

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("sweep", None, "Sweep config with its arg, e.g. configs/scaling.py:cpu.")
    flags.DEFINE_string("out", None, "Study directory: runs/, data subsets, scaling.{json,png}.")
    flags.DEFINE_enum("mode", "local", ["local", "print", "fit"], "Run here, print the commands, or only fit.")
    flags.DEFINE_enum("launcher", "none", ["none", "slurm", "tpu"],
                      "--mode print: train lines as plain python, sbatch launch/slurm_gpu.sbatch, or launch/tpu_pod.sh.")
    flags.DEFINE_string("data", None, "Prepared corpus (default: each config's data.dir).")
    flags.DEFINE_string("retrieval_key", "retrieval/window/i2t_r1", "Eval key whose error 1 - R is fitted.")
    flags.mark_flags_as_required(["sweep", "out"])
    flags.register_validator("sweep", _sweep_loads)


def _sweep_loads(spec: str | None) -> bool:
    """Flag validator: the --sweep file exists and imports, so that a wrong path or a broken
    file is a one-line usage error (exit 2) from cli.parse_flags rather than a traceback."""
    if spec is None:  # reported by mark_flags_as_required
        return True
    try:
        load_sweep(spec)
    except FileNotFoundError:
        raise flags.ValidationError("no such config file") from None
    except Exception as e:  # noqa: BLE001 - whatever the file raises on import
        raise flags.ValidationError(f"cannot load it: {type(e).__name__}: {e}") from None
    return True


def main(argv: list[str]) -> None:
    del argv
    metrics.setup_logging()
    out = Path(FLAGS.out)
    try:
        sweep_path, points = plan(FLAGS.sweep, out, FLAGS.data)
        if FLAGS.mode != "fit":
            prepare_data(points, FLAGS.data)
        if FLAGS.mode == "print":
            print(print_commands(points, sweep_path, FLAGS.sweep, out, FLAGS.data, FLAGS.launcher))
            return
        if FLAGS.mode == "local":
            run_local(points, sweep_path)
        result = report(points, out, FLAGS.sweep, FLAGS.retrieval_key)
    except (FileNotFoundError, ValueError, RuntimeError, pipeline.DataError) as e:
        sys.exit(f"error: {e}")
    for key, f in result["fits"].items():
        print(f"{key}: {f['a']:.4g} * C^-{f['b']:.4g} + {f['c']:.4g} ({f['method']}, {f['points']} points, "
              f"rmse {f['rmse']:.3g})")
    print(f"wrote {out / 'scaling.json'} and {out / 'scaling.png'}")


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=cli.parse_flags)

"""Train-step throughput of a config: the step train.py runs, fed random batches of its shapes.

    PYTHONPATH=. python bench/train_step.py --config configs/demo.py[:arg] [--steps 5] [--batch B]
        [--max_steps S] [--dtype bfloat16] [--embed_dim D] [--window_capacity F] [--set FIELD=VALUE ...] [--no_write]

The model, optimizer, shardings and step come from docjepa.train (build_model, build_optimizer,
decay_mask, train_state_shardings, make_train_step) on the config's mesh over all devices, so
the numbers are those of a real run minus the input pipeline. TFLOP/s and MFU use the analytic
model FLOPs of docjepa/flops.py (forward + backward, no rematerialisation, as PaLM defines MFU);
XLA's cost analysis of the compiled step is printed beside them but not used: it counts one TTM
step of the chunk's scan. Peak memory per device comes from XLA's memory analysis
(arguments + outputs + temporaries - donated aliases). MFU is n/a where
docjepa.metrics has no peak FLOP/s for the device (CPUs). Appends one row to BENCHMARKS.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import ast  # noqa: E402
import functools  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Sequence  # noqa: E402

import jax  # noqa: E402
import ml_collections as mlc  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from bench import common  # noqa: E402
from docjepa import flops, metrics, objective, sharding, state as factory, text, train, validate  # noqa: E402
from docjepa.data import pipeline  # noqa: E402

# Renamed when TFLOP/s and MFU moved from XLA's count to the analytic one: older rows stay under "Train step".
TITLE = "Train step (analytic FLOPs)"
COLUMNS = ("date", "machine", "command", "config", "batch x steps", "dtype", "step s", "patches/s",
           "model GFLOP/step", "TFLOP/s", "MFU", "peak MiB")
NOTE = ("One jitted train step (forward, backward, AdamW update) of docjepa.train on random batches, median of "
        "the timed steps after warm-up. model GFLOP/step: the analytic count of docjepa/flops.py over the global "
        "batch (XLA's cost analysis counts one TTM step of the scan; the script prints it too). TFLOP/s = model "
        "FLOPs / step time; MFU = that per device against docjepa.metrics.PEAK_BF16_FLOPS. peak MiB = per-device "
        "arguments + outputs + temporaries - donated aliases, from XLA's memory analysis.")


def setup(config: str, *, batch: int = 0, max_steps: int = 0, dtype: str = "", embed_dim: int = 0,
          overrides: Sequence[str] = ()) -> tuple[mlc.ConfigDict, int, jax.sharding.Mesh]:
    """`config` (configs/X.py[:arg]) with the overrides (0 / '' keep the config's; `overrides`:
    "field.path=python literal"), validated; the text width (model.embed_dim, else the config's
    text encoder); the config's mesh. Raises ValueError or FileNotFoundError with a one-line message."""
    cfg = common.load_config(config)
    for item in overrides:
        path, _, value = item.partition("=")
        *parents, leaf = path.split(".")
        node = cfg
        for name in parents:
            node = node[name]
        if leaf not in node:
            raise ValueError(f"--set {item}: no field {path}")
        node[leaf] = ast.literal_eval(value)
    cfg.data.batch_size = batch or cfg.data.batch_size
    cfg.data.max_steps = max_steps or cfg.data.max_steps
    cfg.model.dtype = dtype or cfg.model.dtype
    validate.check(cfg, "train")
    try:
        embed_dim = embed_dim or cfg.model.embed_dim or text_width(cfg)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}; pass --embed_dim") from None
    mesh = sharding.make_mesh(cfg.mesh, dcn=cfg.mesh_dcn)
    if cfg.data.batch_size % (mesh.shape["data"] * mesh.shape["fsdp"]):
        raise ValueError(f"batch {cfg.data.batch_size} is not divisible by the mesh's batch shards {dict(mesh.shape)}")
    return cfg, embed_dim, mesh


def text_width(cfg: mlc.ConfigDict) -> int:
    """The text encoder's width from its config.json (the embedded MiniLM when text.model_dir is '')."""
    model_dir = Path(cfg.text.model_dir) if cfg.text.model_dir else text.default_model_dir()
    return text.EncoderConfig.from_json(model_dir / "config.json").hidden_size


def random_batch(cfg: mlc.ConfigDict, embed_dim: int, seed: int = 0,
                 budget: pipeline.Budget | None = None) -> dict[str, np.ndarray]:
    """A full batch of the pipeline's step fields: every step valid, pages in order, distinct
    texts; under a window `budget`, the first `budget.windows` slots of each group of rows; the
    fields the active loss terms add (pseudo-layout cells: 0/1 at random; every document known)."""
    rng = np.random.default_rng(seed)
    b, s, p, w = cfg.data.batch_size, cfg.data.max_steps, cfg.data.max_pages, cfg.prepare.window
    page_ids = np.broadcast_to(np.arange(s) * p // s, (b, s)).astype(np.int32)
    step_mask = np.ones((b, s), bool)
    if budget is not None:
        step_mask = (np.arange(budget.rows * s) < budget.windows).reshape(budget.rows, s)
        step_mask = np.tile(step_mask, (b // budget.rows, 1))
    g = cfg.data.layout_grid
    extra = {"layout_mask": lambda: (rng.random((b, s, g, g)) < 0.4).astype(np.uint8),
             "doc_known": lambda: np.ones((b,), bool)}
    return {
        **{name: extra[name]() for name in objective.batch_fields(cfg.loss)},
        "patches": rng.integers(0, 256, (b, s, w, w, 3), dtype=np.uint8),
        "step_mask": step_mask,
        "page_ids": page_ids,
        "window_box": np.broadcast_to(np.array([0.0, 0.0, 0.5, 0.35], np.float32), (b, s, 4)),
        "window_emb": rng.standard_normal((b, s, embed_dim), np.float32),
        "window_mask": step_mask,
        "window_text_id": np.arange(b * s, dtype=np.int32).reshape(b, s),
        "page_emb": rng.standard_normal((b, p, embed_dim), np.float32),
        "page_mask": np.ones((b, p), bool),
        "page_text_id": np.arange(b * p, dtype=np.int32).reshape(b, p),
        "record_index": np.arange(b, dtype=np.int32),
        "window_rows": np.concatenate([page_ids[..., None], np.broadcast_to(
            np.array([0, 0, w, w], np.int32), (b, s, 4))], -1).astype(np.int32),
        "page_index": np.broadcast_to(np.arange(p, dtype=np.int32), (b, p)).copy(),
        "doc_emb": rng.standard_normal((b, embed_dim), np.float32),
        "doc_mask": np.ones((b,), bool),
        "reset": np.ones((b,), bool),
    }


def random_bank(cfg: mlc.ConfigDict, embed_dim: int, size: int, mesh: jax.sharding.Mesh) -> dict | None:
    """A text bank of `size` random unit targets per level, laid out as `state.device_bank` lays
    out the real one (sharded along its entries), or None when the config has no bank term."""
    if not factory.uses_bank(cfg.loss):
        return None
    rng = np.random.default_rng(1)
    out = {}
    for level in ("window", "page"):
        emb = rng.standard_normal((size, embed_dim)).astype(np.float32)
        cols = {"emb": emb / np.linalg.norm(emb, axis=1, keepdims=True),
                "text_id": np.arange(10**6, 10**6 + size, dtype=np.int32),
                "doc": np.full(size, 10**6, np.int32), "page": np.zeros(size, np.int32),
                "valid": np.ones(size, bool)}
        if level == "window":
            cols["box"] = np.zeros((size, 4), np.int32)
        out[level] = {k: jax.device_put(v, sharding.batch_sharding(mesh, v.ndim)) for k, v in cols.items()}
    return out


def compile_step(cfg: mlc.ConfigDict, embed_dim: int, mesh: jax.sharding.Mesh, batch: dict[str, Any],
                 text_bank: dict | None) -> tuple[jax.stages.Compiled, Callable[[], dict[str, Any]]]:
    """docjepa.train's step for `cfg` on `mesh`, compiled for `batch` and `text_bank` (arrays or
    ShapeDtypeStructs: compiling allocates nothing), and the function that initialises its state."""
    bank_sizes = {level: cols["emb"].shape[0] for level, cols in text_bank.items()} if text_bank else None
    make_model = functools.partial(factory.build_model, cfg, embed_dim, cfg.seed, bank_sizes)
    graphdef, abstract_params = nnx.split(nnx.eval_shape(make_model), nnx.Param)
    tx, schedule = factory.build_optimizer(cfg.optim, cfg.train.steps, factory.decay_mask(abstract_params))
    state_sh = factory.train_state_shardings(tx, abstract_params, mesh, cfg)

    @functools.partial(jax.jit, out_shardings=state_sh)
    def init_state():
        return factory.init_train_state(make_model(), tx, cfg.data.batch_size, cfg.data.stream_groups)

    step_fn = jax.jit(train.make_train_step(graphdef, tx, schedule, cfg, mesh),
                      in_shardings=(state_sh, {k: sharding.batch_sharding(mesh, 1) for k in batch},
                                    jax.tree.map(lambda a: a.sharding, text_bank)),
                      out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=0)
    return step_fn.lower(factory.abstract_train_state(tx, abstract_params, cfg), batch, text_bank).compile(), init_state


def measure(config: str, *, steps: int = 5, warmup: int = 1, batch: int = 0, max_steps: int = 0, dtype: str = "",
            embed_dim: int = 0, bank: int = 4096, window_capacity: float = 0.0,
            overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Time the train step of `config` (overrides as in `setup`; `bank` entries per text-bank
    level; `window_capacity` > 0 overrides data.window_capacity and fills the budget's slots).

    Returns the resolved config ("cfg"), "batch", "max_steps", "devices", "step_s" (median of
    `steps` after `warmup`), "patches_per_s" (real windows), "model_flops" (analytic, whole step), "xla_flops"
    (XLA's cost analysis, per device), "model_tflops", "mfu" (None without a known peak) and
    "peak_bytes" (XLA's per-device peak)."""
    cfg, embed_dim, mesh = setup(config, batch=batch, max_steps=max_steps, dtype=dtype, embed_dim=embed_dim,
                                 overrides=overrides)
    cfg.data.window_capacity = window_capacity or cfg.data.window_capacity
    text_bank = random_bank(cfg, embed_dim, bank, mesh)
    host = random_batch(cfg, embed_dim, budget=factory.window_budget(cfg, mesh, cfg.data.batch_size, cfg.optim.grad_accum))
    data = sharding.global_batch(host, mesh)
    compiled, init_state = compile_step(cfg, embed_dim, mesh, data, text_bank)
    mem = common.compiled_memory(compiled)
    state = init_state()

    def one_step() -> None:
        nonlocal state
        state, out = compiled(state, data, text_bank)
        jax.block_until_ready(out)

    step_s = common.median_seconds(one_step, steps, warmup=warmup)
    model_flops = flops.train_step_flops(cfg, embed_dim, bank if text_bank else 0)
    peak = metrics.peak_flops(jax.devices()[0])
    return {
        "cfg": cfg, "batch": cfg.data.batch_size, "max_steps": cfg.data.max_steps, "devices": mesh.size,
        "step_s": step_s, "patches_per_s": int(host["step_mask"].sum()) / step_s,
        "model_flops": model_flops, "xla_flops": flops.xla_flops(compiled),
        "model_tflops": model_flops / step_s / 1e12,
        "mfu": model_flops / mesh.size / step_s / peak if peak else None,
        "peak_bytes": mem["argument"] + mem["output"] + mem["temp"] - mem["alias"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="configs/X.py or configs/X.py:arg")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps after compilation")
    parser.add_argument("--batch", type=int, default=0, help="global batch in examples (0 = the config's)")
    parser.add_argument("--max_steps", type=int, default=0, help="patches per example (0 = the config's)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="", help="compute dtype override")
    parser.add_argument("--embed_dim", type=int, default=0,
                        help="text embedding width (0 = model.embed_dim, else the config's text encoder)")
    parser.add_argument("--bank", type=int, default=4096, help="text-bank entries per level (bank terms on)")
    parser.add_argument("--window_capacity", type=float, default=0.0,
                        help="data.window_capacity override (0 = the config's); the batch fills the budget's slots")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a config override, e.g. --set loss.flip_weight=1.0 (repeatable)")
    parser.add_argument("--no_write", action="store_true", help="print only, do not touch BENCHMARKS.md")
    args = parser.parse_args()

    try:
        r = measure(args.config, steps=args.steps, warmup=args.warmup, batch=args.batch, max_steps=args.max_steps,
                    dtype=args.dtype, embed_dim=args.embed_dim, bank=args.bank, window_capacity=args.window_capacity,
                    overrides=args.set)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    device = jax.devices()[0]
    row = (common.today(), common.machine(None if device.platform == "cpu" else f"{device.device_kind} x{r['devices']}"),
           common.command(), args.config, f"{r['batch']} x {r['max_steps']}", r["cfg"].model.dtype,
           f"{r['step_s']:.3f}", f"{r['patches_per_s']:.1f}", f"{r['model_flops'] / 1e9:.1f}",
           f"{r['model_tflops']:.3f}", f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a",
           common.mib(r["peak_bytes"]))
    print(f"{args.config}: {r['model_flops']:.3e} model FLOPs per step (analytic) over {r['devices']} device(s); "
          f"XLA's cost analysis: {r['xla_flops']:.3e} per device")
    common.print_table(COLUMNS[3:], [row[3:]])
    if not args.no_write:
        common.append_rows(TITLE, COLUMNS, [row], note=NOTE)


if __name__ == "__main__":
    main()

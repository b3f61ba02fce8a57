"""Analytic FLOPs of a train step (docjepa/flops.py) against XLA's cost analysis of the compiled step.

    PYTHONPATH=. python bench/flops_table.py [--config configs/X.py[:arg] --embed_dim D ...] [--no_write]

XLA's count covers one TTM step of the chunk's scan; the analytic count covers all of them, so
the two part by about the TTM's share of the step (less the elementwise work only XLA counts).
The step is docjepa.train's (bench/train_step.compile_step), compiled for abstract inputs on the
config's mesh: nothing is run or allocated, so full-size configs fit on a CPU. Per config: model
FLOPs (what MFU uses), hardware FLOPs (plus rematerialisation and gradient-accumulation
recompute, what XLA executes), XLA's count over all devices and its ratio to hardware FLOPs.
Appends the rows to BENCHMARKS.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402

from bench import common, train_step  # noqa: E402
from docjepa import flops  # noqa: E402

TITLE = "Train-step FLOPs: analytic vs XLA cost analysis"
COLUMNS = ("date", "machine", "command", "config", "batch x steps", "dtype", "model GFLOP/step", "TTM share",
           "hardware GFLOP/step", "XLA GFLOP/step", "XLA / hardware")
NOTE = ("model: the analytic count of docjepa/flops.py (forward + backward, no recompute; MFU's numerator); TTM "
        "share: the TTM's part of the forward; hardware: plus rematerialised Hiera blocks and gradient-accumulation "
        "recompute; XLA: cost analysis of the compiled step x devices, which counts one TTM step of the scan "
        "(and elementwise work the analytic count leaves out). Text bank: 4096 entries per level where the "
        "config has bank terms.")
# The configs of the table; hiera_b_ttm's text width is roberta-base's (its weights are not needed).
DEFAULTS = (("configs/demo.py", 0), ("configs/hiera_b_ttm.py", 768))
BANK = 4096


def row(config: str, embed_dim: int, batch: int) -> tuple[str, ...]:
    cfg, embed_dim, mesh = train_step.setup(config, batch=batch, embed_dim=embed_dim)
    one = cfg.copy_and_resolve_references()
    one.data.batch_size = 1
    data = {k: jax.ShapeDtypeStruct((cfg.data.batch_size, *v.shape[1:]), v.dtype)
            for k, v in train_step.random_batch(one, embed_dim).items()}
    text_bank = train_step.random_bank(cfg, embed_dim, BANK, mesh)
    start = time.perf_counter()
    compiled, _ = train_step.compile_step(cfg, embed_dim, mesh, data, text_bank)
    print(f"{config}: compiled in {time.perf_counter() - start:.0f} s", flush=True)
    bank = BANK if text_bank else 0
    model = flops.abstract_model(cfg, embed_dim)
    forward = flops.forward_flops(cfg, embed_dim, cfg.data.batch_size, cfg.data.max_steps, bank, model)
    model_flops = flops.train_step_flops(cfg, embed_dim, bank, model=model)
    hardware = flops.train_step_flops(cfg, embed_dim, bank, hardware=True, model=model)
    xla = flops.xla_flops(compiled) * mesh.size
    ttm_share = sum(v for k, v in forward.items() if k.startswith("ttm/")) / (forward["total"] or 1)
    return (common.today(), common.machine(), common.command(), config,
            f"{cfg.data.batch_size} x {cfg.data.max_steps}", cfg.model.dtype, f"{model_flops / 1e9:.1f}",
            f"{ttm_share:.1%}", f"{hardware / 1e9:.1f}", f"{xla / 1e9:.1f}", f"{xla / hardware:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", help="configs/X.py[:arg] (repeatable; default: demo, hiera_b_ttm)")
    parser.add_argument("--embed_dim", type=int, action="append",
                        help="text width per --config (0 = model.embed_dim, else the config's text encoder)")
    parser.add_argument("--batch", type=int, default=0, help="global batch in examples (0 = each config's)")
    parser.add_argument("--no_write", action="store_true", help="print only, do not touch BENCHMARKS.md")
    args = parser.parse_args()
    cases = list(zip(args.config, args.embed_dim or [0] * len(args.config))) if args.config else DEFAULTS
    if args.config and len(cases) != len(args.config):
        sys.exit("error: --embed_dim: give one per --config, or none")
    try:
        rows = [row(config, embed_dim, args.batch) for config, embed_dim in cases]
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    common.print_table(COLUMNS[3:], [r[3:] for r in rows])
    if not args.no_write:
        common.append_rows(TITLE, COLUMNS, rows, note=NOTE)


if __name__ == "__main__":
    main()

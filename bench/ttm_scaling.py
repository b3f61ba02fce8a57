"""Per-document cost of the TTM scan vs full attention over all of a document's patch tokens.

    PYTHONPATH=. python bench/ttm_scaling.py [--pages 1,4,16,64] [--patches_per_page 8]

One document of P pages, 8 patches per page, 49 tokens (a 7x7 Hiera output) of width 64
per patch, forward + backward (grad wrt parameters), jitted, on CPU. (a) the TTM reads the
patches as a scan over steps: cost per page is flat in P. (b) the full-attention twin is
one pre-LN transformer block of the same width over all P * 8 * 49 tokens: cost per page
grows with P. Twins whose compiled temp memory exceeds --max_gib are compiled, not run.
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from bench import common  # noqa: E402
from docjepa.models import ttm  # noqa: E402

TITLE = "TTM vs full attention per document"
COLUMNS = ("date", "machine", "command", "pages", "tokens", "ttm ms/page", "full ms/page", "time ratio full/ttm",
           "ttm temp MiB", "full temp MiB", "memory ratio full/ttm")


def compile_step(model: nnx.Module, fn, x: jax.Array):
    """Jitted value-and-grad wrt parameters of mean(fn(model, x)^2), compiled for x's shape."""
    graphdef, params = nnx.split(model)

    def loss(params, x):
        return jnp.mean(fn(nnx.merge(graphdef, params), x) ** 2)

    compiled = jax.jit(jax.value_and_grad(loss)).lower(params, x).compile()
    return compiled, params


def measure(model, fn, x, repeats: int, max_bytes: float) -> tuple[int, float | None]:
    compiled, params = compile_step(model, fn, x)
    temp = common.compiled_memory(compiled)["temp"]
    if temp > max_bytes:
        return temp, None
    return temp, common.median_seconds(lambda: jax.block_until_ready(compiled(params, x)), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", default="1,4,16,64")
    parser.add_argument("--patches_per_page", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=49)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--memory_size", type=int, default=64)
    parser.add_argument("--num_read", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max_gib", type=float, default=4.0)
    parser.add_argument("--no_write", action="store_true", help="print only, do not touch BENCHMARKS.md")
    args = parser.parse_args()

    rngs = nnx.Rngs(0)
    machine = ttm.TokenTuringMachine(args.dim, memory_size=args.memory_size, num_read=args.num_read,
                                     process="transformer", num_layers=2, num_heads=4, rngs=rngs)
    twin = ttm.TransformerBlock(args.dim, 0, num_heads=4, mlp_ratio=4.0, rngs=rngs)

    def run_ttm(m, x):
        return m(x, jnp.ones(x.shape[:2], bool))[0]

    def run_full(m, x):
        return m(x.reshape(x.shape[0], -1, x.shape[-1]))

    rows = []
    for pages in (int(p) for p in args.pages.split(",")):
        steps = pages * args.patches_per_page
        x = jax.random.normal(jax.random.key(pages), (1, steps, args.tokens, args.dim))
        ttm_mem, ttm_s = measure(machine, run_ttm, x, args.repeats, args.max_gib * 2**30)
        full_mem, full_s = measure(twin, run_full, x, args.repeats, args.max_gib * 2**30)
        per_page = lambda s: f"not run: temp > {args.max_gib:g} GiB" if s is None else f"{s / pages * 1e3:.2f}"  # noqa: E731
        rows.append((common.today(), common.machine(), common.command(), pages, steps * args.tokens,
                     per_page(ttm_s), per_page(full_s), f"{full_s / ttm_s:.2f}" if ttm_s and full_s else "-",
                     common.mib(ttm_mem), common.mib(full_mem), f"{full_mem / max(ttm_mem, 1):.2f}"))
        common.print_table(COLUMNS[3:], [r[3:] for r in rows[-1:]])
    print()
    common.print_table(COLUMNS[3:], [r[3:] for r in rows])
    if not args.no_write:
        common.append_rows(TITLE, COLUMNS, rows, note=(
            f"One document, {args.patches_per_page} patches/page, {args.tokens} tokens x width {args.dim} per patch; "
            f"forward + backward wrt parameters, jitted. TTM: m={args.memory_size}, r={args.num_read}, 2 transformer "
            "layers, 4 heads. Full: one pre-LN transformer block (4 heads) over all tokens of the document. "
            "temp = XLA compiled temp memory."))


if __name__ == "__main__":
    main()

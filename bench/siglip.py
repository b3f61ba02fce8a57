"""SigLIP loss over 8 simulated CPU devices: chunked ring vs all-gather, forward + backward.

    PYTHONPATH=. python bench/siglip.py [--sizes 1024,2048,4096,8192,16384] [--dim 384]

Reports XLA's compiled per-device temp memory and the median wall time of the jitted
value-and-grad. The ring keeps b x b logits per device instead of b x n; the table shows
how the temp memory ratio grows with n. Runs whose 8 devices together would need more
than --max_host_gib of temp memory are compiled (memory reported) but not timed.
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

import argparse  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from bench import common  # noqa: E402
from docjepa import losses, sharding  # noqa: E402

TITLE = "SigLIP loss: chunked ring vs all-gather"
COLUMNS = ("date", "machine", "command", "n", "d", "devices", "ring temp MiB/dev", "gather temp MiB/dev",
           "temp ratio", "ring ms", "gather ms", "time ratio")


def measure(fn, n: int, dim: int, mesh, repeats: int, max_host_bytes: float) -> tuple[int, float | None]:
    """(per-device temp bytes, median seconds or None if too large to run here)."""
    batch = NamedSharding(mesh, P(("data", "fsdp")))
    k1, k2 = jax.random.split(jax.random.key(0))
    zimg = jax.device_put(jax.random.normal(k1, (n, dim)), batch)
    ztxt = jax.device_put(jax.random.normal(k2, (n, dim)), batch)
    ids = jax.device_put(jnp.arange(n) % (n // 2), batch)  # every text has a twin: multi-positive
    step = jax.jit(jax.value_and_grad(
        lambda zi, zt, tp, b: fn(zi, zt, tp, b, mesh=mesh, text_ids=ids), argnums=(0, 1, 2, 3)))
    args = (zimg, ztxt, jnp.float32(2.3), jnp.float32(-10.0))
    compiled = step.lower(*args).compile()
    temp = common.compiled_memory(compiled)["temp"]
    if temp * mesh.size > max_host_bytes:
        return temp, None
    return temp, common.median_seconds(lambda: jax.block_until_ready(compiled(*args)), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1024,2048,4096,8192,16384")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max_host_gib", type=float, default=6.0)
    parser.add_argument("--no_write", action="store_true", help="print only, do not touch BENCHMARKS.md")
    args = parser.parse_args()
    mesh = sharding.make_mesh([("data", 8), ("fsdp", 1), ("tensor", 1)])
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        repeats = args.repeats if n <= 4096 else max(1, args.repeats - 2)
        ring_mem, ring_s = measure(losses.chunked_sigmoid_loss, n, args.dim, mesh, repeats, args.max_host_gib * 2**30)
        gat_mem, gat_s = measure(losses.gathered_sigmoid_loss, n, args.dim, mesh, repeats, args.max_host_gib * 2**30)
        ms = lambda s: "not run (memory)" if s is None else f"{s * 1e3:.1f}"  # noqa: E731
        ratio = f"{gat_s / ring_s:.2f}" if ring_s and gat_s else "-"
        rows.append((common.today(), common.machine(), common.command(), n, args.dim, mesh.size,
                     common.mib(ring_mem), common.mib(gat_mem), f"{gat_mem / max(ring_mem, 1):.2f}",
                     ms(ring_s), ms(gat_s), ratio))
        common.print_table(COLUMNS[3:], [r[3:] for r in rows[-1:]])
    print()
    common.print_table(COLUMNS[3:], [r[3:] for r in rows])
    if not args.no_write:
        common.append_rows(TITLE, COLUMNS, rows, note=(
            "Forward + backward (value_and_grad wrt zimg, ztxt, t', b), jitted, 8 simulated CPU devices "
            "(mesh data=8). temp = XLA compiled temp memory per device; ratios are gather / ring."))


if __name__ == "__main__":
    main()

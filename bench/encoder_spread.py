"""Where a trained encoder's window variation goes: Hiera block by block, initialisation vs checkpoint.

For the first `--windows` real validation windows, prints after the patch embedding (with
positions), each block and the final LayerNorm: the spread across windows (`token_spread`,
the measure behind `health/encoder_spread`) and the RMS of the residual stream, for the run's
initialisation (same seed) and its checkpoint; then the encoder parameters that moved most.
A collapse that grows a window-independent component shows as RMS rising while spread falls.

    PYTHONPATH=. python bench/encoder_spread.py --workdir runs/demo [--step 150]
"""

from __future__ import annotations

import argparse

import jax.numpy as jnp
import numpy as np
from flax import nnx

from docjepa import export, run_config, state as factory
from docjepa.data import pipeline
from docjepa.models import hiera
from docjepa.models.docjepa import DocJEPA, token_spread


def stream_stats(model: DocJEPA, patches: np.ndarray) -> list[tuple[str, float, float]]:
    """(stage, spread, RMS) of Hiera's residual stream on `patches` [n, H, W, 3]."""
    enc, cfg = model.encoder, model.encoder.config
    x = enc.patch_embed(model._pixels(jnp.asarray(patches)))
    x = x + enc.pos_embed[...].reshape(1, *cfg.tokens_shape, -1)
    x = hiera.unroll(x, len(cfg.stages) - 1, cfg.q_stride)

    def row(name: str, y: jnp.ndarray) -> tuple[str, float, float]:
        spread = token_spread(y.mean(axis=1)[None], jnp.ones((1, y.shape[0]), bool))
        return name, float(spread), float(jnp.sqrt(jnp.mean(jnp.square(y))))

    rows = [row("patch embedding + position", x)]
    for i, block in enumerate(enc.blocks):
        x = block(x)
        rows.append(row(f"block {i}", x))
    rows.append(row("final LayerNorm", enc.norm(x)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--step", type=int, default=None)
    ap.add_argument("--windows", type=int, default=64)
    ap.add_argument("--top", type=int, default=8, help="encoder parameters listed by change")
    args = ap.parse_args()
    cfg = run_config.load(args.workdir)
    trained, step = export.restore_model(args.workdir, args.step)
    init = factory.build_model(cfg, trained.window_head.proj.out_features, cfg.seed)
    batches = pipeline.eval_batches(cfg.data.dir, "val", batch_size=8, max_steps=cfg.data.max_steps,
                                    max_pages=cfg.data.max_pages, min_words=cfg.data.min_words, center=True)
    patches = []
    for batch in batches:
        patches.extend(batch["patches"][batch["step_mask"] & batch["example_mask"][:, None]])
        if len(patches) >= args.windows:
            break
    patches = np.stack(patches[: args.windows])
    print(f"{args.workdir}: {len(patches)} validation windows, initialisation vs step {step}")
    print("| stage | spread at init | spread at step | RMS at init | RMS at step |\n|---|---|---|---|---|")
    for (name, s0, r0), (_, s1, r1) in zip(stream_stats(init, patches), stream_stats(trained, patches)):
        print(f"| {name} | {s0:.3f} | {s1:.4f} | {r0:.2f} | {r1:.2f} |")
    before = dict(nnx.to_flat_state(nnx.state(init.encoder, nnx.Param)))
    moved = []
    for path, var in nnx.to_flat_state(nnx.state(trained.encoder, nnx.Param)):
        a, b = np.asarray(before[path][...]), np.asarray(var[...])
        moved.append((float(np.linalg.norm(b - a)), float(np.linalg.norm(a)), "/".join(map(str, path))))
    print("\nencoder parameters by change ||p - p0|| (with ||p0||; biases start at 0):")
    for change, norm, name in sorted(moved, reverse=True)[: args.top]:
        print(f"  {name}: {change:.3f} ({norm:.3f})")


if __name__ == "__main__":
    main()

"""Can the encoder learn to see in a budget? A supervised probe of training from scratch.

Trains the config's Hiera (random init) with a LayerNorm + linear head on one visual task,
the document category of a window, with cross-entropy on `--batch` windows drawn uniformly
from the training split per step (no streams, no text, no augmentation), and beside it a
linear classifier on 32 x 32 thumbnails of the same windows under each pixel normalisation
(`model.pixels`), same optimiser and batches. Validation accuracy every 50 steps, and the
majority rate.

    PYTHONPATH=. python bench/encoder_probe.py --config configs/demo.py --data data/demo --steps 100 --pixels ink

If the thumbnail classifier learns the task and Hiera does not, no objective built on Hiera's
features can use what the images show within that many steps (docs/evaluation.md).
"""

from __future__ import annotations

import argparse
import time

import cv2
import jax
import numpy as np
import optax
from flax import nnx

from bench import common
from docjepa import state as factory
from docjepa.data import pipeline
from docjepa.models import layers
from docjepa.models.docjepa import PIXELS


def windows(data: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Every window of a split ([n, 224, 224, 3] uint8) and its document's category id."""
    x, y = [], []
    for b in pipeline.eval_batches(data, split, batch_size=8, max_steps=12, max_pages=2, min_words=0, center=False):
        m = b["step_mask"] & b["example_mask"][:, None]
        x.append(b["patches"][m])
        y.append(np.broadcast_to(b["category_id"][:, None], m.shape)[m])
    return np.concatenate(x), np.concatenate(y)


def thumbnails(x: np.ndarray, pixels: str) -> np.ndarray:
    """[n, 32 * 32 * 3] thumbnails, normalised as the model normalises its input."""
    small = np.stack([cv2.resize(w, (32, 32), interpolation=cv2.INTER_AREA) for w in x]).astype(np.float32)
    return np.asarray(PIXELS[pixels](small)).reshape(len(x), -1)


class Probe(nnx.Module):
    """Hiera -> mean token -> LayerNorm -> linear, or (thumbnails) linear alone."""

    def __init__(self, encoder: nnx.Module | None, dim: int, classes: int):
        self.encoder = encoder
        self.norm = layers.layer_norm(dim, rngs=nnx.Rngs(1)) if encoder is not None else None
        self.head = layers.dense(dim, classes, ("embed", None), rngs=nnx.Rngs(2))

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.encoder is not None:
            tokens, _ = self.encoder.encode_patches(x)
            x = self.norm(tokens.mean(axis=-2))
        return self.head(x)


def train(probe: Probe, xt: np.ndarray, yt: np.ndarray, xv: np.ndarray, yv: np.ndarray, *, steps: int, lr: float,
          batch: int, name: str) -> None:
    graphdef, params = nnx.split(probe, nnx.Param)
    params = nnx.to_pure_dict(params)
    tx = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, lr, min(15, steps // 4), steps), weight_decay=0.05)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, x, y):
        def loss(p):
            return optax.softmax_cross_entropy_with_integer_labels(nnx.merge(graphdef, p)(x), y).mean()
        value, grads = jax.value_and_grad(loss)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, value

    predict = jax.jit(lambda params, x: nnx.merge(graphdef, params)(x).argmax(-1))
    rng, t0, losses = np.random.default_rng(0), time.time(), []
    for i in range(1, steps + 1):
        idx = rng.choice(len(xt), batch, replace=False)
        params, opt, value = step(params, opt, xt[idx], yt[idx])
        losses.append(float(value))
        if i % 50 == 0 or i == steps:
            pred = np.concatenate([np.asarray(predict(params, xv[j:j + 64])) for j in range(0, len(xv), 64)])
            print(f"{name} step {i}: train loss {np.mean(losses[-50:]):.3f}, val accuracy {np.mean(pred == yv):.3f} "
                  f"({time.time() - t0:.0f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/demo.py")
    parser.add_argument("--data", required=True)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=60)
    parser.add_argument("--pixels", choices=sorted(PIXELS), default=None, help="model.pixels (default: the config's)")
    args = parser.parse_args()
    cfg = common.load_config(args.config)
    if args.pixels:
        cfg.model.pixels = args.pixels
    xt, yt = windows(args.data, "train")
    xv, yv = windows(args.data, "val")
    classes = len(pipeline.read_manifest(args.data)["categories"])
    print(f"{len(xt)} training / {len(xv)} validation windows, {classes} categories, "
          f"majority rate {np.bincount(yv).max() / len(yv):.3f}; {common.machine()}", flush=True)
    for pixels in PIXELS:
        train(Probe(None, 32 * 32 * 3, classes), thumbnails(xt, pixels), yt, thumbnails(xv, pixels), yv,
              steps=args.steps, lr=args.lr, batch=args.batch, name=f"linear on 32x32 thumbnails, {pixels} pixels")
    model = factory.build_model(cfg, 384, cfg.seed)
    train(Probe(model, model.encoder.out_dim, classes), xt, yt, xv, yv, steps=args.steps,
          lr=args.lr, batch=args.batch, name=f"{cfg.model.hiera.name} from scratch, {cfg.model.pixels} pixels")


if __name__ == "__main__":
    main()

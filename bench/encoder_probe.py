"""Can the encoder learn to see in a budget? A probe of training Hiera from scratch on windows.

Trains the config's Hiera (random init) with a LayerNorm + linear head on `--batch` windows
drawn uniformly from the training split per step (no streams, no memory, no augmentation), and
beside it the same head on 32 x 32 thumbnails of the same windows under each pixel
normalisation (`model.pixels`), same optimiser and batches. `--objective`:

- `category`: cross-entropy on the document category of the window; validation accuracy and
  the majority rate.
- `siglip`: the window text objective alone, SigLIP between the head's embedding and the
  window's (centred) text target over the batch, learnable t' and b as in training; validation
  window image->text R@1 / R@10 against every validation window's target, and the spread of
  the pooled features across windows (`health/encoder_spread`'s measure).

    PYTHONPATH=. python bench/encoder_probe.py --config configs/demo.py --data data/demo --steps 100 --pixels ink
    PYTHONPATH=. python bench/encoder_probe.py --config configs/demo.py --data data/demo --objective siglip --pixels ink
    ... --skip_thumbnails --save hiera.safetensors   # then train with --config.model.hiera.init_from=hiera.safetensors

If the thumbnail classifier learns the task and Hiera does not, no objective built on Hiera's
features can use what the images show within that many steps; if Hiera learns the text
objective here but not in training, the difference is in what lies between (docs/evaluation.md).
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from typing import Callable

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import optax
import safetensors.numpy
from flax import nnx

from bench import common
from docjepa import losses, state as factory
from docjepa.data import pipeline
from docjepa.models import hiera, layers
from docjepa.models.docjepa import PIXELS, l2_normalize


def windows(data: str, split: str) -> dict[str, np.ndarray]:
    """Every window of a split with a text target: pixels [n, 224, 224, 3] uint8, its document's
    category id, its centred text target and text id."""
    out = {"x": [], "category": [], "emb": [], "text_id": [], "doc": []}
    for b in pipeline.eval_batches(data, split, batch_size=8, max_steps=12, max_pages=2, min_words=1, center=True):
        m = b["window_mask"] & b["step_mask"] & b["example_mask"][:, None]
        out["x"].append(b["patches"][m])
        out["category"].append(np.broadcast_to(b["category_id"][:, None], m.shape)[m])
        out["emb"].append(b["window_emb"][m])
        out["text_id"].append(b["window_text_id"][m])
        out["doc"].append(np.broadcast_to(b["record_index"][:, None], m.shape)[m])
    out = {k: np.concatenate(v) for k, v in out.items()}
    order = np.argsort(out["doc"], kind="stable")  # documents in turn, each in reading order
    return {k: v[order] for k, v in out.items()}


def batches(n: int, batch: int, streams: int, seed: int = 0):
    """Window indices per step. `streams` = 0: `batch` windows drawn uniformly. Otherwise
    `streams` x `batch` readers, each walking the split's windows in reading order from its own
    start; a step takes the next window of every reader of one group, the groups in turn (1:
    every reader every step, as training's document streams do; more: consecutive steps see
    different documents)."""
    rng = np.random.default_rng(seed)
    if not streams:
        while True:
            yield rng.choice(n, batch, replace=False)
    pos = rng.integers(0, n, (streams, batch))
    for i in itertools.count():
        g = i % streams
        yield pos[g] % n
        pos[g] += 1


def thumbnails(x: np.ndarray, pixels: str) -> np.ndarray:
    """[n, 32 * 32 * 3] thumbnails, normalised as the model normalises its input."""
    small = np.stack([cv2.resize(w, (32, 32), interpolation=cv2.INTER_AREA) for w in x]).astype(np.float32)
    return np.asarray(PIXELS[pixels](small)).reshape(len(x), -1)


class Probe(nnx.Module):
    """Hiera -> pooled tokens -> LayerNorm -> linear, or (thumbnails) linear alone; with `siglip`,
    the output is L2-normalised and SigLIP's t' and b ride along. `pool`: "mean" of the output
    tokens, or "flatten" (each token LayerNormed, then all of them in their spatial order: the
    head sees where on the window each feature lies, as the thumbnail map sees its pixels)."""

    def __init__(self, encoder: nnx.Module | None, dim: int, out: int, siglip: bool, batch: int,
                 pool: str = "mean", tokens: int = 1):
        self.encoder, self.pool = encoder, pool
        self.norm = layers.layer_norm(dim, rngs=nnx.Rngs(1)) if encoder is not None else None
        width = dim * (tokens if pool == "flatten" else 1)
        self.head = layers.dense(width, out, ("embed", None), rngs=nnx.Rngs(2))
        self.scale = losses.SigLIPTemperature(math.log(10.0), -math.log(batch)) if siglip else None

    def features(self, x: jax.Array) -> jax.Array:
        if self.encoder is None:
            return x
        tokens, _ = self.encoder.encode_patches(x)
        return tokens.mean(axis=-2) if self.pool == "mean" else tokens

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.features(x)
        if self.norm is not None:
            x = self.norm(x)
        y = self.head(x.reshape(x.shape[0], -1))
        return y if self.scale is None else l2_normalize(y)


def spread(f: np.ndarray) -> float:
    """RMS over channels of the std across windows, over the RMS of the features."""
    f = f.reshape(len(f), -1, f.shape[-1]).mean(axis=1)
    return float(np.sqrt(f.var(axis=0).mean() / max(np.square(f).mean(), 1e-12)))


def recall(emb: np.ndarray, target: np.ndarray, text_id: np.ndarray) -> tuple[float, float]:
    """Image->text R@1 / R@10 of each window among every window's target (equal texts count)."""
    sims = emb @ target.T
    top = np.argsort(-sims, axis=1)[:, :10]
    hit = text_id[top] == text_id[:, None]
    return float(hit[:, 0].mean()), float(hit.any(axis=1).mean())


# objective -> (loss of (probe, x, batch of the split's columns), validation report of the probe)
OBJECTIVES: dict[str, tuple[Callable, Callable]] = {
    "category": (
        lambda probe, x, b: optax.softmax_cross_entropy_with_integer_labels(probe(x), b["category"]).mean(),
        lambda out, feats, v: f"val accuracy {np.mean(out.argmax(-1) == v['category']):.3f}",
    ),
    "siglip": (
        lambda probe, x, b: losses.sigmoid_loss(probe(x), b["emb"], *probe.scale(),
                                                labels=losses.labels_from_ids(b["text_id"], b["text_id"])),
        lambda out, feats, v: "val window R@1 / R@10 {:.4f} / {:.4f}, feature spread {:.4f}".format(
            *recall(out, v["emb"], v["text_id"]), spread(feats)),
    ),
}


def train(probe: Probe, xt: np.ndarray, t: dict, xv: np.ndarray, v: dict, *, objective: str, steps: int, lr: float,
          batch: int, name: str, freeze: bool = False, streams: int = 0) -> Probe:
    """Train a copy of `probe` (with `freeze`, everything but the encoder); return the trained copy."""
    loss_fn, report = OBJECTIVES[objective]
    graphdef, params = nnx.split(probe, nnx.Param)
    params = nnx.to_pure_dict(params)
    tx = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, lr, min(15, steps // 4), steps), weight_decay=0.05)
    if freeze:
        tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()},
                                   {k: "frozen" if k == "encoder" else "train" for k in params})
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, x, b):
        value, grads = jax.value_and_grad(lambda p: loss_fn(nnx.merge(graphdef, p), x, b))(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, value

    @jax.jit
    def predict(params, x):
        probe = nnx.merge(graphdef, params)
        return probe(x), probe.features(x)

    columns = [k for k in t if k != "x"]
    t0, values, draws = time.time(), [], batches(len(xt), batch, streams)
    for i in range(1, steps + 1):
        idx = next(draws)
        params, opt, value = step(params, opt, xt[idx], {k: jnp.asarray(t[k][idx]) for k in columns})
        values.append(float(value))
        if i % 50 == 0 or i == steps:
            out, feats = (np.concatenate(z) for z in zip(*(
                jax.device_get(predict(params, xv[j:j + 64])) for j in range(0, len(xv), 64))))
            print(f"{name} step {i}: train loss {np.mean(values[-50:]):.3f}, {report(out, feats, v)} "
                  f"({time.time() - t0:.0f} s)", flush=True)
    return nnx.merge(graphdef, params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/demo.py")
    parser.add_argument("--data", required=True)
    parser.add_argument("--objective", choices=sorted(OBJECTIVES), default="category")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=60)
    parser.add_argument("--pixels", choices=sorted(PIXELS), default=None, help="model.pixels (default: the config's)")
    parser.add_argument("--skip_thumbnails", action="store_true", help="train Hiera only")
    parser.add_argument("--save", default="", help="write the trained Hiera here (.safetensors, Meta's names): "
                                                   "what model.hiera.init_from reads")
    parser.add_argument("--pool", choices=("mean", "flatten"), default="mean", help="Hiera's tokens -> the head")
    parser.add_argument("--streams", type=int, default=0,
                        help="0: iid windows; G: G groups of --batch readers in reading order, one group a step")
    parser.add_argument("--freeze", action="store_true", help="keep Hiera at its initialisation; train the head only")
    args = parser.parse_args()
    cfg = common.load_config(args.config)
    if args.pixels:
        cfg.model.pixels = args.pixels
    t, v = windows(args.data, "train"), windows(args.data, "val")
    classes = len(pipeline.read_manifest(args.data)["categories"])
    dim = t["emb"].shape[1]
    out = classes if args.objective == "category" else dim
    chance = (f"majority rate {np.bincount(v['category']).max() / len(v['category']):.3f}" if args.objective == "category"
              else "chance R@1 / R@10 {:.4f} / {:.4f}".format(*(np.mean([np.sum(v["text_id"] == i) * k / len(v["text_id"])
                                                                        for i in v["text_id"]]) for k in (1, 10))))
    print(f"{len(t['x'])} training / {len(v['x'])} validation windows, {classes} categories, {chance}; "
          f"{common.machine()}", flush=True)
    kw = dict(objective=args.objective, steps=args.steps, lr=args.lr, batch=args.batch, streams=args.streams)
    if not args.skip_thumbnails:
        for pixels in PIXELS:
            train(Probe(None, 32 * 32 * 3, out, args.objective == "siglip", args.batch), thumbnails(t["x"], pixels), t,
                  thumbnails(v["x"], pixels), v, name=f"linear on 32x32 thumbnails, {pixels} pixels", **kw)
    model = factory.build_model(cfg, dim, cfg.seed)
    tokens = model.encode_patches(jnp.zeros((1, *t["x"].shape[1:]), jnp.uint8))[0].shape[-2]
    probe = train(Probe(model, model.encoder.out_dim, out, args.objective == "siglip", args.batch, args.pool, tokens),
                  t["x"], t, v["x"], v, freeze=args.freeze,
                  name=f"{cfg.model.hiera.name} {'frozen at init' if args.freeze else 'from scratch'}, "
                       f"{args.pool} pool, {cfg.model.pixels} pixels", **kw)
    if args.save:
        safetensors.numpy.save_file(hiera.meta_state_dict(probe.encoder.encoder), args.save)
        print(f"Hiera written to {args.save}", flush=True)


if __name__ == "__main__":
    main()

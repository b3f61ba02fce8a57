"""Mask pooling and self-distillation of layout regions (SelfDocSeg's BYOL).

SelfDocSeg (Maity et al., ICDAR 2023) learns layout features without labels by
pooling an encoder's feature map over each region of a page's pseudo-layout mask and asking
the region vectors of two photometrically augmented views to agree, through BYOL's online
predictor and momentum (EMA) target branch (Grill et al. 2020, arXiv:2006.07733). Here a region
is a 4-connected component of a window's pseudo-layout cells (`data.layout_grid` per side,
`data/pseudo_layout.py`), pooled on the map of Hiera stage `model.layout_stage`. The
augmentations are BYOL's photometric ones (colour jitter, colour drop, Gaussian blur,
solarisation); no crop and no flip, so both views share the window's regions cell for cell.

The online branch is the model's encoder with `model.byol` (projector, predictor). The target
branch is an EMA of the encoder and the projector, `state["target"]`: never differentiated,
moved after each step towards the online weights with `loss.byol_momentum` (BYOL's cosine
schedule to 1 over `train.steps` with `loss.byol_momentum_cosine`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from docjepa.models.docjepa import PRETEXTS, DocJEPA, pick_windows

# BYOL's two view distributions (Grill et al. 2020, Table 6), crops and flips left out:
# probabilities of Gaussian blur and of solarisation per view.
VIEWS = ({"blur": 1.0, "solarize": 0.0}, {"blur": 0.1, "solarize": 0.2})
JITTER = {"p": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.1}
GRAYSCALE_P = 0.2
BLUR_SIGMA = (0.1, 2.0)   # pixels, drawn per window
BLUR_RADIUS = 11          # a 23-tap kernel: BYOL's 10% of a 224-px image

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)


def _grey(x: jax.Array) -> jax.Array:
    """[K, H, W, 3] in [0, 1] -> luma [K, H, W, 1]."""
    return (x @ _LUMA)[..., None]


def _per_window(x: jax.Array) -> jax.Array:
    return x[:, None, None, None]


def _rotate_hue(x: jax.Array, turns: jax.Array) -> jax.Array:
    """Rotate each window's chroma by `turns` of a full circle in YIQ space (a linear hue shift)."""
    yiq = x @ _RGB_TO_YIQ.T
    angle = 2 * jnp.pi * turns[:, None, None]
    c, s = jnp.cos(angle), jnp.sin(angle)
    i, q = yiq[..., 1], yiq[..., 2]
    return jnp.stack([yiq[..., 0], c * i - s * q, s * i + c * q], axis=-1) @ _YIQ_TO_RGB.T


def gaussian_blur(x: jax.Array, sigma: jax.Array) -> jax.Array:
    """[K, H, W, C] blurred by a separable Gaussian of `sigma` [K] pixels, edges reflected."""
    t = jnp.arange(-BLUR_RADIUS, BLUR_RADIUS + 1, dtype=jnp.float32)
    w = jnp.exp(-0.5 * jnp.square(t / sigma[:, None]))
    w = w / jnp.sum(w, axis=1, keepdims=True)                                    # [K, taps]
    h, width = x.shape[1], x.shape[2]
    r = BLUR_RADIUS
    rows = jnp.pad(x, ((0, 0), (r, r), (0, 0), (0, 0)), mode="reflect")
    x = sum(_per_window(w[:, i]) * rows[:, i:i + h] for i in range(2 * r + 1))
    cols = jnp.pad(x, ((0, 0), (0, 0), (r, r), (0, 0)), mode="reflect")
    return sum(_per_window(w[:, i]) * cols[:, :, i:i + width] for i in range(2 * r + 1))


def augment(windows: jax.Array, key: jax.Array, blur_p: float, solarize_p: float) -> jax.Array:
    """One BYOL view of windows [K, H, W, 3] (pixels 0..255): colour jitter (brightness,
    contrast, saturation, hue, in this order where BYOL shuffles it; p 0.8), colour drop (p 0.2),
    Gaussian blur (`blur_p`), solarisation (`solarize_p`), each drawn per window. Float32 pixels
    0..255, nothing moved."""
    k = windows.shape[0]
    keys = jax.random.split(key, 9)
    u = lambda i, lo=0.0, hi=1.0: jax.random.uniform(keys[i], (k,), minval=lo, maxval=hi)  # noqa: E731
    x = windows.astype(jnp.float32) / 255.0
    j = JITTER
    y = x * _per_window(u(1, 1 - j["brightness"], 1 + j["brightness"]))
    mean = jnp.mean(_grey(y), axis=(1, 2, 3), keepdims=True)
    y = (y - mean) * _per_window(u(2, 1 - j["contrast"], 1 + j["contrast"])) + mean
    y = _grey(y) + (y - _grey(y)) * _per_window(u(3, 1 - j["saturation"], 1 + j["saturation"]))
    y = jnp.clip(_rotate_hue(jnp.clip(y, 0.0, 1.0), u(4, -j["hue"], j["hue"])), 0.0, 1.0)
    x = jnp.where(_per_window(u(0) < j["p"]), y, x)
    x = jnp.where(_per_window(u(5) < GRAYSCALE_P), jnp.broadcast_to(_grey(x), x.shape), x)
    x = jnp.where(_per_window(u(6) < blur_p), gaussian_blur(x, u(7, *BLUR_SIGMA)), x)
    x = jnp.where(_per_window(u(8) < solarize_p), jnp.where(x < 0.5, x, 1.0 - x), x)
    return x * 255.0


def region_labels(cells: jax.Array) -> jax.Array:
    """Pseudo-layout cells [K, g, g] -> int32 [K, g, g]: each region cell labelled with the
    smallest flat index of its 4-connected region, -1 off regions (label propagation)."""
    g = cells.shape[1]
    inside = cells.astype(bool)
    none = g * g
    labels = jnp.where(inside, jnp.arange(none, dtype=jnp.int32).reshape(g, g), none)

    def spread(lab: jax.Array) -> jax.Array:
        pad = jnp.pad(lab, ((0, 0), (1, 1), (1, 1)), constant_values=none)
        near = jnp.minimum(jnp.minimum(pad[:, :-2, 1:-1], pad[:, 2:, 1:-1]),
                           jnp.minimum(pad[:, 1:-1, :-2], pad[:, 1:-1, 2:]))
        return jnp.where(inside, jnp.minimum(lab, near), none)

    def changing(carry: tuple[jax.Array, jax.Array]) -> jax.Array:
        return jnp.any(carry[0] != carry[1])

    _, labels = jax.lax.while_loop(changing, lambda c: (c[1], spread(c[1])), (labels, spread(labels)))
    return jnp.where(inside, labels, -1)


def regions(cells: jax.Array, count: int) -> tuple[jax.Array, jax.Array]:
    """The `count` largest regions of each window's pseudo-layout cells [K, g, g]: membership
    [K, g*g, count] (cell in region) and [K, count] whether the region exists (windows with
    fewer regions are padded with empty ones). Ties go to the region found first in raster order."""
    k, g, _ = cells.shape
    labels = region_labels(cells).reshape(k, g * g)
    sizes = jnp.sum(jax.nn.one_hot(labels, g * g, dtype=jnp.int32), axis=1)     # [K, g*g]; -1 counts nowhere
    size, ids = jax.lax.top_k(sizes, count)
    present = size > 0
    return (labels[:, :, None] == ids[:, None, :]) & present[:, None, :], present


def mask_pool(features: jax.Array, member: jax.Array) -> jax.Array:
    """Mean of a feature map over each region: features [K, V, h, w, C] (V views of K
    windows), member [K, h*w, R] -> [K, V, R, C]; an empty region pools to zeros."""
    k, v, h, w, c = features.shape
    weight = member.astype(jnp.float32)
    weight = weight / jnp.maximum(jnp.sum(weight, axis=1, keepdims=True), 1.0)
    return jnp.einsum("knr,kvnc->kvrc", weight.astype(features.dtype), features.reshape(k, v, h * w, c))


def online_part(tree: dict[str, Any]) -> dict[str, Any]:
    """The subtree of a params-shaped tree (params, abstract params, shardings) that the target
    branch keeps an EMA of: the encoder and BYOL's projector."""
    return {"encoder": tree["encoder"], "projector": tree["byol"]["projector"]}


def with_target(params: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """`params` with the encoder and projector replaced by the target's: merged with the model's
    graphdef, the target branch as a model."""
    return {**params, "encoder": target["encoder"], "byol": {**params["byol"], "projector": target["projector"]}}


def momentum(loss_cfg: mlc.ConfigDict, step: jax.Array, steps: int) -> jax.Array:
    """The EMA momentum at `step`: `loss.byol_momentum`, or with `loss.byol_momentum_cosine`
    BYOL's 1 - (1 - base) (cos(pi step / steps) + 1) / 2, from the base to 1 at the last step."""
    base = jnp.float32(loss_cfg.byol_momentum)
    if not loss_cfg.byol_momentum_cosine:
        return base
    progress = jnp.minimum(step.astype(jnp.float32) / max(steps, 1), 1.0)
    return 1.0 - (1.0 - base) * (jnp.cos(jnp.pi * progress) + 1.0) / 2.0


def ema(target: Any, online: Any, tau: jax.Array) -> Any:
    """tau * target + (1 - tau) * online, leaf by leaf."""
    return jax.tree.map(lambda t, o: (tau * t + (1 - tau) * o).astype(t.dtype), target, online)


def outputs(online: DocJEPA, target: DocJEPA, patches: jax.Array, step_mask: jax.Array, cells: jax.Array,
            key: jax.Array, loss_cfg: mlc.ConfigDict) -> dict[str, jax.Array]:
    """What the BYOL term reads, for `loss.byol_windows` real windows drawn per step: two views
    of each, encoded by both branches in one Hiera pass each; "byol/online" [K, 2, R, D] the
    online predictions and "byol/target" [K, 2, R, D] the target projections (no gradient) of
    the `loss.byol_regions` largest regions of each view, "byol/valid" [K, R] 1.0 where the
    region exists in a real window. `target` is the model with the target's weights
    (`with_target`); `cells` [B, S, g, g] the pseudo-layout cells of the batch."""
    key = jax.random.fold_in(key, len(PRETEXTS))  # the pretexts draw from fold_in(key, i < len(PRETEXTS))
    k_pick, *k_views = jax.random.split(key, 1 + len(VIEWS))
    slots, real = pick_windows(step_mask, k_pick, loss_cfg.byol_windows)
    windows = jnp.asarray(patches).reshape(-1, *patches.shape[2:])[slots]
    views = jnp.stack([augment(windows, kv, v["blur"], v["solarize"]) for kv, v in zip(k_views, VIEWS)], axis=1)
    member, present = regions(jnp.asarray(cells).reshape(-1, *cells.shape[2:])[slots], loss_cfg.byol_regions)
    stage = online.layout_stage

    def pooled(model: DocJEPA) -> jax.Array:
        _, maps = model.encode_patches(views, (stage,))                       # [K, 2, h, w, C]
        if maps[stage].shape[2] * maps[stage].shape[3] != member.shape[1]:
            raise ValueError(f"data.layout_grid: the pseudo-layout targets are {cells.shape[2:]} cells per window, "
                             f"the map of model.layout_stage is {maps[stage].shape[2:4]}")
        return mask_pool(maps[stage], member)

    z = target.byol["projector"](pooled(target))
    return {"byol/online": online.byol["predictor"](online.byol["projector"](pooled(online))),
            "byol/target": jax.lax.stop_gradient(z),
            "byol/valid": (present & real[:, None]).astype(jnp.float32)}


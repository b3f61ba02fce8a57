"""The composed model: Hiera per patch -> Token Turing Machine over steps -> heads.

Input is a batch of examples, each a sequence of `S` patches of one document in reading
order (page after page, row-major inside a page), and each patch's window box on its page.
Outputs are L2-normalised embeddings in
the text encoder's space: one per step (aligned with the window text), one per page (mean
of the page's steps, aligned with the page text), one per example (memory summary).
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import ml_collections as mlc
from flax import nnx

from docjepa import losses, sharding
from docjepa.models import hiera, layers, ttm

# ImageNet statistics, as used to pretrain Meta's Hiera checkpoints.
_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255.0
_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255.0

# Pixel normalisations (`model.pixels`), uint8 -> float. "imagenet" is what Meta's weights
# expect. "ink" (for training from scratch) inverts the page: paper is 0 and black ink 4, so
# the mostly blank input adds no constant to every token; with ImageNet statistics paper sits
# at +2.1 everywhere, and a linear classifier of window thumbnails trained with Adam learns
# about half as much in 100 steps from such an offset input (docs/evaluation.md).
PIXELS = {
    "imagenet": lambda x: (x - _MEAN) / _STD,
    "ink": lambda x: (255.0 - x) / 64.0,
}

# Compute dtypes. float64 (under `jax.enable_x64`) is for numerical checks such as the
# sharded-vs-one-device test, not a training option (config validation refuses it).
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float64": jnp.float64}


def l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    x = layers.at_least_f32(x)
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


class Head(nnx.Module):
    """LayerNorm -> Dense into the text embedding space (the projection head)."""

    def __init__(self, dim: int, out: int, *, rngs: nnx.Rngs):
        self.norm = layers.layer_norm(dim, rngs=rngs)
        self.proj = layers.dense(dim, out, ("embed", "proj"), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return l2_normalize(self.proj(self.norm(layers.at_least_f32(x))))


def masked_mean(x: jax.Array, mask: jax.Array, axis: int | tuple[int, ...]) -> jax.Array:
    """Mean of `x` over `axis` where `mask` (broadcast to x without the last dim) is True."""
    w = mask.astype(x.dtype)[..., None]
    return jnp.sum(x * w, axis=axis) / jnp.maximum(jnp.sum(w, axis=axis), 1.0)


class LayoutHead(nnx.Module):
    """LayerNorm -> Dense to one logit per token of a stage map: is this cell inside a layout region?"""

    def __init__(self, dim: int, *, rngs: nnx.Rngs):
        self.norm = layers.layer_norm(dim, rngs=rngs)
        self.proj = layers.dense(dim, 1, ("embed", None), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.proj(self.norm(layers.at_least_f32(x)))[..., 0]


def flip_views(x: jax.Array, label: jax.Array) -> jax.Array:
    """The "Flip" pretext (Penarrubia et al. 2024, arXiv:2404.11585): windows [K, H, W, C] with
    label [K] in 0..3 -> bit 0 mirrors left-right, bit 1 upside down."""
    lr = (label & 1).astype(bool)[:, None, None, None]
    ud = (label & 2).astype(bool)[:, None, None, None]
    x = jnp.where(lr, x[:, :, ::-1], x)
    return jnp.where(ud, x[:, ::-1], x)


def strip_permutations(strips: int) -> np.ndarray:
    """[strips!, strips]: every order of `strips` strips, the "Sorting" pretext's classes."""
    return np.array(list(itertools.permutations(range(strips))), np.int32)


def strip_views(x: jax.Array, label: jax.Array, strips: int) -> jax.Array:
    """The "Sorting" pretext (same paper): each window [K, H, W, C] cut into `strips` horizontal
    strips of equal height, strip i of the view being strip perm[label][i] of the window."""
    k, h, w, c = x.shape
    if h % strips:
        raise ValueError(f"loss.sort_strips: {strips} strips do not divide {h}-px windows")
    cut = x.reshape(k, strips, h // strips, w, c)
    order = jnp.asarray(strip_permutations(strips))[label]              # [K, strips]
    return jnp.take_along_axis(cut, order[:, :, None, None, None], axis=1).reshape(k, h, w, c)


def pick_windows(step_mask: jax.Array, key: jax.Array, count: int) -> tuple[jax.Array, jax.Array]:
    """`count` slots of [B, S] drawn uniformly among the real windows (flat indices) and whether
    each is real (fewer real windows than `count`: the rest are padding, to be masked)."""
    flat = jnp.asarray(step_mask).reshape(-1)
    score = jnp.where(flat, jax.random.uniform(key, flat.shape), 2.0)
    slots = jnp.argsort(score)[:count]
    return slots, flat[slots]


class PretextHead(nnx.Module):
    """LayerNorm -> Dense from Hiera's mean token to the classes of a spatial pretext."""

    def __init__(self, dim: int, classes: int, *, rngs: nnx.Rngs):
        self.norm = layers.layer_norm(dim, rngs=rngs)
        self.proj = layers.dense(dim, classes, ("embed", None), rngs=rngs)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        return self.proj(self.norm(layers.at_least_f32(tokens).mean(axis=-2)))


class RegionMlp(nnx.Module):
    """LayerNorm -> MLP: BYOL's projector and predictor of mask-pooled region vectors (models/byol.py)."""

    def __init__(self, dim: int, hidden: int, out: int, *, rngs: nnx.Rngs):
        self.norm = layers.layer_norm(dim, rngs=rngs)
        self.mlp = layers.Mlp(dim, hidden, out, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.mlp(self.norm(layers.at_least_f32(x)))


# The spatial pretexts: name -> (number of classes, the views of windows for labels).
PRETEXTS = {
    "flip": (lambda strips: 4, lambda x, label, strips: flip_views(x, label)),
    "sort": (lambda strips: math.factorial(strips), strip_views),
}


class BoxEmbedding(nnx.Module):
    """A window's box on its page (x0, y0, x1, y1 as fractions of the page) -> a vector added
    to the window's tokens.

    A patch alone cannot tell a letterhead from a footer or a title from a caption; where it
    lies on the page can, as the 2-D position embeddings of LayoutLM (Xu et al. 2020) tell
    text tokens. Sinusoids at octave frequencies (as NeRF / Perceiver encode coordinates)
    then a linear map; the map starts at zero, so training starts from the position-free model.
    """

    def __init__(self, dim: int, *, num_freqs: int = 6, rngs: nnx.Rngs, dtype: jnp.dtype | None = None):
        self.num_freqs = num_freqs
        self.proj = layers.dense(4 * 2 * num_freqs, dim, ("pos", "embed"), rngs=rngs, dtype=dtype,
                                 kernel_init=nnx.initializers.zeros_init())

    def __call__(self, boxes: jax.Array) -> jax.Array:
        freqs = jnp.pi * 2.0 ** jnp.arange(self.num_freqs, dtype=jnp.float32)
        angles = (boxes.astype(jnp.float32)[..., None] * freqs).reshape(*boxes.shape[:-1], -1)
        return self.proj(jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1))


class WindowPool(nnx.Module):
    """Hiera's output tokens of a window [..., N, C] -> one vector [..., dim]: what the window
    shows, the input of the no-memory ablation's heads and the skip around the TTM.

    "mean" averages the tokens, which keeps what the window holds but not where: document
    windows differ mostly in where their ink lies, and Hiera's tokens carry position only
    through what they learn to mix in. "flatten" LayerNorms each token and maps all of them, in
    their raster order, through one linear layer, so where each feature lies reaches the heads
    from the first step (a linear map of window thumbnails learns this in a few dozen steps; mean
    pooling hides it from Hiera trained from scratch: docs/evaluation.md).
    """

    def __init__(self, kind: str, width: int, tokens: int, dim: int, *, rngs: nnx.Rngs, dtype: jnp.dtype | None = None):
        if kind not in ("mean", "flatten"):
            raise ValueError(f"model.pool: {kind!r} is not one of ['flatten', 'mean']")
        self.kind = kind
        if kind == "flatten":
            self.norm = layers.layer_norm(width, rngs=rngs, dtype=dtype)
            self.proj = layers.dense(tokens * width, dim, ("mlp", "embed"), rngs=rngs, dtype=dtype)
        else:
            self.proj = layers.dense(width, dim, ("embed", "embed"), rngs=rngs, dtype=dtype) if dim != width else None

    def __call__(self, tokens: jax.Array, mean: jax.Array) -> jax.Array:
        """`mean`: the tokens' mean, which the caller has computed already (health, variance term)."""
        if self.kind == "mean":
            x = mean.astype(tokens.dtype)
            return x if self.proj is None else self.proj(x)
        x = self.norm(tokens)
        return self.proj(x.reshape(*x.shape[:-2], -1))


def token_spread(features: jax.Array, step_mask: jax.Array) -> jax.Array:
    """How much the window summaries ([B, S, C], `WindowPool`'s output: with the mean pool each
    window's mean output token) differ between windows: the RMS over channels of the
    standard deviation, across the batch's real windows, of each window's mean token, over the
    RMS of those features. Near 0 the encoder gives every window the same vector (collapse: what
    reads it can only use the window's position); at initialisation on the demo corpus 0.048 with
    ImageNet pixels, 0.34 with ink pixels (bench/encoder_spread.py)."""
    x = jax.lax.stop_gradient(features)   # [B, S, C]: each window's mean token
    mu = masked_mean(x, step_mask, axis=(0, 1))
    var = masked_mean(jnp.square(x - mu), step_mask, axis=(0, 1))
    power = masked_mean(jnp.square(x), step_mask, axis=(0, 1))
    return jnp.sqrt(jnp.mean(var) / jnp.maximum(jnp.mean(power), 1e-12))


class RunningMean(nnx.Param):
    """A statistic that rides in the parameter tree (sharded, checkpointed, restored with it)
    but is never trained: its gradient is zero, it is not weight-decayed (1-D), and the train
    step overwrites it with an exponential moving average (`update_running_means`)."""


class FeatureCentering(nnx.Module):
    """Subtract the mean feature before a head: the batch mean in training, its running mean
    at evaluation (BatchNorm's centering, without the scaling).

    Document windows are mostly blank paper, so at initialisation every window's pooled
    feature is nearly the same vector (mean pairwise cosine 0.97 on the demo corpus). Adam
    then grows that shared direction far faster than the small per-window differences and
    all embeddings collapse onto one point within a few dozen steps. Centring removes the
    shared direction, as the BatchNorm in SimCLR/BYOL projection heads does against collapse.
    """

    def __init__(self, dim: int):
        self.mean = RunningMean(jnp.zeros((dim,), jnp.float32), out_sharding=("norm",))

    def __call__(self, x: jax.Array, mask: jax.Array, train: bool) -> tuple[jax.Array, jax.Array | None]:
        """x [..., C] with mask [...] -> (centred x, the batch mean or None)."""
        if not train:
            return x - self.mean[...], None
        mu = masked_mean(x, mask, axis=tuple(range(x.ndim - 1)))
        return x - mu, jax.lax.stop_gradient(mu)


def update_running_means(params: dict, means: dict[str, jax.Array], momentum: float) -> dict:
    """The params dict with each centring's running mean moved towards this batch's mean."""
    out = dict(params)
    for name, mu in means.items():
        out[name] = {**params[name], "mean": momentum * params[name]["mean"] + (1 - momentum) * mu}
    return out


class DocJEPA(nnx.Module):
    """Hiera + TTM (or the no-memory ablation) + window/page/document heads + SigLIP scales."""

    def __init__(self, cfg: mlc.ConfigDict, *, embed_dim: int, loss_cfg: mlc.ConfigDict, bias_init: dict[str, float],
                 rngs: nnx.Rngs):
        dtype = DTYPES[cfg.dtype]
        self.encoder = hiera.create(
            cfg.hiera.name, rngs=rngs, dtype=dtype, remat=cfg.hiera.remat,
            drop_path_rate=cfg.hiera.drop_path_rate, **cfg.hiera.get("overrides", {}),
        )
        width = self.encoder.out_dim
        dim = cfg.ttm.dim or width
        self.in_proj = layers.dense(width, dim, ("embed", "embed"), rngs=rngs, dtype=dtype) if dim != width else None
        self.pool = WindowPool(cfg.get("pool", "mean"), width, self.encoder.config.out_tokens, dim, rngs=rngs,
                               dtype=dtype)
        self.box_embed = BoxEmbedding(dim, rngs=rngs, dtype=dtype) if cfg.window_position else None
        center = cfg.center_features
        self.step_center = FeatureCentering(dim) if center else None
        self.doc_center = FeatureCentering(dim) if center else None
        self.ttm = (
            ttm.TokenTuringMachine(
                dim, memory_size=cfg.ttm.memory_size, num_read=cfg.ttm.num_read, process=cfg.ttm.process,
                num_layers=cfg.ttm.num_layers, num_heads=cfg.ttm.num_heads, dtype=dtype, rngs=rngs,
            )
            if cfg.ttm.use_memory
            else None
        )
        # SelfDocSeg's dense signal: a per-token classifier of pseudo-layout regions on one stage's
        # map (data/pseudo_layout.py), trained by the focal-loss term `loss/layout`.
        self.layout_stage = cfg.layout_stage
        self.layout_head = (LayoutHead(self.encoder.stage_dims[cfg.layout_stage], rngs=rngs)
                            if loss_cfg.layout_weight > 0 else None)
        # Spatial pretexts (HTR's Flip and Sorting): a classifier per pretext with a non-zero weight,
        # reading `loss.pretext_windows` transformed copies of the batch's windows.
        self.pretext_windows, self.sort_strips = loss_cfg.get("pretext_windows", 8), loss_cfg.get("sort_strips", 4)
        heads = {name: PretextHead(self.encoder.out_dim, classes(self.sort_strips), rngs=rngs)
                 for name, (classes, _) in PRETEXTS.items() if loss_cfg.get(f"{name}_weight", 0.0) > 0}
        self.pretext_heads = nnx.Dict(heads) if heads else None
        # SelfDocSeg's self-distillation (models/byol.py): projector and predictor of region vectors
        # mask-pooled on the same stage's map; the projector's EMA copy is `state["target"]`.
        self.byol = (nnx.Dict(projector=RegionMlp(self.encoder.stage_dims[cfg.layout_stage], loss_cfg.byol_hidden,
                                                  loss_cfg.byol_dim, rngs=rngs),
                              predictor=RegionMlp(loss_cfg.byol_dim, loss_cfg.byol_hidden, loss_cfg.byol_dim, rngs=rngs))
                     if loss_cfg.get("byol_weight", 0.0) > 0 else None)
        self.window_head = Head(dim, embed_dim, rngs=rngs)
        self.page_head = Head(dim, embed_dim, rngs=rngs)
        self.doc_head = Head(dim, embed_dim, rngs=rngs)
        self.window_scale = losses.SigLIPTemperature(loss_cfg.t_prime_init, bias_init["window"])
        self.page_scale = losses.SigLIPTemperature(loss_cfg.t_prime_init, bias_init["page"])
        self.doc_scale = losses.SigLIPTemperature(loss_cfg.t_prime_init, bias_init["doc"])
        self.dtype = dtype
        self.pixels = cfg.get("pixels", "imagenet")
        self.variance_term = loss_cfg.get("variance_weight", 0.0) > 0
        self.ttm_encoder_grad = cfg.ttm.get("encoder_grad", True)

    def _pixels(self, patches: jax.Array) -> jax.Array:
        """uint8 [..., H, W, 3] -> normalised [n, H, W, 3] in the compute dtype."""
        x = PIXELS[self.pixels](patches.astype(jnp.float32))
        return x.reshape(-1, *patches.shape[-3:]).astype(self.dtype)

    def encode_patches(self, patches: jax.Array, stages: tuple[int, ...] = ()) -> tuple[jax.Array, dict[int, jax.Array]]:
        """uint8 [..., H, W, 3] -> Hiera tokens [..., N, C] and the feature maps [..., h, w, C_s]
        of the `stages` asked for (layout head, layout probe), from the same forward pass."""
        lead = patches.shape[:-3]
        if not stages:
            return self.encoder(self._pixels(patches)).reshape(*lead, -1, self.encoder.out_dim), {}
        tokens, maps = self.encoder(self._pixels(patches), return_intermediates=True)
        return tokens.reshape(*lead, *tokens.shape[1:]), {s: maps[s].reshape(*lead, *maps[s].shape[1:]) for s in stages}

    def encode_valid(self, patches: jax.Array, step_mask: jax.Array, stages: tuple[int, ...] = (),
                     pack: tuple[int, int] | None = None) -> tuple[jax.Array, dict[int, jax.Array]]:
        """`encode_patches` of [B, S] windows where, with `pack` = (rows, windows), only the first
        `windows` slots of each group of `rows` rows, real windows first, go through Hiera; the
        rest come back as zeros. The data pipeline (`pipeline.Budget`) keeps every real window
        within those slots, so padding costs no encoder FLOPs and the result on real windows is
        the unpacked one."""
        if pack is None:
            return self.encode_patches(patches, stages)
        (b, s), (rows, windows) = step_mask.shape, pack
        groups = b // rows
        order = jnp.argsort(jnp.logical_not(step_mask).reshape(groups, rows * s).astype(jnp.int32), axis=1,
                            stable=True)[:, :windows]                               # [G, w] slot of each packed window
        flat = patches.reshape(groups, rows * s, *patches.shape[2:])
        tokens, maps = self.encode_patches(jnp.take_along_axis(flat, order[:, :, None, None, None], axis=1), stages)
        group = jnp.arange(groups)[:, None]

        def scatter(x: jax.Array) -> jax.Array:  # [G, w, ...] -> [B, S, ...], zeros where not encoded
            full = jnp.zeros((groups, rows * s, *x.shape[2:]), x.dtype).at[group, order].set(x)
            return full.reshape(b, s, *x.shape[2:])

        return scatter(tokens), {k: scatter(v) for k, v in maps.items()}

    def pretexts(self, patches: jax.Array, step_mask: jax.Array, key: jax.Array) -> dict[str, jax.Array]:
        """Logits and one-hot targets of each pretext head on its own draw of windows, encoded in
        one Hiera pass (`loss.pretext_windows` per pretext)."""
        views, targets = [], {}
        for i, name in enumerate(self.pretext_heads):
            classes, transform = PRETEXTS[name]
            k_pick, k_label = jax.random.split(jax.random.fold_in(key, i))
            slots, real = pick_windows(step_mask, k_pick, self.pretext_windows)
            label = jax.random.randint(k_label, slots.shape, 0, classes(self.sort_strips))
            windows = jnp.asarray(patches).reshape(-1, *patches.shape[2:])[slots]
            views.append(transform(windows, label, self.sort_strips))
            targets[name] = jax.nn.one_hot(label, classes(self.sort_strips)) * real[:, None]
        tokens, _ = self.encode_patches(jnp.stack(views))                  # [P, K, N, C]
        out = {}
        for i, name in enumerate(self.pretext_heads):
            out[f"pretext/{name}"] = self.pretext_heads[name](tokens[i])
            out[f"pretext/{name}_target"] = targets[name]
        return out

    def initial_memory(self, batch: int) -> jax.Array | None:
        """The memory a document starts from, [batch, m, C] float32; None without the TTM."""
        return None if self.ttm is None else self.ttm.initial_memory(batch)

    def __call__(self, patches: jax.Array, step_mask: jax.Array, page_ids: jax.Array, boxes: jax.Array, *,
                 max_pages: int, memory: jax.Array | None = None, reset: jax.Array | None = None,
                 stage: int | None = None, trace: bool = False, train: bool = False,
                 pack: tuple[int, int] | None = None, pretext_key: jax.Array | None = None,
                 ttm_tokens: bool = False) -> dict[str, jax.Array]:
        """Embeddings per step, page and document; the memory to carry; with `stage`, that
        Hiera stage's maps.

        patches uint8 [B, S, H, W, 3], step_mask [B, S], page_ids [B, S] (page of each step
        within the example, -1 on padding), boxes [B, S, 4] (window box / page size).
        `memory` [B, m, C]: each row's memory after its previous chunk; `reset` [B]: rows whose
        chunk begins a document (they start from `memory_init`). "doc" is the document
        embedding after this chunk: the memory read out by the document head, or without the
        TTM (the no-memory ablation, which carries nothing) the mean of this chunk's steps.
        With the layout head, "layout" [B, S, h, w]: its logits on stage `model.layout_stage`.
        With `trace`, "trace" [B, S, C] is the reader's state after each step: the mean memory
        token, or without the TTM the mean of the chunk's step features so far (memory probes).
        With `train`, features are centred on this batch and its means come back as
        "feature_means" for `update_running_means`; "health" holds `token_spread` of Hiera's
        output (logged as health/encoder_spread). With `loss.variance_weight` > 0, "encoder_features"
        [B, S, C] is Hiera's mean output token per step (the variance term). `pack`: see `encode_valid`. With pretext heads
        and a `pretext_key`, "pretext/<name>" [K, classes] are their logits on K transformed
        copies of real windows and "pretext/<name>_target" the one-hot labels (zero rows where
        fewer than K windows are real)."""
        head_stage = () if self.layout_head is None else (self.layout_stage,)
        stages = tuple(sorted(set(head_stage) | ({stage} if stage is not None else set())))
        tokens, maps = self.encode_valid(patches, step_mask, stages, pack)  # [B, S, N, C]
        tokens = sharding.constrain(tokens, ("act_batch", None, "act_length", "act_embed"))
        window_features = layers.at_least_f32(tokens).mean(axis=2)  # [B, S, C]: the variance term
        summary = self.pool(tokens, window_features)  # [B, S, C]: what each window shows
        # Health: the spread of what reads the windows sees of them (with model.pool=flatten the
        # mean token may stay alike across windows while the flattened map differs).
        health = {"encoder_spread": token_spread(summary, step_mask)} if train else {}
        if self.in_proj is not None:
            tokens = self.in_proj(tokens)
        if self.box_embed is not None:
            where = self.box_embed(boxes).astype(tokens.dtype)
            tokens, summary = tokens + where[:, :, None, :], summary + where
        if self.ttm is not None:
            # The window's summary is one more token the TTM reads and writes, and a skip around
            # it: a step's output is what the window shows plus what the memory adds to it.
            inputs = jnp.concatenate([summary[:, :, None, :], tokens], axis=2)
            if not self.ttm_encoder_grad:  # Hiera learns from the skip only (docs/evaluation.md)
                inputs = jax.lax.stop_gradient(inputs)
            outputs, memory, *states = self.ttm(inputs, step_mask, memory, reset, trace=trace)  # [B, S, r, C], [B, m, C]
            steps = outputs.mean(axis=2) + summary
            doc = memory.mean(axis=1)
        else:  # no-memory ablation: each step is its window's summary
            steps = summary
            doc = masked_mean(steps, step_mask, axis=1)
            if trace:  # the mean of the chunk's steps so far
                w = step_mask.astype(steps.dtype)[..., None]
                states = [jnp.cumsum(steps * w, axis=1) / jnp.maximum(jnp.cumsum(w, axis=1), 1.0)]
        steps = layers.at_least_f32(steps)
        means = {}
        if self.step_center is not None:
            steps, means["step_center"] = self.step_center(steps, step_mask, train)
            doc, means["doc_center"] = self.doc_center(layers.at_least_f32(doc), step_mask.any(axis=1), train)
        onehot = (page_ids[..., None] == jnp.arange(max_pages)) & step_mask[..., None]  # [B, S, P]
        pages = jnp.einsum("bsp,bsc->bpc", onehot.astype(steps.dtype), steps)
        pages = pages / jnp.maximum(onehot.sum(axis=1), 1)[..., None]
        return {
            **(self.pretexts(patches, step_mask, pretext_key)
               if pretext_key is not None and self.pretext_heads is not None else {}),
            "window": self.window_head(steps),
            "page": self.page_head(pages),
            "doc": self.doc_head(doc),
            "page_present": onehot.any(axis=1),
            **({} if self.ttm is None else {"memory": memory}),
            **({"trace": layers.at_least_f32(states[0])} if trace else {}),
            **({} if stage is None else {"stage": maps[stage]}),
            **({} if self.layout_head is None else {"layout": self.layout_head(maps[self.layout_stage])}),
            **({"feature_means": means, "health": health} if train else {}),
            **({"encoder_features": window_features} if self.variance_term else {}),
            # With `ttm_tokens` (and the TTM), "tokens" [B, S, r, C]: the TTM's output tokens of each
            # step, what stage 2 projects into the language model (docjepa/models/bridge.py).
            **({"tokens": outputs} if ttm_tokens and self.ttm is not None else {}),
        }

"""Hiera image encoder (Ryali et al. 2023, "Hiera: A Hierarchical Vision Transformer without
the Bells-and-Whistles"), in Flax NNX, loadable from Meta's PyTorch weights.

Hiera is a plain ViT made hierarchical by three tricks, all kept here:
  * tokens are "unrolled" once, right after the patch embedding, so that every 2x2 max-pool
    of a later stage is a reshape + max over a leading axis and every mask unit (8x8 tokens
    at stage 1) is a contiguous run of tokens: no gather, no padding;
  * stages 1-2 attend inside mask units only; stages 3-4 attend globally (the first block
    of a stage still uses the previous stage's attention, as in the reference);
  * the first block of stages 2-4 max-pools the queries and the residual (q-pooling) and
    doubles width and heads.
Intermediate stage outputs are "rerolled" back to image layout on request; the last stage
has consumed every unroll, so the final tokens come out in raster order.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from docjepa import sharding
from docjepa.models import layers

# The reference uses torch's exact (erf) GELU.
_gelu = functools.partial(jax.nn.gelu, approximate=False)


@dataclasses.dataclass(frozen=True)
class HieraConfig:
    """Architecture and compute options; the defaults are Meta's image Hiera (base)."""

    embed_dim: int = 96                   # width of stage 1; doubles at every transition
    num_heads: int = 1                    # heads of stage 1; doubles at every transition
    stages: tuple[int, ...] = (2, 3, 16, 3)
    input_size: tuple[int, int] = (224, 224)
    in_chans: int = 3
    patch_kernel: tuple[int, int] = (7, 7)
    patch_stride: tuple[int, int] = (4, 4)
    patch_padding: tuple[int, int] = (3, 3)
    mask_unit_size: tuple[int, int] = (8, 8)  # in tokens at stage 1
    mask_unit_attn: tuple[bool, ...] = (True, True, False, False)
    q_stride: tuple[int, int] = (2, 2)
    dim_mul: float = 2.0
    head_mul: float = 2.0
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32              # compute dtype; parameters stay float32
    softmax_fp32: bool = True             # attention softmax in float32 under bf16 compute
    remat: bool = False                   # rematerialise each block in the backward pass

    def __post_init__(self):
        for name in ("stages", "input_size", "patch_kernel", "patch_stride", "patch_padding",
                     "mask_unit_size", "mask_unit_attn", "q_stride"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        try:
            object.__setattr__(self, "dtype", jnp.dtype(self.dtype))
        except TypeError as e:
            raise ValueError(f"HieraConfig.dtype: not a dtype: {self.dtype!r}") from e
        self._validate()

    def _validate(self) -> None:
        def fail(field: str, msg: str):
            raise ValueError(f"HieraConfig.{field}: {msg}")

        if not self.stages or min(self.stages) < 1:
            fail("stages", f"need one or more stages of at least one block, got {self.stages}")
        if len(self.mask_unit_attn) != len(self.stages):
            fail("mask_unit_attn", f"needs one entry per stage ({len(self.stages)}), got {self.mask_unit_attn}")
        if self.embed_dim < 1 or self.num_heads < 1:
            fail("embed_dim", f"embed_dim {self.embed_dim} and num_heads {self.num_heads} must be positive")
        for name in ("input_size", "patch_kernel", "patch_stride", "patch_padding", "mask_unit_size", "q_stride"):
            if len(getattr(self, name)) != 2:
                fail(name, f"needs two entries (height, width), got {getattr(self, name)}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            fail("drop_path_rate", f"must be in [0, 1), got {self.drop_path_rate}")
        for size, k, s, p in zip(self.input_size, self.patch_kernel, self.patch_stride, self.patch_padding):
            if size % s or (size + 2 * p - k) // s + 1 != size // s:
                fail("input_size", f"{self.input_size} does not give input/stride tokens with patch "
                                   f"kernel {self.patch_kernel}, stride {self.patch_stride}, padding {self.patch_padding}")
        pool = [q ** (len(self.stages) - 1) for q in self.q_stride]
        if any(mu % p for mu, p in zip(self.mask_unit_size, pool)):
            fail("mask_unit_size", f"{self.mask_unit_size} must be divisible by q_stride**(stages-1) = {tuple(pool)}")
        if any(t % mu for t, mu in zip(self.tokens_shape, self.mask_unit_size)):
            unit = tuple(mu * s for mu, s in zip(self.mask_unit_size, self.patch_stride))
            fail("input_size", f"{self.input_size} is not a whole number of mask units of {unit} pixels")
        dim, heads = self.embed_dim, self.num_heads
        for stage in range(len(self.stages)):
            if dim % heads:
                fail("num_heads", f"stage {stage + 1}: width {dim} is not divisible by {heads} heads")
            dim, heads = int(dim * self.dim_mul), int(heads * self.head_mul)

    @property
    def tokens_shape(self) -> tuple[int, int]:
        """Token grid after the patch embedding, e.g. (56, 56) at 224x224."""
        return tuple(i // s for i, s in zip(self.input_size, self.patch_stride))

    @property
    def out_tokens(self) -> int:
        """Tokens of the last stage (49 at 224x224): each stage transition q-pools by q_stride."""
        return math.prod(self.tokens_shape) // math.prod(self.q_stride) ** (len(self.stages) - 1)


SIZES: dict[str, HieraConfig] = {
    # Meta's image models (facebookresearch/hiera, hiera.py); parameter counts in docs/hiera.md.
    "hiera_tiny_224": HieraConfig(embed_dim=96, num_heads=1, stages=(1, 2, 7, 2)),
    "hiera_small_224": HieraConfig(embed_dim=96, num_heads=1, stages=(1, 2, 11, 2)),
    "hiera_base_224": HieraConfig(embed_dim=96, num_heads=1, stages=(2, 3, 16, 3)),
    "hiera_base_plus_224": HieraConfig(embed_dim=112, num_heads=2, stages=(2, 3, 16, 3)),
    "hiera_large_224": HieraConfig(embed_dim=144, num_heads=2, stages=(2, 6, 36, 4)),
    "hiera_huge_224": HieraConfig(embed_dim=256, num_heads=4, stages=(2, 6, 36, 4)),
    # Same structure at a CPU-friendly width, for tests and the demo.
    "hiera_tiny_test": HieraConfig(embed_dim=32, num_heads=1, stages=(1, 1, 2, 1)),
}


def _unroll_layout(levels: int, size: Sequence[int], stride: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """How [B, H, W, C] splits, and the axis order of Hiera's unrolled tokens.

    With h = h0*sy**L + d_L*sy**(L-1) + ... + d_1 (d_1 the finest stride digit), H splits as
    (h0, d_L, ..., d_1) and the unrolled order is (d_1y, d_1x, ..., d_Ly, d_Lx, h0, w0): pooling
    the finest 2x2 is a max over the leading axis, and the trailing (h0, w0) enumerate mask
    units. Returns the split of (H, W) and the permutation of [B, *split, C].
    """
    (h, w), (sy, sx) = size, stride
    split = (h // sy ** levels, *([sy] * levels), w // sx ** levels, *([sx] * levels))
    y0, x0 = 1, levels + 2  # axes of h0 and w0; digit d_k of H sits at y0 + 1 + levels - k
    digits = [ax for k in range(1, levels + 1) for ax in (y0 + 1 + levels - k, x0 + 1 + levels - k)]
    return split, (0, *digits, y0, x0, len(split) + 1)


def unroll(x: jax.Array, levels: int, stride: Sequence[int]) -> jax.Array:
    """[B, H, W, C] image-layout tokens -> [B, H*W, C] in unrolled order (`levels` strides)."""
    b, h, w, c = x.shape
    split, perm = _unroll_layout(levels, (h, w), stride)
    return x.reshape(b, *split, c).transpose(perm).reshape(b, h * w, c)


def reroll(x: jax.Array, levels: int, size: Sequence[int], stride: Sequence[int]) -> jax.Array:
    """Inverse of `unroll`: [B, N, C] with `levels` strides left -> [B, H, W, C] image layout."""
    b, _, c = x.shape
    split, perm = _unroll_layout(levels, size, stride)
    full = (b, *split, c)
    x = x.reshape(tuple(full[p] for p in perm)).transpose(np.argsort(perm))
    return x.reshape(b, *size, c)


def _max_pool(x: jax.Array, stride: int) -> jax.Array:
    """Max over the finest stride of unrolled tokens: a 2-D max-pool as a reshape."""
    b, n, c = x.shape
    return x.reshape(b, stride, n // stride, c).max(axis=1)


# Logical axes of the residual stream [B, N, C] between blocks.
TOKENS = ("act_batch", "act_length", "act_embed")


class QKV(nnx.Module):
    """The fused q/k/v projection with its kernel [dim, 3, heads, head_dim], annotated
    ("embed", None, "heads", "kv"): tensor parallelism then splits whole heads, each device
    holding the q, k and v of its heads, where a flat [dim, 3 * dim_out] kernel cut into
    contiguous blocks would hand one device all of q and part of k (Meta's layout, converted on
    load and export)."""

    def __init__(self, dim: int, heads: int, head_dim: int, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        init = nnx.initializers.xavier_uniform(in_axis=0, out_axis=(1, 2, 3))
        self.kernel = layers.param(init, (dim, 3, heads, head_dim), ("embed", None, "heads", "kv"), rngs)
        self.bias = layers.param(nnx.initializers.zeros_init(), (3, heads, head_dim), (None, "heads", "kv"), rngs)
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        """[..., dim] -> [..., 3, heads, head_dim]."""
        kernel, bias = self.kernel[...].astype(self.dtype), self.bias[...].astype(self.dtype)
        return jnp.einsum("...c,cthd->...thd", x.astype(self.dtype), kernel) + bias


class MaskUnitAttention(nnx.Module):
    """Attention inside mask units (windows of contiguous unrolled tokens) or global, with
    optional q-pooling: queries are max-pooled so the block's output has 1/q_stride tokens."""

    def __init__(self, dim: int, dim_out: int, heads: int, *, q_stride: int, window_size: int,
                 use_mask_unit_attn: bool, softmax_fp32: bool, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.heads, self.dim_out = heads, dim_out
        self.q_stride, self.window_size = q_stride, window_size
        self.use_mask_unit_attn, self.softmax_fp32 = use_mask_unit_attn, softmax_fp32
        self.qkv = QKV(dim, heads, dim_out // heads, dtype=dtype, rngs=rngs)
        self.proj = layers.dense(dim_out, dim_out, ("heads", "embed"), rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, n, _ = x.shape
        windows = n // (self.q_stride * self.window_size) if self.use_mask_unit_attn else 1
        # Token t of window w sits at t * windows + w (mask units are the trailing axis).
        qkv = self.qkv(x).reshape(b, n // windows, windows, 3, self.heads, self.dim_out // self.heads)
        qkv = sharding.constrain(qkv, ("act_batch", None, None, None, "act_heads", None))
        q, k, v = (qkv[:, :, :, i].transpose(0, 2, 3, 1, 4) for i in range(3))  # [B, W, H, T, D]
        if self.q_stride > 1:
            q = q.reshape(*q.shape[:3], self.q_stride, -1, q.shape[-1]).max(axis=3)
        out = layers.attention(q, k, v, softmax_fp32=self.softmax_fp32)
        return self.proj(out.transpose(0, 3, 1, 2, 4).reshape(b, -1, self.dim_out))


class HieraBlock(nnx.Module):
    """Pre-norm transformer block; at a stage transition it widens and pools the residual."""

    def __init__(self, dim: int, dim_out: int, heads: int, *, q_stride: int, window_size: int,
                 use_mask_unit_attn: bool, drop_path: float, cfg: HieraConfig, rngs: nnx.Rngs):
        dtype = cfg.dtype
        self.q_stride = q_stride
        self.norm1 = layers.layer_norm(dim, rngs=rngs, dtype=dtype)
        self.attn = MaskUnitAttention(dim, dim_out, heads, q_stride=q_stride, window_size=window_size,
                                      use_mask_unit_attn=use_mask_unit_attn, softmax_fp32=cfg.softmax_fp32,
                                      dtype=dtype, rngs=rngs)
        self.norm2 = layers.layer_norm(dim_out, rngs=rngs, dtype=dtype)
        self.mlp = layers.Mlp(dim_out, int(dim_out * cfg.mlp_ratio), act=_gelu, rngs=rngs, dtype=dtype)
        self.proj = layers.dense(dim, dim_out, ("embed", "embed"), rngs=rngs, dtype=dtype) if dim != dim_out else None
        # Stochastic depth: dropout with one draw per sample is exactly drop path.
        self.drop_path = nnx.Dropout(drop_path, broadcast_dims=(1, 2), rngs=rngs) if drop_path > 0 else None

    def _drop(self, x: jax.Array, deterministic: bool) -> jax.Array:
        return x if self.drop_path is None else self.drop_path(x, deterministic=deterministic)

    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        x_norm = self.norm1(x)
        if self.proj is not None:
            x = _max_pool(self.proj(x_norm), self.q_stride)
        x = x + self._drop(self.attn(x_norm), deterministic)
        return x + self._drop(self.mlp(self.norm2(x)), deterministic)


class Hiera(nnx.Module):
    """Hiera encoder: NHWC images -> final tokens [B, N, C] (raster order, LayerNorm'd)."""

    def __init__(self, cfg: HieraConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        dtype = cfg.dtype
        self.patch_embed = nnx.Conv(
            cfg.in_chans, cfg.embed_dim, cfg.patch_kernel, strides=cfg.patch_stride,
            padding=tuple((p, p) for p in cfg.patch_padding), dtype=dtype,
            kernel_init=nnx.with_partitioning(nnx.initializers.truncated_normal(0.02), ("conv", "conv", "conv", "embed")),
            bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), ("embed",)),
            rngs=rngs)
        self.pos_embed = layers.param(nnx.initializers.truncated_normal(0.02),
                                      (math.prod(cfg.tokens_shape), cfg.embed_dim), ("pos", "embed"), rngs)

        # Per-block schedule, following the reference: a block's attention type lags one block
        # behind a stage change, so the pooling block of stage 3 still attends in mask units.
        depth = sum(cfg.stages)
        self.stage_ends = tuple(int(e) - 1 for e in np.cumsum(cfg.stages))
        drop_rates = np.linspace(0.0, cfg.drop_path_rate, depth)
        flat_q, window = math.prod(cfg.q_stride), math.prod(cfg.mask_unit_size)
        dim, heads, stage = cfg.embed_dim, cfg.num_heads, 0
        blocks = []
        for i in range(depth):
            dim_out, q_stride, use_mu = dim, 1, cfg.mask_unit_attn[stage]
            if i - 1 in self.stage_ends:
                dim_out, heads, stage = int(dim * cfg.dim_mul), int(heads * cfg.head_mul), stage + 1
                q_stride, window = flat_q, window // flat_q
            blocks.append(HieraBlock(dim, dim_out, heads, q_stride=q_stride, window_size=window,
                                     use_mask_unit_attn=use_mu, drop_path=float(drop_rates[i]), cfg=cfg, rngs=rngs))
            dim = dim_out
        self.blocks = nnx.List(blocks)
        self.norm = layers.layer_norm(dim, rngs=rngs, dtype=dtype)
        self.out_dim = dim
        # Channels of each stage's map (`return_intermediates`): the dims blocks switch to.
        self.stage_dims = tuple(blocks[e].attn.dim_out for e in self.stage_ends)

    def __call__(self, x: jax.Array, *, return_intermediates: bool = False, deterministic: bool = True
                 ) -> jax.Array | tuple[jax.Array, list[jax.Array]]:
        """Returns final tokens [B, N, C]; with `return_intermediates` also the output of every
        stage (before the final norm) as [B, h, w, C_stage] maps, like the reference."""
        cfg = self.config
        expected = (*cfg.input_size, cfg.in_chans)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"Hiera input: expected images [B, {', '.join(map(str, expected))}] (NHWC), "
                             f"got shape {tuple(x.shape)}")
        levels = len(cfg.stages) - 1
        x = self.patch_embed(x) + self.pos_embed[...].reshape(1, *cfg.tokens_shape, -1).astype(cfg.dtype)
        x = sharding.constrain(unroll(x, levels, cfg.q_stride), TOKENS)

        def run(block: HieraBlock, y: jax.Array) -> jax.Array:
            return block(y, deterministic=deterministic)

        if cfg.remat:
            run = nnx.remat(run)
        intermediates, stage = [], 0
        for i, block in enumerate(self.blocks):
            x = sharding.constrain(run(block, x), TOKENS)
            if return_intermediates and i in self.stage_ends:
                size = [t // q ** stage for t, q in zip(cfg.tokens_shape, cfg.q_stride)]
                intermediates.append(reroll(x, levels - stage, size, cfg.q_stride))
                stage += 1
        # Every unroll has been consumed by the last stage: x is already in raster order. The
        # reference normalises the mean-pooled token; here the norm is applied per token.
        x = self.norm(x)
        return (x, intermediates) if return_intermediates else x


def create(name: str, *, rngs: nnx.Rngs, **overrides: Any) -> Hiera:
    """Build a registered size (`SIZES`), with any `HieraConfig` field overridden."""
    if name not in SIZES:
        raise ValueError(f"hiera name: unknown size {name!r}; choose one of {sorted(SIZES)}")
    fields = {f.name for f in dataclasses.fields(HieraConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"hiera overrides: unknown HieraConfig field(s) {unknown}")
    return Hiera(dataclasses.replace(SIZES[name], **overrides), rngs=rngs)


def param_count(model: nnx.Module) -> int:
    """Number of parameters (works on abstract models from `nnx.eval_shape`)."""
    return sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


# ---------------------------------------------------------------------------------------------
# Meta's PyTorch weights.

# (our variable, the PyTorch shape, PyTorch -> our layout, our -> PyTorch layout)
_Target = tuple[nnx.Variable, tuple[int, ...], Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]


def _identity(a: np.ndarray) -> np.ndarray:
    return a


def _meta_targets(model: Hiera) -> dict[str, _Target]:
    """Meta's key -> (our variable, the PyTorch shape, PyTorch -> our layout, and back)."""
    targets: dict[str, _Target] = {}

    def linear(prefix: str, lin: nnx.Linear):
        targets[f"{prefix}.weight"] = (lin.kernel, lin.kernel.shape[::-1], np.transpose, np.transpose)
        targets[f"{prefix}.bias"] = (lin.bias, lin.bias.shape, _identity, _identity)

    def norm(prefix: str, ln: nnx.LayerNorm):
        targets[f"{prefix}.weight"] = (ln.scale, ln.scale.shape, _identity, _identity)
        targets[f"{prefix}.bias"] = (ln.bias, ln.bias.shape, _identity, _identity)

    kh, kw, cin, cout = model.patch_embed.kernel.shape
    targets["patch_embed.proj.weight"] = (model.patch_embed.kernel, (cout, cin, kh, kw),
                                          lambda a: a.transpose(2, 3, 1, 0), lambda a: a.transpose(3, 2, 0, 1))
    targets["patch_embed.proj.bias"] = (model.patch_embed.bias, (cout,), _identity, _identity)
    targets["pos_embed"] = (model.pos_embed, (1, *model.pos_embed.shape), lambda a: a[0], lambda a: a[None])
    for i, block in enumerate(model.blocks):
        norm(f"blocks.{i}.norm1", block.norm1)
        qkv = block.attn.qkv
        _, _, heads, hd = qkv.kernel.shape
        targets[f"blocks.{i}.attn.qkv.weight"] = (  # PyTorch [3 * dim_out, dim], rows (3, heads, hd)
            qkv.kernel, (3 * heads * hd, qkv.kernel.shape[0]),
            lambda a, s=qkv.kernel.shape: a.T.reshape(s), lambda a: a.reshape(a.shape[0], -1).T)
        targets[f"blocks.{i}.attn.qkv.bias"] = (qkv.bias, (3 * heads * hd,), lambda a, s=qkv.bias.shape: a.reshape(s),
                                                lambda a: a.reshape(-1))
        linear(f"blocks.{i}.attn.proj", block.attn.proj)
        norm(f"blocks.{i}.norm2", block.norm2)
        linear(f"blocks.{i}.mlp.fc1", block.mlp.fc1)
        linear(f"blocks.{i}.mlp.fc2", block.mlp.fc2)
        if block.proj is not None:
            linear(f"blocks.{i}.proj", block.proj)
    norm("norm", model.norm)
    return targets


def _listing(keys: Sequence[str], limit: int = 8) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_torch_state_dict(model: Hiera, state_dict: Mapping[str, Any], *,
                          ignore_prefixes: Sequence[str] = ("head.",)) -> None:
    """Copy Meta's Hiera weights (keyed by Meta's names) into `model`, in place.

    Kernels are transposed to our layout; every key and shape is checked first and all
    problems are reported in one ValueError, so a failed load leaves the model untouched.
    Keys under `ignore_prefixes` (the classifier head by default) are skipped.
    """
    targets = _meta_targets(model)
    given = {k for k in state_dict if not any(k.startswith(p) for p in ignore_prefixes)}
    missing, unexpected = set(targets) - given, given - set(targets)
    mismatched = [f"{k} {tuple(np.shape(state_dict[k]))} != {targets[k][1]}"
                  for k in sorted(given & set(targets)) if tuple(np.shape(state_dict[k])) != tuple(targets[k][1])]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_listing(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} with the wrong shape (given != expected): {_listing(mismatched)}")
    if problems:
        raise ValueError("Hiera state dict does not match the model: " + "; ".join(problems))
    for key, (var, _, to_ours, _) in targets.items():
        var[...] = jnp.asarray(to_ours(np.asarray(state_dict[key], dtype=np.float32)), dtype=var.dtype)


def meta_state_dict(model: Hiera) -> dict[str, np.ndarray]:
    """`model`'s weights under Meta's names and PyTorch layouts (float32): what
    `load_torch_state_dict` reads, so the two are inverses."""
    return {key: np.ascontiguousarray(from_ours(np.asarray(var[...], np.float32)))
            for key, (var, _, _, from_ours) in _meta_targets(model).items()}


_PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pkl")


def load_safetensors(model: Hiera, path: str | os.PathLike, **kwargs: Any) -> None:
    """Load Meta-named Hiera weights from a .safetensors file (see docs/hiera.md to convert)."""
    from safetensors.numpy import load_file

    path = os.fspath(path)
    if path.endswith(_PICKLE_SUFFIXES):
        raise ValueError(
            f"{path}: pickled PyTorch checkpoints are not loaded (they can run code). Convert once with "
            "torch: `sd = torch.load(p, map_location='cpu', weights_only=True)['model_state']; "
            "safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, 'hiera.safetensors')`")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such safetensors file")
    load_torch_state_dict(model, load_file(path), **kwargs)


_HF_RENAMES = (
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^pooler\.layernorm\.", "norm."),
    (r"^classifier\.", "head.projection."),
    (r"\.layernorm_before\.", ".norm1."),
    (r"\.layernorm_after\.", ".norm2."),
)


def meta_to_hf_names(state_dict: Mapping[str, Any], stages: Sequence[int]) -> dict[str, Any]:
    """The inverse of `hf_to_meta_names` for a `HieraModel` whose stages have `stages` blocks:
    Meta's `blocks.{i}` become `encoder.stages.{s}.layers.{j}`, `norm` the pooler's LayerNorm."""
    where = [(s, j) for s, n in enumerate(stages) for j in range(n)]
    block_re = re.compile(r"^blocks\.(\d+)\.")
    renames = [(re.compile(r"^" + re.escape(meta)), hf) for hf, meta in (
        ("embeddings.patch_embeddings.projection.", "patch_embed.proj."), ("pooler.layernorm.", "norm."))]
    out = {}
    for key, value in state_dict.items():
        if key == "pos_embed":
            key = "embeddings.position_embeddings"
        key = block_re.sub(lambda m: "encoder.stages.{}.layers.{}.".format(*where[int(m[1])]), key)
        key = key.replace(".norm1.", ".layernorm_before.").replace(".norm2.", ".layernorm_after.")
        for pattern, repl in renames:
            key = pattern.sub(repl, key)
        out[key] = value
    return out


def hf_config(cfg: HieraConfig) -> dict[str, Any]:
    """transformers' `HieraConfig` fields (config.json) for our architecture."""
    heads = [int(cfg.num_heads * cfg.head_mul ** i) for i in range(len(cfg.stages))]
    return {
        "model_type": "hiera", "architectures": ["HieraModel"], "embed_dim": cfg.embed_dim,
        "image_size": list(cfg.input_size), "patch_size": list(cfg.patch_kernel), "patch_stride": list(cfg.patch_stride),
        "patch_padding": list(cfg.patch_padding), "mlp_ratio": cfg.mlp_ratio, "depths": list(cfg.stages),
        "num_heads": heads, "embed_dim_multiplier": cfg.dim_mul, "num_query_pool": len(cfg.stages) - 1,
        "query_stride": list(cfg.q_stride), "masked_unit_size": list(cfg.mask_unit_size),
        "masked_unit_attention": list(cfg.mask_unit_attn), "num_channels": cfg.in_chans, "hidden_act": "gelu",
        "layer_norm_eps": 1e-6,
    }


def hf_to_meta_names(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Rename a Hugging Face `HieraModel` / `HieraForImageClassification` state dict to Meta's
    keys: HF nests blocks as `encoder.stages.{s}.layers.{j}` where Meta numbers them
    `blocks.{i}`, and HF's pooler LayerNorm is Meta's final `norm`. Other keys pass unchanged."""
    stage_re = re.compile(r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.")
    state = {k.removeprefix("hiera."): v for k, v in state_dict.items()}
    depths: dict[int, int] = {}
    for key in state:
        if m := stage_re.match(key):
            s, j = int(m[1]), int(m[2])
            depths[s] = max(depths.get(s, 0), j + 1)
    offsets = {s: sum(depths.get(t, 0) for t in range(s)) for s in depths}
    out = {}
    for key, value in state.items():
        key = stage_re.sub(lambda m: f"blocks.{offsets[int(m[1])] + int(m[2])}.", key)
        for pattern, repl in _HF_RENAMES:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out

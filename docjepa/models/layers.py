"""Building blocks shared by every model: layers whose parameters carry logical axis names.

Logical names (see `docjepa.sharding.LOGICAL_AXIS_RULES`) are attached here once, so that
Hiera, the TTM, the heads and the text encoder shard the same way without repeating rules.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from docjepa import sharding

Axes = Sequence[str | None]


def dense(
    in_features: int,
    out_features: int,
    axes: Axes,
    *,
    rngs: nnx.Rngs,
    use_bias: bool = True,
    dtype: jnp.dtype | None = None,
    kernel_init: Callable = nnx.initializers.xavier_uniform(),
) -> nnx.Linear:
    """nnx.Linear whose kernel is annotated `axes` (in, out) and bias `axes[-1]`."""
    return nnx.Linear(
        in_features,
        out_features,
        use_bias=use_bias,
        dtype=dtype,
        kernel_init=nnx.with_partitioning(kernel_init, tuple(axes)),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (axes[-1],)),
        rngs=rngs,
    )


def layer_norm(dim: int, *, rngs: nnx.Rngs, eps: float = 1e-6, dtype: jnp.dtype | None = None) -> nnx.LayerNorm:
    """LayerNorm with its scale and bias annotated as ("norm",), replicated by the rules."""
    return nnx.LayerNorm(
        dim,
        epsilon=eps,
        dtype=dtype,
        scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), ("norm",)),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), ("norm",)),
        rngs=rngs,
    )


def param(init: Callable, shape: Sequence[int], axes: Axes, rngs: nnx.Rngs) -> nnx.Param:
    """A free-standing parameter (position embeddings, memory init, temperatures)."""
    return nnx.Param(init(rngs.params(), tuple(shape)), out_sharding=tuple(axes))


class Mlp(nnx.Module):
    """fc1 -> activation -> fc2, the transformer feed-forward block."""

    def __init__(self, dim: int, hidden: int, out: int | None = None, *, act: Callable = jax.nn.gelu,
                 rngs: nnx.Rngs, dtype: jnp.dtype | None = None):
        self.fc1 = dense(dim, hidden, ("embed", "mlp"), rngs=rngs, dtype=dtype)
        self.fc2 = dense(hidden, out or dim, ("mlp", "embed"), rngs=rngs, dtype=dtype)
        self.act = act

    def __call__(self, x: jax.Array) -> jax.Array:
        hidden = sharding.constrain(self.fc1(x), ("act_batch", *[None] * (x.ndim - 2), "act_mlp"))
        return self.fc2(self.act(hidden))


def at_least_f32(x: jax.Array) -> jax.Array:
    """`x` upcast to float32 for a numerically sensitive op (softmax, norms, losses); a float64
    `x` (compute under `jax.enable_x64`, as the sharding-equivalence test runs) stays float64."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None,
              softmax_fp32: bool = True) -> jax.Array:
    """Scaled dot-product attention over [..., heads, tokens, head_dim] inputs.

    `mask` broadcasts to [..., heads, q_tokens, k_tokens]; True keeps a key. With
    `softmax_fp32` the logits are upcast so bf16 compute keeps an fp32 softmax.
    """
    scale = q.shape[-1] ** -0.5
    logits = jnp.einsum("...qd,...kd->...qk", q * scale, k)
    if softmax_fp32:
        logits = at_least_f32(logits)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("...qk,...kd->...qd", weights, v)

"""Token Turing Machine (Ryoo et al., "Token Turing Machines", CVPR 2023).

A document is read one step (one patch's tokens) at a time. A small external memory of
`m` tokens carries what was seen so far, so the cost per step is bounded by m + n tokens
instead of growing with the document as full attention over all patches would:

    read:    r tokens  = TokenLearner(memory ; inputs)
    process: outputs   = unit(r tokens)              (transformer | mixer | mlp)
    write:   memory'   = TokenLearner(memory ; outputs ; inputs)

The loop over steps is one `jax.lax.scan`, so compile time and program size do not depend
on the number of steps. Padded steps leave the memory untouched and output zeros. The memory
at the end of a chunk can be passed back in for the next chunk of the same document (training
and evaluation carry it across a whole document this way; see `data/pipeline.py: DocStreams`).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from docjepa import sharding
from docjepa.models import layers

# TokenLearner v1.1 in scenic uses a 64-wide bottleneck for its attention-map MLP.
TOKEN_LEARNER_HIDDEN = 64


class TokenMlp(nnx.Module):
    """Dense -> GELU -> Dense where the input or output dimension indexes tokens, not width.

    `layers.Mlp` annotates both ends as "embed"; token-indexed ends are "tokens" instead so
    the sharding rules never split them as if they were the model width.
    """

    def __init__(self, din: int, hidden: int, dout: int, *, in_axis: str, out_axis: str,
                 rngs: nnx.Rngs, dtype: jnp.dtype | None = None, out_bias: bool = True):
        self.fc1 = layers.dense(din, hidden, (in_axis, "mlp"), rngs=rngs, dtype=dtype)
        self.fc2 = layers.dense(hidden, dout, ("mlp", out_axis), rngs=rngs, dtype=dtype, use_bias=out_bias)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.gelu(self.fc1(x)))


class TokenLearner(nnx.Module):
    """Summarise [B, N, C] tokens into [B, k, C]: k learned softmax attention maps over N.

    TokenLearner (Ryoo et al. 2021), v1.1 form: LayerNorm -> MLP -> k logits per token,
    softmax over the N tokens, then a weighted sum of the (un-normalised) tokens per map.
    """

    def __init__(self, dim: int, num_tokens: int, *, rngs: nnx.Rngs, dtype: jnp.dtype | None = None):
        self.norm = layers.layer_norm(dim, rngs=rngs, dtype=dtype)
        # No output bias: the softmax over N is invariant to a per-map constant, so that bias
        # would receive an exactly-zero gradient (and Adam would amplify rounding noise in it).
        self.mlp = TokenMlp(dim, TOKEN_LEARNER_HIDDEN, num_tokens, in_axis="embed", out_axis="tokens",
                            rngs=rngs, dtype=dtype, out_bias=False)

    def __call__(self, x: jax.Array) -> jax.Array:
        logits = layers.at_least_f32(self.mlp(self.norm(x)))         # [B, N, k]
        weights = jax.nn.softmax(logits, axis=-2).astype(x.dtype)     # normalised over N
        return jnp.einsum("bnk,bnc->bkc", weights, x)


class SelfAttention(nnx.Module):
    """Multi-head self-attention with separate q/k/v projections (clean head sharding)."""

    def __init__(self, dim: int, num_heads: int, *, rngs: nnx.Rngs, dtype: jnp.dtype | None = None):
        if dim % num_heads:
            raise ValueError(f"model.ttm.num_heads: {num_heads} does not divide width {dim}")
        self.num_heads = num_heads
        self.q, self.k, self.v = (layers.dense(dim, dim, ("embed", "heads"), rngs=rngs, dtype=dtype)
                                  for _ in range(3))
        self.out = layers.dense(dim, dim, ("heads", "embed"), rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, n, c = x.shape

        def heads(t: jax.Array) -> jax.Array:
            return t.reshape(b, n, self.num_heads, c // self.num_heads).transpose(0, 2, 1, 3)

        y = layers.attention(heads(self.q(x)), heads(self.k(x)), heads(self.v(x)))
        return self.out(y.transpose(0, 2, 1, 3).reshape(b, n, c))


class TransformerBlock(nnx.Module):
    """Pre-LN transformer block: x + attn(LN x), then x + MLP(LN x)."""

    def __init__(self, dim: int, num_tokens: int, *, num_heads: int, mlp_ratio: float,
                 rngs: nnx.Rngs, dtype: jnp.dtype | None = None):
        del num_tokens  # attention does not depend on the token count
        self.norm1 = layers.layer_norm(dim, rngs=rngs, dtype=dtype)
        self.attn = SelfAttention(dim, num_heads, rngs=rngs, dtype=dtype)
        self.norm2 = layers.layer_norm(dim, rngs=rngs, dtype=dtype)
        self.mlp = layers.Mlp(dim, int(dim * mlp_ratio), rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MixerBlock(nnx.Module):
    """MLP-Mixer block (Tolstikhin et al. 2021): token-mixing MLP, then channel-mixing MLP."""

    def __init__(self, dim: int, num_tokens: int, *, num_heads: int, mlp_ratio: float,
                 rngs: nnx.Rngs, dtype: jnp.dtype | None = None):
        del num_heads
        self.norm1 = layers.layer_norm(dim, rngs=rngs, dtype=dtype)
        self.token_mlp = TokenMlp(num_tokens, max(1, int(num_tokens * mlp_ratio)), num_tokens,
                                  in_axis="tokens", out_axis="tokens", rngs=rngs, dtype=dtype)
        self.norm2 = layers.layer_norm(dim, rngs=rngs, dtype=dtype)
        self.channel_mlp = layers.Mlp(dim, int(dim * mlp_ratio), rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.token_mlp(self.norm1(x).swapaxes(1, 2)).swapaxes(1, 2)
        return x + self.channel_mlp(self.norm2(x))


class MlpBlock(nnx.Module):
    """Per-token residual MLP: the cheapest processing unit, no mixing across tokens."""

    def __init__(self, dim: int, num_tokens: int, *, num_heads: int, mlp_ratio: float,
                 rngs: nnx.Rngs, dtype: jnp.dtype | None = None):
        del num_tokens, num_heads
        self.norm = layers.layer_norm(dim, rngs=rngs, dtype=dtype)
        self.mlp = layers.Mlp(dim, int(dim * mlp_ratio), rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.mlp(self.norm(x))


PROCESS_UNITS: dict[str, Callable[..., nnx.Module]] = {
    "transformer": TransformerBlock,
    "mixer": MixerBlock,
    "mlp": MlpBlock,
}

# Segment embeddings: which of memory / processed output / input a token came from.
_MEMORY, _OUTPUT, _INPUT = range(3)


class TokenTuringMachine(nnx.Module):
    """Reads a sequence of token sets step by step through a learned external memory."""

    def __init__(self, dim: int, *, memory_size: int, num_read: int, process: str = "transformer",
                 num_layers: int = 2, num_heads: int = 4, mlp_ratio: float = 4.0,
                 dtype: jnp.dtype | None = None, rngs: nnx.Rngs):
        if process not in PROCESS_UNITS:
            raise ValueError(f"model.ttm.process: {process!r} is not one of {sorted(PROCESS_UNITS)}")
        for name, value in (("memory_size", memory_size), ("num_read", num_read), ("num_layers", num_layers)):
            if value < 1:
                raise ValueError(f"model.ttm.{name}: must be >= 1, got {value}")
        self.dim, self.dtype = dim, dtype
        self.memory_init = layers.param(nnx.initializers.normal(0.02), (memory_size, dim),
                                        ("memory", "embed"), rngs)
        # The paper adds embeddings so that read/write can tell memory from inputs
        # (Ryoo et al. 2023); a learned vector per segment does this for any token count.
        self.segment = layers.param(nnx.initializers.normal(0.02), (3, dim), ("pos", "embed"), rngs)
        self.read = TokenLearner(dim, num_read, rngs=rngs, dtype=dtype)
        unit = PROCESS_UNITS[process]
        self.blocks = nnx.List([unit(dim, num_read, num_heads=num_heads, mlp_ratio=mlp_ratio, rngs=rngs, dtype=dtype)
                                for _ in range(num_layers)])
        self.out_norm = layers.layer_norm(dim, rngs=rngs, dtype=dtype)
        self.write = TokenLearner(dim, memory_size, rngs=rngs, dtype=dtype)

    def step(self, memory: jax.Array, inputs: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One read-process-write step: memory [B, m, C] (float32 at least), inputs [B, n, C], valid
        [B] bool. Compute runs in the module's dtype; the memory stays in its own, so a long
        document's carry does not accumulate bfloat16 rounding."""
        dtype = self.dtype or memory.dtype
        seg = self.segment[...].astype(dtype)
        mem, inp = memory.astype(dtype) + seg[_MEMORY], inputs.astype(dtype) + seg[_INPUT]
        x = self.read(jnp.concatenate([mem, inp], axis=1))
        for block in self.blocks:
            x = block(x)
        out = self.out_norm(x).astype(dtype)
        new = self.write(jnp.concatenate([mem, out + seg[_OUTPUT], inp], axis=1)).astype(memory.dtype)
        keep = valid[:, None, None]
        return jnp.where(keep, new, memory), jnp.where(keep, out, jnp.zeros_like(out))

    def initial_memory(self, batch: int) -> jax.Array:
        """`memory_init` for `batch` rows, in float32 or wider (the carry's dtype)."""
        init = layers.at_least_f32(self.memory_init[...])
        return jnp.broadcast_to(init, (batch, *init.shape))

    def __call__(self, inputs: jax.Array, step_mask: jax.Array, memory: jax.Array | None = None,
                 reset: jax.Array | None = None, *, trace: bool = False) -> tuple[jax.Array, ...]:
        """inputs [B, S, N, C], step_mask [B, S] bool -> (outputs [B, S, r, C], memory [B, m, C])
        and, with `trace`, the mean memory token after each step [B, S, C] (memory probes).

        `memory` [B, m, C]: the rows' memory at the end of their previous chunk (default: the
        initial memory); `reset` [B] bool: rows that begin a new document start from
        `memory_init` instead. The returned memory is the carry into the rows' next chunk."""
        if inputs.ndim != 4 or inputs.shape[-1] != self.dim:
            raise ValueError(f"ttm inputs: expected [B, S, N, {self.dim}], got {inputs.shape}")
        if step_mask.shape != inputs.shape[:2]:
            raise ValueError(f"ttm step_mask: expected shape {inputs.shape[:2]}, got {step_mask.shape}")
        init = self.initial_memory(inputs.shape[0])
        if memory is None:
            memory = init
        else:
            if memory.shape != init.shape:
                raise ValueError(f"ttm memory: expected shape {init.shape}, got {memory.shape}")
            memory = layers.at_least_f32(memory)
            if reset is not None:
                memory = jnp.where(reset[:, None, None], init.astype(memory.dtype), memory)
        graphdef, state = nnx.split(self)

        def body(mem: jax.Array, xs: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, tuple[jax.Array, ...]]:
            mem, out = nnx.merge(graphdef, state).step(mem, *xs)
            mem = sharding.constrain(mem, ("act_batch", None, "act_embed"))  # the carry stays with its rows
            return mem, ((out, mem.mean(axis=1)) if trace else (out,))

        memory, ys = jax.lax.scan(body, memory, (inputs.swapaxes(0, 1), step_mask.swapaxes(0, 1).astype(bool)))
        return (ys[0].swapaxes(0, 1), memory, *(y.swapaxes(0, 1) for y in ys[1:]))

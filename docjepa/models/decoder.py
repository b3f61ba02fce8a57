"""The stage-2 language decoder: a Llama-family causal LM in Flax NNX, loaded from Hugging Face files.

Architecture (Touvron et al., "LLaMA: Open and Efficient Foundation Language Models", 2023, and
Llama 2, 2023): pre-norm transformer layers with RMSNorm (Zhang & Sennrich 2019), rotary position
embeddings (Su et al., "RoFormer", 2021), a SwiGLU feed-forward block (Shazeer 2020), no biases,
and grouped-query attention (Ainslie et al. 2023; `num_key_value_heads` < `num_attention_heads`).
Parameter names mirror the Hugging Face `LlamaForCausalLM` module tree, so a checkpoint maps
onto this module by name (torch Linear weights are [out, in] and are transposed on load).

Stage 2 prepends visual tokens to the prompt, so every entry point takes either token ids or
input embeddings (`Decoder.embed` gives the embeddings of ids).

Padding convention: any layout works (left-padded, right-padded, or a gap between a visual
prefix and a left-padded prompt). `attention_mask` marks real tokens; a token's position is the
number of real tokens before it (Hugging Face `generate` numbers positions the same way from the
attention mask), and padding slots are never attended to. `generate` reads each row's next-token
logits at its last real token and appends new tokens after the whole padded prompt, so left and
right padding give identical tokens. Logits at padding positions are meaningless.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from docjepa import sharding
from docjepa.models import layers
from docjepa.text import fill_from_hf, read_safetensors

# model_type values whose checkpoints have exactly the Llama layout and maths.
_MODEL_TYPES = ("llama",)
_ARCHITECTURES = ("LlamaForCausalLM", "LlamaModel")
# Tensors some older checkpoints store that the maths recomputes (the RoPE inverse frequencies).
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
TOKENS = ("act_batch", "act_length", "act_embed")


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """The fields of a Hugging Face Llama config.json that shape the network."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None

    @classmethod
    def from_hf(cls, raw: dict[str, Any], where: str = "config.json") -> DecoderConfig:
        """Read a Hugging Face config dict; anything that would change the maths is refused.

        Both config layouts are read: transformers 4 (`rope_theta`, `rope_scaling`) and
        transformers 5 (`rope_parameters: {rope_theta, rope_type}`). Defaults are those of
        transformers' `LlamaConfig`.
        """
        model_type = raw.get("model_type")
        if model_type not in _MODEL_TYPES:
            raise ValueError(f"{where}: model_type {model_type!r} is not supported "
                             f"(supported: {', '.join(_MODEL_TYPES)})")
        bad_arch = [a for a in raw.get("architectures") or () if a not in _ARCHITECTURES]
        if bad_arch:
            raise ValueError(f"{where}: architecture {bad_arch[0]!r} is not supported "
                             f"(supported: {', '.join(_ARCHITECTURES)})")
        rope = dict(raw.get("rope_parameters") or {})
        if raw.get("rope_scaling") is not None or rope.get("rope_type", "default") != "default":
            scaling = raw.get("rope_scaling") or rope
            raise ValueError(f"{where}: rope scaling {scaling!r} is not supported (only unscaled RoPE)")
        if raw.get("hidden_act", "silu") != "silu":
            raise ValueError(f"{where}: hidden_act {raw['hidden_act']!r} is not supported (supported: silu)")
        for flag in ("attention_bias", "mlp_bias"):
            if raw.get(flag):
                raise ValueError(f"{where}: {flag}=true is not supported (Llama has no biases)")
        required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
        missing = [n for n in required if raw.get(n) is None]
        if missing:
            raise ValueError(f"{where}: field {missing[0]!r} is missing")
        heads = raw["num_attention_heads"]
        kv_heads = raw.get("num_key_value_heads") or heads
        head_dim = raw.get("head_dim") or raw["hidden_size"] // heads
        eos = raw.get("eos_token_id")
        cfg = cls(
            vocab_size=raw["vocab_size"], hidden_size=raw["hidden_size"], intermediate_size=raw["intermediate_size"],
            num_hidden_layers=raw["num_hidden_layers"], num_attention_heads=heads, num_key_value_heads=kv_heads,
            head_dim=head_dim, rms_norm_eps=raw.get("rms_norm_eps", 1e-6),
            rope_theta=float(rope.get("rope_theta", raw.get("rope_theta", 10000.0))),
            max_position_embeddings=raw.get("max_position_embeddings", 2048),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            eos_token_ids=tuple(eos) if isinstance(eos, (list, tuple)) else (() if eos is None else (eos,)),
            pad_token_id=raw.get("pad_token_id"))
        if heads % kv_heads:
            raise ValueError(f"{where}: num_attention_heads {heads} is not a multiple of "
                             f"num_key_value_heads {kv_heads}")
        if head_dim % 2:
            raise ValueError(f"{where}: head_dim {head_dim} is odd; rotary embeddings rotate pairs of channels")
        return cfg


class KVCache(NamedTuple):
    """Keys and values of every layer in fixed-size buffers, so a decode loop keeps one shape.

    k, v: [layers, batch, max_len, kv_heads, head_dim]; `valid` [batch, max_len] marks slots that
    hold a real token (padding and not-yet-written slots are False); `index` is the next slot to
    write. Slots are in arrival order, so "slot <= query slot" is the causal mask.
    """

    k: jax.Array
    v: jax.Array
    valid: jax.Array
    index: jax.Array


def init_cache(cfg: DecoderConfig, batch: int, max_len: int, dtype: jnp.dtype = jnp.float32) -> KVCache:
    """An empty cache for `batch` rows of up to `max_len` tokens (prompt padding included)."""
    shape = (cfg.num_hidden_layers, batch, max_len, cfg.num_key_value_heads, cfg.head_dim)
    return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((batch, max_len), bool),
                   jnp.zeros((), jnp.int32))


def default_positions(attention_mask: jax.Array, cache: KVCache | None = None) -> jax.Array:
    """Position of each token = real tokens before it (in the cache and in this chunk).

    Padding gets the position of the next real token; its value does not matter since padding
    is never attended to (Hugging Face `generate` sets it to 0 for the same reason).
    """
    mask = attention_mask.astype(jnp.int32)
    before = jnp.cumsum(mask, axis=1) - mask
    if cache is not None:
        before = before + cache.valid.sum(axis=1, keepdims=True, dtype=jnp.int32)
    return before


def rope_tables(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """cos, sin [..., head_dim] for integer `positions`, in float32.

    Hugging Face Llama convention (non-interleaved): frequency i rotates channels i and
    i + head_dim/2, so the frequency table is repeated twice along the channel axis.
    """
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq
    angles = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def _rotate_half(x: jax.Array) -> jax.Array:
    half = x.shape[-1] // 2
    return jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate [B, T, heads, head_dim] by cos/sin [B, T, head_dim] (computed in float32)."""
    x32 = layers.at_least_f32(x)
    out = x32 * cos[:, :, None, :] + _rotate_half(x32) * sin[:, :, None, :]
    return out.astype(x.dtype)


class RMSNorm(nnx.Module):
    """x / rms(x) * weight, with the statistics in float32 whatever the compute dtype."""

    def __init__(self, dim: int, eps: float, *, rngs: nnx.Rngs, dtype: jnp.dtype | None = None):
        self.weight = layers.param(nnx.initializers.ones_init(), (dim,), ("norm",), rngs)
        self.eps = eps
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = layers.at_least_f32(x)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        dtype = self.dtype or x.dtype
        return normed.astype(dtype) * self.weight[...].astype(dtype)


class Attention(nnx.Module):
    """Causal grouped-query self-attention with RoPE on q and k and an optional KV cache."""

    def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs, dtype: jnp.dtype | None = None):
        d, h, kvh, hd = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = h, kvh, hd
        self.q_proj = layers.dense(d, h * hd, ("embed", "heads"), rngs=rngs, dtype=dtype, use_bias=False)
        self.k_proj = layers.dense(d, kvh * hd, ("embed", "heads"), rngs=rngs, dtype=dtype, use_bias=False)
        self.v_proj = layers.dense(d, kvh * hd, ("embed", "heads"), rngs=rngs, dtype=dtype, use_bias=False)
        self.o_proj = layers.dense(h * hd, d, ("heads", "embed"), rngs=rngs, dtype=dtype, use_bias=False)

    def __call__(self, x: jax.Array, rope: tuple[jax.Array, jax.Array], keep: jax.Array,
                 cache: tuple[jax.Array, jax.Array, int, jax.Array] | None = None,
                 ) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
        """x [B, T, D]; `keep` [B, 1, T, S] (True attends). `cache` = (k, v, layer, index) with
        the stacked [layers, B, S, kv_heads, head_dim] buffers: this chunk's keys and values are
        written at slots index..index+T-1 of `layer`, and the queries attend over all S slots."""
        b, t, _ = x.shape
        q = apply_rope(self.q_proj(x).reshape(b, t, self.num_heads, self.head_dim), *rope)
        k = apply_rope(self.k_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim), *rope)
        v = self.v_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        new_cache = None
        if cache is not None:
            k_all, v_all, layer, index = cache
            start = (layer, 0, index, 0, 0)
            k_all = jax.lax.dynamic_update_slice(k_all, k[None].astype(k_all.dtype), start)
            v_all = jax.lax.dynamic_update_slice(v_all, v[None].astype(v_all.dtype), start)
            k, v, new_cache = k_all[layer].astype(q.dtype), v_all[layer].astype(q.dtype), (k_all, v_all)
        # GQA: query head j reads kv head j // (heads / kv_heads), as HF's `repeat_kv` expands them.
        groups = self.num_heads // self.num_kv_heads
        k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
        q = sharding.constrain(q, ("act_batch", "act_length", "act_heads", None))
        o = layers.attention(q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), keep)
        return self.o_proj(o.transpose(0, 2, 1, 3).reshape(b, t, self.num_heads * self.head_dim)), new_cache


class SwiGLU(nnx.Module):
    """down(silu(gate(x)) * up(x)), Llama's feed-forward block."""

    def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs, dtype: jnp.dtype | None = None):
        d, m = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = layers.dense(d, m, ("embed", "mlp"), rngs=rngs, dtype=dtype, use_bias=False)
        self.up_proj = layers.dense(d, m, ("embed", "mlp"), rngs=rngs, dtype=dtype, use_bias=False)
        self.down_proj = layers.dense(m, d, ("mlp", "embed"), rngs=rngs, dtype=dtype, use_bias=False)

    def __call__(self, x: jax.Array) -> jax.Array:
        hidden = jax.nn.silu(self.gate_proj(x)) * self.up_proj(x)
        return self.down_proj(sharding.constrain(hidden, ("act_batch", "act_length", "act_mlp")))


class DecoderLayer(nnx.Module):
    """Pre-norm block: x += Attn(RMSNorm(x)); x += MLP(RMSNorm(x))."""

    def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs, dtype: jnp.dtype | None = None):
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, rngs=rngs, dtype=dtype)
        self.self_attn = Attention(cfg, rngs=rngs, dtype=dtype)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, rngs=rngs, dtype=dtype)
        self.mlp = SwiGLU(cfg, rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array, rope: tuple[jax.Array, jax.Array], keep: jax.Array,
                 cache: tuple[jax.Array, jax.Array, int, jax.Array] | None = None,
                 ) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
        a, cache = self.self_attn(self.input_layernorm(x), rope, keep, cache)
        x = x + a
        x = x + self.mlp(self.post_attention_layernorm(x))
        return sharding.constrain(x, TOKENS), cache


class Decoder(nnx.Module):
    """Llama causal LM: token embedding, pre-norm layers, final RMSNorm, lm head (tied or not).

    Parameters are float32; `dtype` is the compute dtype (activations, KV cache). Logits are
    returned in float32.
    """

    def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs, dtype: jnp.dtype = jnp.float32):
        self.cfg = cfg
        self.dtype = dtype
        self.embed_tokens = layers.param(nnx.initializers.normal(0.02), (cfg.vocab_size, cfg.hidden_size),
                                         ("vocab", "embed"), rngs)
        self.layers = nnx.List([DecoderLayer(cfg, rngs=rngs, dtype=dtype) for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, rngs=rngs, dtype=dtype)
        self.lm_head = None if cfg.tie_word_embeddings else layers.dense(
            cfg.hidden_size, cfg.vocab_size, ("embed", "vocab"), rngs=rngs, dtype=dtype, use_bias=False)

    def embed(self, input_ids: jax.Array) -> jax.Array:
        """Token embeddings [B, T, D] in the compute dtype (what `inputs_embeds` expects)."""
        return jnp.take(self.embed_tokens[...], input_ids, axis=0).astype(self.dtype)

    def logits(self, hidden: jax.Array) -> jax.Array:
        """float32 vocabulary logits of final hidden states."""
        if self.lm_head is None:
            out = hidden.astype(self.dtype) @ self.embed_tokens[...].astype(self.dtype).T
        else:
            out = self.lm_head(hidden)
        return out.astype(jnp.float32)

    def hidden(self, input_ids: jax.Array | None = None, *, inputs_embeds: jax.Array | None = None,
               attention_mask: jax.Array | None = None, positions: jax.Array | None = None,
               cache: KVCache | None = None) -> tuple[jax.Array, KVCache | None]:
        """Final-norm hidden states [B, T, D] (and the updated cache when one is given).

        Exactly one of `input_ids` [B, T] and `inputs_embeds` [B, T, D]. `attention_mask` [B, T]
        marks real tokens (default: all). `positions` default to `default_positions`. With a
        cache, the T tokens are written at slots cache.index.. and attend to everything before.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds.astype(self.dtype)
        b, t, _ = x.shape
        mask = jnp.ones((b, t), bool) if attention_mask is None else attention_mask.astype(bool)
        if positions is None:
            positions = default_positions(mask, cache)
        rope = rope_tables(positions, self.cfg.head_dim, self.cfg.rope_theta)
        q_slots = jnp.arange(t)
        if cache is None:
            k_slots, valid = q_slots, mask
        else:
            # dynamic_update_slice clamps an out-of-range start, which would overwrite earlier
            # slots; inside jit the caller sizes the cache (as `generate` does), outside we check.
            if not isinstance(cache.index, jax.core.Tracer) and int(cache.index) + t > cache.valid.shape[1]:
                raise ValueError(f"cache: {t} tokens at slot {int(cache.index)} overflow its "
                                 f"{cache.valid.shape[1]} slots")
            valid = jax.lax.dynamic_update_slice(cache.valid, mask, (0, cache.index))
            q_slots = q_slots + cache.index
            k_slots = jnp.arange(valid.shape[1])
        keep = (k_slots[None, :] <= q_slots[:, None])[None, None] & valid[:, None, None, :]
        x = sharding.constrain(x, TOKENS)
        k_all, v_all = (None, None) if cache is None else (cache.k, cache.v)
        for i, layer in enumerate(self.layers):
            layer_cache = None if cache is None else (k_all, v_all, i, cache.index)
            x, new = layer(x, rope, keep, layer_cache)
            if new is not None:
                k_all, v_all = new
        x = self.norm(x)
        if cache is None:
            return x, None
        return x, KVCache(k_all, v_all, valid, cache.index + t)

    def __call__(self, input_ids: jax.Array | None = None, *, inputs_embeds: jax.Array | None = None,
                 attention_mask: jax.Array | None = None, positions: jax.Array | None = None,
                 cache: KVCache | None = None) -> jax.Array | tuple[jax.Array, KVCache]:
        """float32 logits [B, T, vocab]; `(logits, cache)` when a cache is passed (see `hidden`)."""
        x, new_cache = self.hidden(input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                   positions=positions, cache=cache)
        logits = self.logits(x)
        return logits if cache is None else (logits, new_cache)


def _hf_key(path: tuple[Any, ...]) -> tuple[str, bool]:
    """Hugging Face tensor name of a `Decoder` parameter path, and whether to transpose it.

    Our module names mirror LlamaForCausalLM's, so the name is the path with "model." in front
    (the lm head sits outside `model.`); Linear kernels are stored [out, in] by torch.
    """
    if path == ("embed_tokens",):
        return "model.embed_tokens.weight", False
    if path == ("lm_head", "kernel"):
        return "lm_head.weight", True
    *module, leaf = path
    if leaf not in ("kernel", "weight"):
        raise ValueError(f"parameter {path} has no Hugging Face counterpart")
    return "model." + ".".join(str(p) for p in module) + ".weight", leaf == "kernel"


def load_decoder(model_dir: str | Path, dtype: jnp.dtype = jnp.float32) -> tuple[Decoder, DecoderConfig]:
    """Build `Decoder` from config.json and fill it from model.safetensors or its sharded form
    (model.safetensors.index.json + model-0000k-of-0000n.safetensors); parameters are float32.

    Every parameter must be present with the shape config.json implies, and every tensor of
    the checkpoint must be used (a tied checkpoint may still carry lm_head.weight): otherwise
    one ValueError line names the tensor.
    """
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{model_dir}: config.json not found")
    cfg = DecoderConfig.from_hf(json.loads(config_path.read_text()), where=str(config_path))
    tensors = read_safetensors(model_dir)
    model, used = fill_from_hf(model_dir, nnx.eval_shape(lambda: Decoder(cfg, rngs=nnx.Rngs(0), dtype=dtype)),
                               tensors, _hf_key)
    allowed = {"lm_head.weight"} if cfg.tie_word_embeddings else set()
    unexpected = sorted(k for k in tensors if k not in used and k not in allowed and not k.endswith(_IGNORED_SUFFIXES))
    if unexpected:
        raise ValueError(f"{model_dir}: tensor {unexpected[0]!r} in the checkpoint is not a parameter of "
                         f"the model config.json describes ({len(unexpected)} unexpected tensors)")
    return model, cfg


def _last_real(mask: jax.Array) -> jax.Array:
    """Index of each row's last True (its last real prompt token)."""
    t = mask.shape[1]
    return t - 1 - jnp.argmax(mask[:, ::-1], axis=1)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _generate(graphdef: nnx.GraphDef, state: nnx.State, prompt: jax.Array, prompt_mask: jax.Array,
              max_new_tokens: int, eos_ids: jax.Array, pad_id: jax.Array) -> jax.Array:
    model = nnx.merge(graphdef, state)
    b, t = prompt_mask.shape
    mask = prompt_mask.astype(bool)
    embeds = model.embed(prompt) if jnp.issubdtype(prompt.dtype, jnp.integer) else prompt
    # Prefill: the whole padded prompt in one pass; the last generated token is never fed back,
    # so t + max_new_tokens - 1 slots hold everything that is attended to.
    cache = init_cache(model.cfg, b, t + max_new_tokens - 1, model.dtype)
    hidden, cache = model.hidden(inputs_embeds=embeds, attention_mask=mask, cache=cache)
    first = jnp.argmax(model.logits(hidden[jnp.arange(b), _last_real(mask)]), axis=-1).astype(jnp.int32)
    out = jnp.full((b, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(first)
    done = jnp.isin(first, eos_ids)

    def cond(carry):
        i, _, done, _, _ = carry
        return (i < max_new_tokens) & ~jnp.all(done)

    def step(carry):
        i, token, done, cache, out = carry
        hidden, cache = model.hidden(token[:, None], cache=cache)
        nxt = jnp.argmax(model.logits(hidden[:, 0]), axis=-1).astype(jnp.int32)
        nxt = jnp.where(done, pad_id, nxt)  # a finished row keeps emitting padding, as HF does
        out = jax.lax.dynamic_update_slice(out, nxt[:, None], (0, i))
        return i + 1, nxt, done | jnp.isin(nxt, eos_ids), cache, out

    *_, out = jax.lax.while_loop(cond, step, (jnp.int32(1), first, done, cache, out))
    return out


def generate(model: Decoder, prompt: jax.Array | np.ndarray, prompt_mask: jax.Array | np.ndarray,
             max_new_tokens: int, eos_id: int | Sequence[int] | None = None,
             pad_id: int | None = None) -> jax.Array:
    """Greedy decoding with a KV cache, jitted: int32 new tokens [B, max_new_tokens].

    `prompt` is token ids [B, T] or input embeddings [B, T, D] (a visual prefix followed by
    prompt embeddings); `prompt_mask` [B, T] marks real tokens, in any padding layout (see the
    module docstring), and every row needs at least one. One prefill pass fills a fixed-shape
    cache [layers, B, T + max_new_tokens - 1, kv_heads, head_dim]; a `lax.while_loop` then
    decodes one token per step for all rows and exits early once every row has emitted an
    `eos_id`. After its eos a row emits `pad_id` (default: the first eos id, else 0), the
    same as transformers' `generate(do_sample=False)`.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: {max_new_tokens} is not positive")
    prompt_mask = jnp.asarray(prompt_mask)
    if not isinstance(prompt_mask, jax.core.Tracer) and not bool(prompt_mask.astype(bool).any(axis=1).all()):
        raise ValueError("prompt_mask: a row has no real token to continue from")
    eos = [] if eos_id is None else [eos_id] if isinstance(eos_id, (int, np.integer)) else list(eos_id)
    if pad_id is None:
        pad_id = eos[0] if eos else 0
    graphdef, state = nnx.split(model)
    # -1 never matches a token, so "no eos" is the same compiled program as one eos id.
    eos_ids = jnp.asarray(eos or [-1], jnp.int32)
    return _generate(graphdef, state, jnp.asarray(prompt), prompt_mask, int(max_new_tokens), eos_ids,
                     jnp.asarray(pad_id, jnp.int32))

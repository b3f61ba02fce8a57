"""Stage 2's bridge: the frozen encoder's tokens, projected into a decoder LM's embedding space.

The LM reads [visual tokens; prompt; answer] and learns next-token cross-entropy on the answer
only (LLaVA, Liu et al. 2023: a LayerNorm + MLP projector, as in LLaVA-1.5). The visual tokens are
the TTM's output tokens of every real window of the document ([B, S * r, C]) and, with
`bridge.memory`, the memory after its last window ([B, m, C]): what the encoder knows of the whole
document. The encoder runs outside the differentiated function, so no gradient reaches it.

LoRA (Hu et al. 2021) keeps the LM frozen too: each attention and MLP kernel W is read as
W + (alpha / rank) A B, with B starting at zero (training starts from the loaded LM), and only
A and B are trained. `lora_merge` folds them in, so generation runs the plain decoder.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from flax import traverse_util

from docjepa.models import layers
from docjepa.models.decoder import Decoder
from docjepa.models.docjepa import DocJEPA

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class Projector(nnx.Module):
    """LayerNorm -> MLP from the encoder's width to the LM's, plus an embedding of the page each
    token comes from (slot `pages`: the memory, which holds the whole document). Prompts name
    pages ("Read page 2."); the TTM's tokens know where on its page a window lies, not which page."""

    def __init__(self, dim: int, hidden: int, out: int, pages: int, *, rngs: nnx.Rngs):
        self.norm = layers.layer_norm(dim, rngs=rngs)
        self.mlp = layers.Mlp(dim, hidden, out, rngs=rngs)
        self.page = layers.param(nnx.initializers.normal(0.02), (pages + 1, out), (None, "embed"), rngs)

    def __call__(self, x: jax.Array, page: jax.Array) -> jax.Array:
        return self.mlp(self.norm(layers.at_least_f32(x))) + jnp.take(self.page[...], page, axis=0)


def visual_tokens(encoder: DocJEPA, batch: dict[str, jax.Array], *, max_pages: int, pages: int, memory: bool
                  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The frozen encoder's tokens of each row's document [B, V, C] (gradient stopped), which are
    real [B, V] and the page of each [B, V] (`pages`, the most a document has, for the memory
    tokens; `max_pages` is per chunk).

    The encoder reads the document's K chunks ([B, K, S, ...]) in order with its memory carried
    from chunk to chunk, as stage 1 streams a document (a padding chunk leaves it as it is). V is
    r tokens per window of the `focus` chunk (padding windows masked), then the m memory tokens
    after the last chunk: what the encoder holds of the whole document."""
    graphdef, params = nnx.split(encoder)

    def read(carry: jax.Array, chunk: tuple[jax.Array, ...]) -> tuple[jax.Array, jax.Array]:
        patches, step_mask, page_ids, boxes = chunk
        out = nnx.merge(graphdef, params)(patches, step_mask, page_ids, boxes, max_pages=max_pages, memory=carry,
                                          ttm_tokens=True)
        return out["memory"], layers.at_least_f32(out["tokens"])

    b = batch["step_mask"].shape[0]
    chunks = tuple(jnp.moveaxis(batch[k], 1, 0) for k in ("patches", "step_mask", "page_ids", "window_box"))
    last, tokens = jax.lax.scan(read, encoder.initial_memory(b), chunks)       # [B, m, C], [K, B, S, r, C]
    rows = jnp.arange(b)
    steps, step_mask = tokens[batch["focus"], rows], batch["step_mask"][rows, batch["focus"]]
    _, s, r, c = steps.shape
    x, mask = steps.reshape(b, s * r, c), jnp.repeat(step_mask, r, axis=1)
    page = jnp.repeat(jnp.clip(batch["doc_page"][rows, batch["focus"]], 0, pages - 1), r, axis=1)
    if memory:
        m = last.shape[1]
        x = jnp.concatenate([x, last.astype(x.dtype)], axis=1)
        mask = jnp.concatenate([mask, jnp.ones((b, m), bool)], axis=1)
        page = jnp.concatenate([page, jnp.full((b, m), pages, page.dtype)], axis=1)
    return jax.lax.stop_gradient(x), mask, page


def lora_init(lm_params: dict[str, Any], rank: int, key: jax.Array) -> dict[str, Any]:
    """{path: {a [in, rank], b [rank, out]}} for every LORA_TARGETS kernel of `lm_params`
    (nested like them): a ~ N(0, 1/in), b = 0."""
    out = {}
    for path, w in traverse_util.flatten_dict(lm_params).items():
        if path[-1] == "kernel" and path[-2] in LORA_TARGETS:
            k = jax.random.fold_in(key, len(out))
            out[path[:-1]] = {"a": jax.random.normal(k, (w.shape[0], rank), jnp.float32) / jnp.sqrt(w.shape[0]),
                              "b": jnp.zeros((rank, w.shape[1]), jnp.float32)}
    return traverse_util.unflatten_dict(out)


def lora_merge(lm_params: dict[str, Any], lora: dict[str, Any], scale: float) -> dict[str, Any]:
    """`lm_params` with each adapted kernel W replaced by W + scale * a @ b."""
    flat = traverse_util.flatten_dict(lm_params)
    for path, ab in traverse_util.flatten_dict(lora, is_leaf=lambda _, v: isinstance(v, dict) and "a" in v).items():
        w = flat[(*path, "kernel")]
        flat[(*path, "kernel")] = (w + scale * ab["a"] @ ab["b"]).astype(w.dtype)
    return traverse_util.unflatten_dict(flat)


def prefix(projector: Projector, lm: Decoder, visual: tuple[jax.Array, jax.Array, jax.Array], ids: jax.Array,
           ids_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The LM's input embeddings [B, V + T, D] and attention mask: the projected `visual_tokens`,
    then the embeddings of the text `ids` [B, T]."""
    tokens, mask, page = visual
    embeds = jnp.concatenate([projector(tokens, page).astype(lm.dtype), lm.embed(ids)], axis=1)
    return embeds, jnp.concatenate([mask, ids_mask.astype(bool)], axis=1)


def answer_loss(projector: Projector, lm: Decoder, visual: tuple[jax.Array, jax.Array, jax.Array],
                batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """Mean next-token cross-entropy over the answer tokens of the batch (`loss_mask`), and how
    many there are. Text token t + 1 is predicted at text position t; the vocabulary
    projection runs on the text positions only."""
    ids = batch["input_ids"]
    embeds, mask = prefix(projector, lm, visual, ids, batch["text_mask"])
    hidden, _ = lm.hidden(inputs_embeds=embeds, attention_mask=mask)
    logits = lm.logits(hidden[:, visual[0].shape[1]:-1])
    weights = batch["loss_mask"][:, 1:].astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, ids[:, 1:])
    count = jnp.sum(weights)
    return jnp.sum(ce * weights) / jnp.maximum(count, 1.0), count

"""Analytic FLOPs of the model and the train step: what MFU and the scaling study's compute use.

XLA's cost analysis (`compiled.cost_analysis()["flops"]`) counts the body of a `scan` (a
while loop) once, whatever its trip count: it sees one TTM step of the `data.max_steps` a
chunk runs (models/ttm.py) and one microbatch of `optim.grad_accum`. The count here walks
the modules of the abstract model (`nnx.eval_shape`: nothing is allocated), so its shapes are
those the code builds, and multiplies each step by the number of times it runs.

Counted: every matrix product as 2*M*N*K FLOPs (dense layers, the patch-embedding conv over
its zero-padded input, attention scores q.k and the weighted sum of values, TokenLearner
pooling, the page pooling, the SigLIP logits against the batch and the text bank).
Ignored: elementwise work (norms, activations, softmax, residual adds, pooling maxima, the
optimizer update): 3-6% of XLA's count at the widths of tests/test_flops.py, about 4% of it on
the hiera_b_ttm step (BENCHMARKS.md), and not what MFU measures. Padded TTM steps run in full and
count; padded windows count where Hiera encodes them (every slot unless `data.window_capacity` < 1).

Train step: model FLOPs = forward + backward, the backward of a product being two products of
its size (gradients of both operands: 3 x forward overall, the 6N per token of PaLM, Chowdhery
et al. 2022, arXiv:2204.02311, Appendix B), one where an operand is data (the patch and box
embeddings: no gradient for pixels or boxes; page pooling: none for the page one-hots; SigLIP
logits: none for the text targets), none for the text bank's false-negative test. As in PaLM's definition, MFU uses model FLOPs, which
leave out rematerialisation; hardware FLOPs add the recomputed forward of rematerialised blocks.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Mapping

import jax
import ml_collections as mlc
from flax import nnx

from docjepa import objective, state as factory
from docjepa.data import pipeline
from docjepa.models import byol, hiera, ttm

# Backward products per forward product where it is not 2: one operand is data (1), both are (0).
BACKWARD = {"hiera/patch_embed": 1, "box_embed": 1, "pages": 1, "loss/window": 1, "loss/page": 1, "loss/doc": 1,
            "loss/window_bank": 1, "loss/page_bank": 1,
            "loss/window_bank_exclusions": 0, "loss/page_bank_exclusions": 0,
            "loss/window_exclusions": 0, "loss/page_exclusions": 0, "loss/doc_exclusions": 0,
            # BYOL: pixels and region masks are data; the target branch takes no gradient.
            "byol/blur": 0, "byol/online/patch_embed": 1, "byol/online/pool": 1,
            "byol/target/hiera": 0, "byol/target/pool": 0, "byol/target/projector": 0}


def xla_flops(compiled: jax.stages.Compiled) -> float:
    """FLOPs of a compiled program by XLA's cost analysis (per device; 0 where unavailable):
    a scan's body counted once."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", 0.0)) if cost else 0.0


def _linear(rows: float, lin: nnx.Module) -> float:
    """A dense layer (nnx.Linear, or Hiera's QKV whose kernel is [d_in, 3, heads, head_dim])."""
    d_in, *d_out = lin.kernel.shape
    return 2.0 * rows * d_in * math.prod(d_out)


def hiera_flops(encoder: hiera.Hiera) -> dict[str, float]:
    """FLOPs of one image through Hiera, per stage: "hiera/patch_embed", "hiera/stageK/attn"
    (qkv, q.k, weights.v, output projection, the widening projection of a pooling block) and
    "hiera/stageK/mlp". Mask-unit attention scores each query against its window's keys only;
    a pooling block's queries are the max-pooled 1/q_stride of its tokens."""
    cfg = encoder.config
    n = math.prod(cfg.tokens_shape)
    out: dict[str, float] = defaultdict(float)
    out["hiera/patch_embed"] = 2.0 * n * math.prod(encoder.patch_embed.kernel.shape)
    stage = 1
    for i, block in enumerate(encoder.blocks):
        attn = block.attn
        n_out = n // attn.q_stride
        windows = n // (attn.q_stride * attn.window_size) if attn.use_mask_unit_attn else 1
        keys = n // windows
        flops = _linear(n, attn.qkv) + 4.0 * n_out * keys * attn.dim_out + _linear(n_out, attn.proj)
        if block.proj is not None:
            flops += _linear(n, block.proj)
        out[f"hiera/stage{stage}/attn"] += flops
        out[f"hiera/stage{stage}/mlp"] += _linear(n_out, block.mlp.fc1) + _linear(n_out, block.mlp.fc2)
        stage += i in encoder.stage_ends
        n = n_out
    return dict(out)


def _hiera_tokens(encoder: hiera.Hiera, stage: int | None = None) -> int:
    """Tokens per image of `stage`'s map (default: the last stage's, every q-pooling applied)."""
    cfg = encoder.config
    stage = len(cfg.stages) - 1 if stage is None else stage
    return math.prod(cfg.tokens_shape) // math.prod(cfg.q_stride) ** stage


def _token_learner(learner: ttm.TokenLearner, tokens: int, dim: int) -> float:
    maps = learner.mlp.fc2.kernel.shape[1]
    return _linear(tokens, learner.mlp.fc1) + _linear(tokens, learner.mlp.fc2) + 2.0 * tokens * maps * dim


def _process_unit(block: nnx.Module, tokens: int, dim: int) -> float:
    if isinstance(block, ttm.TransformerBlock):
        a = block.attn
        return (sum(_linear(tokens, lin) for lin in (a.q, a.k, a.v, a.out)) + 4.0 * tokens * tokens * dim
                + _linear(tokens, block.mlp.fc1) + _linear(tokens, block.mlp.fc2))
    if isinstance(block, ttm.MixerBlock):  # the token MLP runs on each of the dim channels
        return (_linear(dim, block.token_mlp.fc1) + _linear(dim, block.token_mlp.fc2)
                + _linear(tokens, block.channel_mlp.fc1) + _linear(tokens, block.channel_mlp.fc2))
    if isinstance(block, ttm.MlpBlock):
        return _linear(tokens, block.mlp.fc1) + _linear(tokens, block.mlp.fc2)
    raise TypeError(f"flops: unknown TTM processing unit {type(block).__name__}")


def ttm_step_flops(machine: ttm.TokenTuringMachine, tokens: int) -> dict[str, float]:
    """FLOPs of one TTM step of one row reading `tokens` input tokens: "ttm/read" (TokenLearner
    over memory + inputs), "ttm/process" (the unit on the r read tokens, every layer),
    "ttm/write" (TokenLearner over memory + outputs + inputs). The output norm is elementwise."""
    memory, dim = machine.memory_init.shape
    read = machine.read.mlp.fc2.kernel.shape[1]
    return {
        "ttm/read": _token_learner(machine.read, memory + tokens, dim),
        "ttm/process": sum(_process_unit(b, read, dim) for b in machine.blocks),
        "ttm/write": _token_learner(machine.write, memory + read + tokens, dim),
    }


def byol_flops(model: nnx.Module, loss_cfg: mlc.ConfigDict) -> dict[str, float]:
    """The BYOL term's forward (`models/byol.py`) on two views of `loss.byol_windows` windows:
    the views' blur ("byol/blur", the separable kernel over every pixel of each view), Hiera up
    to stage `model.layout_stage` in each branch ("byol/online/patch_embed", "byol/online/hiera",
    "byol/target/hiera"; later stages are never computed), the mask pooling of `loss.byol_regions`
    regions ("byol/*/pool"), the projector in both branches and the predictor online."""
    views = len(byol.VIEWS) * loss_cfg.byol_windows
    cfg, stage = model.encoder.config, model.layout_stage
    per_image = hiera_flops(model.encoder)
    blocks = sum(v for k, v in per_image.items() if k.startswith("hiera/stage") and int(k.split("/")[1][5:]) <= stage + 1)
    cells = _hiera_tokens(model.encoder, stage)
    pool = 2.0 * views * cells * loss_cfg.byol_regions * model.encoder.stage_dims[stage]
    rows = views * loss_cfg.byol_regions
    mlp = lambda m: _linear(rows, m.mlp.fc1) + _linear(rows, m.mlp.fc2)  # noqa: E731
    return {"byol/blur": 2 * 2.0 * (2 * byol.BLUR_RADIUS + 1) * views * math.prod(cfg.input_size) * cfg.in_chans,
            "byol/online/patch_embed": views * per_image["hiera/patch_embed"], "byol/online/hiera": views * blocks,
            "byol/target/hiera": views * (per_image["hiera/patch_embed"] + blocks),
            "byol/online/pool": pool, "byol/target/pool": pool,
            "byol/online/heads": mlp(model.byol["projector"]) + mlp(model.byol["predictor"]),
            "byol/target/projector": mlp(model.byol["projector"])}


def _bank_entries(loss_cfg: mlc.ConfigDict, level: str, bank: int | Mapping[str, int]) -> int:
    """Bank entries scored per step at `level`: all, or `loss.bank_size` drawn from them."""
    k = bank if isinstance(bank, int) else bank.get(level, 0)
    return min(k, loss_cfg.bank_size) if loss_cfg.bank_size else k


def abstract_model(cfg: mlc.ConfigDict, embed_dim: int) -> nnx.Module:
    """The model of `cfg` with shapes only (`state.build_model` under `nnx.eval_shape`)."""
    return nnx.eval_shape(lambda: factory.build_model(cfg, embed_dim, cfg.seed))


def encoded_windows(cfg: mlc.ConfigDict, batch: int, steps: int) -> int:
    """The windows Hiera encodes per step: every slot, or under `data.window_capacity` the
    packed slots of `pipeline.window_budget` (counted on one batch shard's rows)."""
    budget = pipeline.window_budget(cfg.data.get("window_capacity", 1.0), batch, steps, 1, cfg.optim.grad_accum)
    return batch * steps if budget is None else batch // budget.rows * budget.windows


def forward_flops(cfg: mlc.ConfigDict, embed_dim: int, batch: int, steps: int,
                  bank: int | Mapping[str, int] = 0, model: nnx.Module | None = None) -> dict[str, float]:
    """Forward FLOPs of `batch` examples of `steps` windows, per component, plus "total".

    Components: Hiera's (`hiera_flops`, on the `encoded_windows` and the spatial pretexts'
    `loss.pretext_windows` views per pretext), "pretext_heads", "in_proj", "pool" (`model.pool`'s map),
    "box_embed", the TTM's
    (`ttm_step_flops`, B rows x S steps), "pages" (mean over each page's steps), "heads"
    (window, page, document projections), "layout_head" (with the layout term; its focal loss is
    elementwise), the BYOL term's `byol_flops` and "loss/<term>" for each SigLIP term with a non-zero
    weight: SigLIP logits of the n items of a level against the batch's n texts (n x n x
    embed_dim), and with bank terms against `bank` entries per level (an int for every level
    or {level: entries}), plus the false-negative test (`losses.false_negatives`: the targets'
    cosines, a product of the same size) of the bank terms and, with
    `loss.batch_false_negatives`, of the batch terms. `model`: the abstract model of `cfg`, if already built.
    """
    model = model if model is not None else abstract_model(cfg, embed_dim)
    pages, patches = cfg.data.max_pages, batch * steps
    views = 0 if model.pretext_heads is None else len(model.pretext_heads) * model.pretext_windows
    out = {k: (encoded_windows(cfg, batch, steps) + views) * v for k, v in hiera_flops(model.encoder).items()}
    tokens = _hiera_tokens(model.encoder)
    dim = model.window_head.proj.kernel.shape[0]
    if model.in_proj is not None:
        out["in_proj"] = _linear(patches * tokens, model.in_proj)
    if model.pool.proj is not None:
        out["pool"] = _linear(patches, model.pool.proj)
    if model.box_embed is not None:
        out["box_embed"] = _linear(patches, model.box_embed.proj)
    if model.ttm is not None:  # the TTM reads each window's tokens and its summary
        out.update({k: patches * v for k, v in ttm_step_flops(model.ttm, tokens + 1).items()})
    out["pages"] = 2.0 * patches * pages * dim
    out["heads"] = (_linear(patches, model.window_head.proj) + _linear(batch * pages, model.page_head.proj)
                    + _linear(batch, model.doc_head.proj))
    if model.pretext_heads is not None:
        out["pretext_heads"] = sum(_linear(model.pretext_windows, h.proj) for h in model.pretext_heads.values())
    if model.layout_head is not None:
        out["layout_head"] = _linear(patches * _hiera_tokens(model.encoder, model.layout_stage), model.layout_head.proj)
    if model.byol is not None:
        out.update(byol_flops(model, cfg.loss))
    items = {"window": patches, "page": batch * pages, "doc": batch}
    for name in objective.active_terms(cfg.loss):
        level = name.removeprefix("loss/").removesuffix("_bank").removesuffix("_running")
        if name in ("loss/layout", "loss/flip", "loss/sort", "loss/variance", "loss/byol"):  # elementwise: no products
            continue
        if name.endswith("_bank"):
            k = _bank_entries(cfg.loss, level, bank)
            out[name] = out[f"{name}_exclusions"] = 2.0 * items[level] * k * embed_dim
        else:
            out[name] = 2.0 * items[level] ** 2 * embed_dim
            if cfg.loss.batch_false_negatives:  # the targets' cosines of `losses.false_negatives`
                out[f"{name}_exclusions"] = out[name]
    out["total"] = sum(out.values())
    return out


def train_step_flops(cfg: mlc.ConfigDict, embed_dim: int, bank: int | Mapping[str, int] = 0, *,
                     hardware: bool = False, model: nnx.Module | None = None) -> float:
    """FLOPs of one train step over the global batch (`data.batch_size` x `data.max_steps`).

    Model FLOPs (the default, what MFU divides): each forward component times 1 + its backward
    products (`BACKWARD`, 2 unless listed); gradient accumulation does not change them, since
    the loss is that of the whole batch (`train.make_train_step`'s cached gradients). Hardware
    FLOPs (`hardware`) add what the implementation recomputes: with `optim.grad_accum` > 1 the
    forward of everything but the loss once more (embeddings first, then a forward per
    microbatch to back-propagate through), and where `model.hiera.remat` the forward of Hiera's
    blocks again in their backward, less each block's last product (mlp.fc2, half its MLP):
    its output is the block's, saved at the remat boundary, so XLA drops it from the recompute.
    `model` as in `forward_flops`.
    """
    f = forward_flops(cfg, embed_dim, cfg.data.batch_size, cfg.data.max_steps, bank, model)
    total = sum((1 + BACKWARD.get(k, 2)) * v for k, v in f.items() if k != "total")
    if hardware and cfg.optim.grad_accum > 1:
        total += sum(v for k, v in f.items() if k != "total" and not k.startswith("loss/"))
    if hardware and cfg.model.hiera.remat:
        total += sum(v / 2 if k.endswith("/mlp") else v for k, v in f.items() if k.startswith("hiera/stage"))
    return total

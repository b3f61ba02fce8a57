"""Analytic FLOPs (docjepa/flops.py) against XLA's cost analysis on programs without a scan,
and the scan's undercount that makes the analytic count necessary. Models are abstract
(`nnx.eval_shape`) and programs are only compiled: nothing is initialised or run."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from bench import common
from bench.train_step import random_batch
from docjepa import flops, objective
from docjepa.models import byol, hiera, ttm

# XLA also counts elementwise work (norms, GELU, softmax), which the analytic count leaves out:
# at these matmul-dominated widths it adds 3-6%. XLA's count is never below the analytic one.
RTOL = 0.10
EMBED = 64


def _abstract(x) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(x.shape, x.dtype)


def _xla_flops(fn, *args) -> float:
    return flops.xla_flops(jax.jit(fn).lower(*jax.tree.map(_abstract, args)).compile())


def _agrees(xla: float, analytic: float) -> bool:
    return analytic <= xla <= analytic * (1 + RTOL)


def _config(steps: int = 1, window_weight: float = 1.0):
    """configs/demo.py at 64 x 64 px windows and a small Hiera, no text bank."""
    cfg = common.load_config("configs/demo.py")
    o = cfg.model.hiera.overrides
    o.embed_dim, o.num_heads, o.input_size, o.stages = 64, 2, (64, 64), (1, 1, 1, 1)
    cfg.prepare.window = 64
    cfg.data.batch_size, cfg.data.max_steps = 2, steps
    cfg.loss.window_bank_weight = cfg.loss.page_bank_weight = 0.0
    cfg.loss.window_weight = window_weight
    return cfg


def test_hiera_matches_cost_analysis():
    """Hiera has no scan: every block, with mask units and q-pooling, is in XLA's count."""
    enc = nnx.eval_shape(lambda: hiera.create("hiera_tiny_test", rngs=nnx.Rngs(0), embed_dim=128, num_heads=2,
                                              input_size=(64, 64)))
    graphdef, state = nnx.split(enc)
    xla = _xla_flops(lambda s, y: nnx.merge(graphdef, s)(y), state, jnp.zeros((2, 64, 64, 3)))
    per_image = flops.hiera_flops(enc)
    assert {"hiera/patch_embed", "hiera/stage1/attn", "hiera/stage4/mlp"} <= set(per_image)
    assert _agrees(xla, 2 * sum(per_image.values())), (xla, 2 * sum(per_image.values()))


def _ttm(process: str) -> ttm.TokenTuringMachine:
    return nnx.eval_shape(lambda: ttm.TokenTuringMachine(128, memory_size=16, num_read=8, process=process,
                                                         num_layers=2, num_heads=4, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize("process", sorted(ttm.PROCESS_UNITS))
def test_ttm_step_matches_cost_analysis(process):
    """One step traced on its own (no scan) against `ttm_step_flops`, for every processing unit."""
    model, batch, tokens = _ttm(process), 4, 16
    graphdef, state = nnx.split(model)
    memory, inputs = jnp.zeros((batch, 16, 128)), jnp.zeros((batch, tokens, 128))
    xla = _xla_flops(lambda s, m, x: nnx.merge(graphdef, s).step(m, x, jnp.ones((batch,), bool)), state, memory, inputs)
    analytic = batch * sum(flops.ttm_step_flops(model, tokens).values())
    assert _agrees(xla, analytic), (xla, analytic)


def test_scan_counts_one_step():
    """The TTM's scan over 8 steps costs 8 steps, but XLA's cost analysis sees one: the reason
    train.py and the benchmarks report the analytic count."""
    model, batch, tokens, steps = _ttm("transformer"), 4, 16, 8
    graphdef, state = nnx.split(model)
    inputs, mask = jnp.zeros((batch, steps, tokens, 128)), jnp.ones((batch, steps), bool)
    xla = _xla_flops(lambda s, x, m: nnx.merge(graphdef, s)(x, m), state, inputs, mask)
    step = batch * sum(flops.ttm_step_flops(model, tokens).values())
    assert _agrees(xla, step), (xla, step)
    assert xla < steps * step / 4


@pytest.mark.parametrize("pool", ["mean", "flatten"])
def test_model_forward_matches_cost_analysis(pool):
    """The whole forward and loss at one step per chunk (XLA inlines a one-step scan): Hiera,
    the window summary (`model.pool`), box embedding, TTM, page pooling, heads, the spatial
    pretexts' views and heads, and the SigLIP logits of every term."""
    cfg = _config(steps=1)
    cfg.model.pool = pool
    cfg.loss.flip_weight, cfg.loss.sort_weight, cfg.loss.pretext_windows = 1.0, 1.0, 2
    model = flops.abstract_model(cfg, EMBED)
    graphdef, state = nnx.split(model)
    batch = random_batch(cfg, EMBED)

    def loss(s, b):
        m = nnx.merge(graphdef, s)
        out = m(b["patches"], b["step_mask"], b["page_ids"], b["window_box"], max_pages=cfg.data.max_pages, train=True,
                pretext_key=jax.random.key(0))
        assert {"pretext/flip", "pretext/sort"} <= set(out)
        return objective.loss_terms(m, out, b, cfg.loss)[0]

    xla = _xla_flops(loss, state, batch)
    analytic = flops.forward_flops(cfg, EMBED, cfg.data.batch_size, 1, model=model)
    assert {"box_embed", "ttm/read", "ttm/process", "ttm/write", "pages", "heads", "pretext_heads", "loss/window",
            "loss/page", "loss/doc"} <= set(analytic)
    assert ("pool" in analytic) == (pool == "flatten")
    assert _agrees(xla, analytic["total"]), (xla, analytic["total"])


def test_train_step_linear_in_steps():
    """Without the window term (quadratic in B x S), a step's FLOPs are affine in the steps per
    chunk, and the TTM's part is proportional to them."""
    cfg = _config(window_weight=0.0)
    model = flops.abstract_model(cfg, EMBED)
    ttm_part = {s: sum(v for k, v in flops.forward_flops(cfg, EMBED, 2, s, model=model).items()
                       if k.startswith("ttm/")) for s in (1, 8)}
    assert ttm_part[8] == 8 * ttm_part[1] > 0
    step = {}
    for s in (1, 2, 3, 8):
        cfg.data.max_steps = s
        step[s] = flops.train_step_flops(cfg, EMBED, model=model)
    assert step[3] - step[2] == step[2] - step[1] > 0
    assert step[8] - step[1] == pytest.approx(7 * (step[2] - step[1]))


def test_bank_accumulation_and_remat():
    """Bank terms score n x K (and test as many pairs for false negatives, without a gradient).
    Gradient accumulation (the whole batch's loss, one more forward) and remat (Hiera's blocks
    again, less each last product) add to hardware FLOPs only."""
    cfg = _config(steps=4)
    cfg.loss.window_bank_weight, cfg.loss.bank_size = 1.0, 100
    model = flops.abstract_model(cfg, EMBED)
    count = lambda **kw: flops.train_step_flops(cfg, EMBED, 300, model=model, **kw)  # noqa: E731
    f = flops.forward_flops(cfg, EMBED, 2, 4, bank={"window": 300}, model=model)
    assert f["loss/window_bank"] == f["loss/window_bank_exclusions"] == 2.0 * 8 * 100 * EMBED
    base = count()
    assert base - flops.train_step_flops(cfg, EMBED, model=model) == 3 * f["loss/window_bank"]
    assert count(hardware=True) == base
    cfg.optim.grad_accum = 2
    not_loss = sum(v for k, v in f.items() if k != "total" and not k.startswith("loss/"))
    assert count() == base and count(hardware=True) == base + not_loss
    cfg.optim.grad_accum, cfg.model.hiera.remat = 1, True
    blocks = sum(v / 2 if k.endswith("/mlp") else v for k, v in f.items() if k.startswith("hiera/stage"))
    assert count() == base and count(hardware=True) == base + blocks


def test_padding_windows_cost_no_encoder_flops():
    """Under `data.window_capacity`, the compiled forward's FLOPs follow the windows Hiera
    encodes, not the batch's slots: each slot left out removes one window's Hiera FLOPs."""
    cfg = _config(steps=4)
    cfg.data.batch_size = 4
    model = flops.abstract_model(cfg, EMBED)
    graphdef, state = nnx.split(model)
    batch = random_batch(cfg, EMBED)
    per_window = sum(flops.hiera_flops(model.encoder).values())

    def compiled(windows: int | None) -> float:
        def forward(s, b):
            m = nnx.merge(graphdef, s)
            return m(b["patches"], b["step_mask"], b["page_ids"], b["window_box"], max_pages=cfg.data.max_pages,
                     pack=None if windows is None else (2, windows))["window"]
        return _xla_flops(forward, state, batch)

    dense, half, quarter = compiled(None), compiled(4), compiled(2)   # of 8 slots per group of 2 rows
    assert _agrees(dense - half, 2 * 4 * per_window), (dense - half, 8 * per_window)
    assert _agrees(half - quarter, 2 * 2 * per_window), (half - quarter, 4 * per_window)
    cfg.data.window_capacity = 0.5
    assert flops.encoded_windows(cfg, 4, 4) == 8
    assert (flops.forward_flops(cfg, EMBED, 4, 4, model=model)["hiera/patch_embed"]
            == 8 * flops.hiera_flops(model.encoder)["hiera/patch_embed"])


def test_byol_term_matches_cost_analysis():
    """The BYOL term (`flops.byol_flops`): the views' blur, both branches' Hiera up to stage
    `model.layout_stage` (no later stage is computed), mask pooling and the projector/predictor.
    Hiera's own elementwise share at these widths is 10% (its stages are checked against XLA
    one by one above), so the branches are compared with XLA's count of Hiera to that stage."""
    cfg = _config(steps=2)
    cfg.loss.byol_weight, cfg.data.layout_grid = 1.0, 8
    cfg.loss.byol_windows, cfg.loss.byol_regions, cfg.loss.byol_dim, cfg.loss.byol_hidden = 2, 4, 32, 64
    model = flops.abstract_model(cfg, EMBED)
    graphdef, state = nnx.split(model)
    b, s = cfg.data.batch_size, cfg.data.max_steps
    inputs = (jnp.zeros((b, s, 64, 64, 3), jnp.uint8), jnp.ones((b, s), bool), jnp.ones((b, s, 8, 8), jnp.uint8))

    def term(online, target, patches, step_mask, cells):  # distinct target weights: nothing shared
        m = nnx.merge(graphdef, online)
        out = byol.outputs(m, nnx.merge(graphdef, target), patches, step_mask, cells, jax.random.key(0), cfg.loss)
        return objective.TERMS["loss/byol"].fn(m, out, {}, cfg.loss, None, None)

    encoder, enc_state = nnx.split(model.encoder)
    views = len(byol.VIEWS) * cfg.loss.byol_windows
    to_stage = _xla_flops(lambda st, x: nnx.merge(encoder, st)(x, return_intermediates=True)[1][model.layout_stage],
                          enc_state, jnp.zeros((views, 64, 64, 3)))
    f = flops.byol_flops(model, cfg.loss)
    assert f["byol/online/hiera"] < views * sum(flops.hiera_flops(model.encoder).values()) / 2  # stages 1-2 of 4
    assert f["byol/target/hiera"] == f["byol/online/patch_embed"] + f["byol/online/hiera"] <= to_stage
    assert to_stage <= 1.15 * f["byol/target/hiera"]
    hiera_parts = ("byol/online/patch_embed", "byol/online/hiera", "byol/target/hiera")
    rest = sum(v for k, v in f.items() if k not in hiera_parts)
    xla = _xla_flops(term, state, state, *inputs)
    assert _agrees(xla, 2 * to_stage + rest), (xla, 2 * to_stage + rest)

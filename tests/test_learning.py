"""The recipe learns: a few dozen steps of the real train step memorise a fixed batch.

Memorising is the least a recipe must do; a broken objective (wrong labels, a sign error, a
collapsed embedding, targets that do not reach the loss) fails it. Retrieval is scored the way
`docjepa.eval` scores it, on the frozen model's window embeddings.
"""

import functools

import jax
import numpy as np
import pytest
from flax import nnx

from configs import demo
from docjepa import sharding, state as factory, train
from docjepa.data import pipeline
from docjepa.evals import common


def _window_r1(embed, params, batch) -> tuple[float, float]:
    m = batch["window_mask"]
    img, txt, ids = np.asarray(embed(params))[m], common.normalize(batch["window_emb"][m]), batch["window_text_id"][m]
    return common.recall_at_k(img, txt, ids, ids)[1], common.chance_recall(ids, ids, 1)


@pytest.mark.long
def test_train_step_memorises_a_fixed_batch(synth_corpus):
    cfg = demo.get_config("quick")
    cfg.data.dir, cfg.data.max_steps, cfg.data.max_pages = str(synth_corpus), 8, 2
    cfg.model.ttm.memory_size, cfg.model.ttm.num_read, cfg.model.ttm.num_layers = 16, 4, 1
    cfg.model.hiera.overrides.embed_dim = 16
    cfg.optim.warmup_steps, cfg.optim.lr = 0, 5e-3
    manifest = pipeline.read_manifest(cfg.data.dir)
    # The first chunk of each of the first documents: one batch of windows from different documents
    # (the first batch of the streams holds each row's first chunk).
    pool = next(pipeline.eval_batches(cfg.data.dir, "train", batch_size=64, max_steps=8, max_pages=2,
                                      min_words=cfg.data.min_words, center=True, max_examples=64))
    first = np.flatnonzero((pool["chunk_index"] == 0) & pool["example_mask"])[: cfg.data.batch_size]
    batch = {k: pool[k][first] for k in factory.step_fields(cfg)}
    # Overlapping windows of legible text can hold nearly the same words (target cosine up to
    # 0.998 with another window's, under another text id): no embedding can tell those apart,
    # so a window whose target is that close to an earlier one's leaves the batch.
    m = batch["window_mask"].reshape(-1)
    t = common.normalize(batch["window_emb"].reshape(m.size, -1))
    near = np.triu(t @ t.T > 0.9, k=1) & m[:, None] & m[None, :]
    batch["window_mask"] = (m & ~near.any(axis=0)).reshape(batch["window_mask"].shape)
    assert batch["window_mask"].sum() >= 20  # enough windows for R@1 to mean something

    mesh = sharding.make_mesh((("data", 1), ("fsdp", 1), ("tensor", 1)), jax.devices()[:1])
    text_bank = factory.device_bank(cfg, manifest, mesh)
    sizes = {lv: int(c["valid"].sum()) for lv, c in text_bank.items()}
    make_model = functools.partial(factory.build_model, cfg, int(manifest["encoder"]["dim"]), cfg.seed, sizes)
    graphdef, abstract = nnx.split(nnx.eval_shape(make_model), nnx.Param)
    steps = 60  # the whole cosine schedule: the centring's running mean settles as the lr decays
    tx, schedule = factory.build_optimizer(cfg.optim, steps, factory.decay_mask(abstract))
    state = jax.jit(lambda: factory.init_train_state(make_model(), tx, cfg.data.batch_size))()
    # Sixty steps run here, so the step is compiled with LLVM's optimisations, which the suite
    # otherwise turns off to compile faster (conftest.py).
    step = jax.jit(train.make_train_step(graphdef, tx, schedule, cfg, mesh),
                   compiler_options={"xla_backend_optimization_level": 3})
    # The frozen model's window embeddings of the batch, compiled once for both checks.
    embed = jax.jit(lambda params: nnx.merge(graphdef, params)(
        batch["patches"], batch["step_mask"], batch["page_ids"], batch["window_box"],
        max_pages=cfg.data.max_pages)["window"])

    r1, chance = _window_r1(embed, state["params"], batch)
    assert r1 < 0.3, r1  # not solved at initialisation
    for _ in range(steps):
        state, metrics = step(state, batch, text_bank)
    assert float(metrics["finite"]) == 1.0
    r1, _ = _window_r1(embed, state["params"], batch)
    assert r1 >= 0.9, (r1, chance)

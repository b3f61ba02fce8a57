"""Pretraining: python -m docjepa.train --config configs/demo.py --workdir runs/demo.

One `main()` read top to bottom: config, mesh, data, model, optimizer, shardings, step,
checkpoint, loop. The step is a pure jitted function over explicit shardings; the same code
runs on a laptop CPU, a GPU cluster (SLURM) and a TPU pod slice (one process per host).
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax
from absl import app, flags
from flax import nnx
from ml_collections import config_flags
from tqdm import tqdm

from docjepa import checkpoint, cli, flops, metrics, objective, sharding, state as factory, validate
from docjepa import evals
from docjepa.data import bank, pipeline
from docjepa.models import byol
from docjepa.models.docjepa import update_running_means

FLAGS = flags.FLAGS
log = logging.getLogger("docjepa.train")


def define_flags() -> None:
    """Command-line flags, defined only when this module is the program (not on import)."""
    config_flags.DEFINE_config_file("config", None, "Config file (ml_collections), e.g. configs/demo.py.")
    flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and TensorBoard events go.")
    flags.mark_flags_as_required(["config", "workdir"])

class NonFiniteError(RuntimeError):
    """Raised after `train.max_nonfinite` consecutive steps with a non-finite loss or gradient."""


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    cfg: mlc.ConfigDict, mesh: jax.sharding.Mesh):
    """The pure step: (state, batch, bank) -> (state, metrics). Non-finite updates are skipped.
    `bank`: the text bank on the mesh (`state.device_bank`), or None without bank terms.

    With the TTM, `state["memory"]` is each stream row's memory after its previous chunk (with
    `data.stream_groups`, that of the group whose turn it is: `state.group_memory`): the
    step starts from it (from `memory_init` where `batch["reset"]`) and stores the memory after
    this chunk. Gradients stop at the carry (truncated back-propagation through time: the
    horizon is one chunk, `data.max_steps` windows: the carried memory is an input of the step,
    not a function of the parameters). With `optim.grad_accum` > 1, `cached_grads`.

    With the BYOL term, `state["target"]` is the EMA target branch (`models/byol.py`): the forward
    reads it as the model with the target's encoder and projector, no gradient reaches it, and
    the step moves it towards the updated online weights by `byol.momentum`."""
    accum = cfg.optim.grad_accum
    budget = factory.window_budget(cfg, mesh, cfg.data.batch_size, accum)
    groups = cfg.data.get("stream_groups", 1)  # stream groups take turns: batch t is group t % groups

    table = sharding.config_rules(cfg)

    def forward(params, batch, memory, key, target):
        model = nnx.merge(graphdef, params)
        with sharding.activation_sharding(mesh, table):
            out = model(batch["patches"], batch["step_mask"], batch["page_ids"], batch["window_box"],
                        max_pages=cfg.data.max_pages, memory=memory, reset=batch["reset"], train=True, pack=budget,
                        pretext_key=key)
            if model.byol is not None:
                out |= byol.outputs(model, nnx.merge(graphdef, byol.with_target(params, target)), batch["patches"],
                                    batch["step_mask"], batch["layout_mask"], key, cfg.loss)
        return model, out

    def loss_fn(params, batch, bank, memory, key, target):
        model, out = forward(params, batch, memory, key, target)
        total, terms = objective.loss_terms(model, out, batch, cfg.loss, mesh, bank)
        return total, (terms, out["feature_means"], out.get("memory"), out["health"])

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def embed(params, batch, memory, key, target):
        """The embeddings the loss reads (differentiable) and what rides beside them."""
        _, out = forward(params, batch, memory, key, target)
        return {k: out[k] for k in objective.EMBEDDINGS if k in out}, (out["page_present"], out["feature_means"],
                                                                        out.get("memory"), out["health"])

    def cached_grads(params, batch, bank, memory, key, target):
        """Gradient accumulation that keeps every negative of the global batch (GradCache, Gao et
        al. 2021): embed all microbatches without keeping activations, take the loss of the whole
        batch and its gradient w.r.t. the embeddings, then back-propagate each microbatch's slice
        of that gradient through a second forward. The targets are fixed, so the loss and gradient
        are those of the whole batch at once (one extra forward); only the feature centring uses
        each microbatch's own mean, as BatchNorm does under accumulation."""
        split = lambda x: x.reshape(accum, x.shape[0] // accum, *x.shape[1:])  # noqa: E731
        merge = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731
        micro = (*jax.tree.map(split, (batch, memory)), jax.random.split(key, accum))  # a pretext draw each
        _, (embs, (present, means, memory, health)) = jax.lax.scan(lambda _, xs: (None, embed(params, *xs, target)), None,
                                                                   micro)
        embs, present, memory = jax.tree.map(merge, (embs, present, memory))

        def loss_of(params, embs):
            model = nnx.merge(graphdef, params)
            return objective.loss_terms(model, {**embs, "page_present": present}, batch, cfg.loss, mesh, bank)

        (loss, terms), (grads, d_embs) = jax.value_and_grad(loss_of, argnums=(0, 1), has_aux=True)(params, embs)

        def backward(grads, xs):
            (mb, mem, k), d = xs
            _, vjp = jax.vjp(lambda p: embed(p, mb, mem, k, target)[0], params)
            return jax.tree.map(jnp.add, grads, vjp(d)[0]), None

        grads, _ = jax.lax.scan(backward, grads, (micro, jax.tree.map(split, d_embs)))
        mean = lambda t: jax.tree.map(lambda m: m.mean(axis=0), t)  # noqa: E731
        return loss, terms, mean(means), memory, mean(health), grads

    def step(state, batch, bank=None):
        params = state["params"]
        target = state.get("target")
        carried = memory = None if "memory" not in state else factory.group_memory(state["memory"], state["step"], groups)
        step_key = jax.random.fold_in(jax.random.key(cfg.seed), state["step"])
        if bank is not None and cfg.loss.bank_size:
            bank = objective.sample_bank(bank, step_key, cfg.loss.bank_size)
        pretext_key = jax.random.fold_in(step_key, 1 << 20)  # the pretexts' and BYOL's windows and draws
        if accum == 1:
            (loss, (terms, means, memory, health)), grads = grad_fn(params, batch, bank, memory, pretext_key, target)
        else:
            loss, terms, means, memory, health, grads = cached_grads(params, batch, bank, memory, pretext_key, target)
        updates, opt = tx.update(grads, state["opt"], params)
        new_params = update_running_means(optax.apply_updates(params, updates), means, cfg.model.center_momentum)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(optax.tree.norm(updates))
        keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
        new_state = {
            "params": jax.tree.map(keep, new_params, params),
            "opt": jax.tree.map(keep, opt, state["opt"]),
            "step": state["step"] + 1,
        }
        if memory is not None:
            new_state["memory"] = factory.store_group_memory(state["memory"], keep(memory, carried), state["step"], groups)
        if target is not None:
            tau = byol.momentum(cfg.loss, state["step"], cfg.train.steps)
            new_state["target"] = jax.tree.map(keep, byol.ema(target, byol.online_part(new_params), tau), target)
        out = {
            "loss": loss, **terms, "grad_norm": grad_norm, "lr": schedule(state["step"]),
            "finite": finite.astype(jnp.float32),
            "patches": jnp.sum(batch["step_mask"]).astype(jnp.float32),
            **{f"health/{k}": v for k, v in health.items()},
            **({} if target is None else {"byol/momentum": tau}),
        }
        for level in ("window", "page", "doc"):
            scale = params[f"{level}_scale"]
            out[f"t/{level}"], out[f"b/{level}"] = jnp.exp(scale["t_prime"]), scale["b"]
        return new_state, out

    return step


def main(argv: list[str]) -> None:
    del argv
    metrics.setup_logging()

    # ------------------------------------------------------------------ config
    cfg = FLAGS.config
    workdir = checkpoint.workdir_path(FLAGS.workdir)
    try:
        validate.check(cfg, "train")
        manifest = pipeline.read_manifest(cfg.data.dir)
        pipeline.check_encoder(manifest, cfg.text, cfg.data.dir)
        bank.check(manifest, cfg.data.dir, center=cfg.data.center_targets, need_bank=factory.uses_bank(cfg.loss))
    except (validate.ConfigError, FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")

    # -------------------------------------------------------------------- mesh
    try:
        mesh = sharding.run_mesh(cfg, workdir)
    except ValueError as e:
        sys.exit(f"error: {e}")
    log.info("mesh %s over %d devices, %d processes", dict(mesh.shape), mesh.size, jax.process_count())

    # -------------------------------------------------------------------- data
    local_batch = cfg.data.batch_size // jax.process_count()
    budget = factory.window_budget(cfg, mesh, cfg.data.batch_size, cfg.optim.grad_accum)
    train_iter = pipeline.make_train_iterator(cfg.data, seed=cfg.seed, local_batch_size=local_batch, budget=budget)
    if budget:
        log.info("window budget: Hiera encodes %d windows per group of %d rows (of %d slots)",
                 budget.windows, budget.rows, budget.rows * cfg.data.max_steps)
    text_bank = factory.device_bank(cfg, manifest, mesh) if factory.uses_bank(cfg.loss) else None
    bank_sizes = {lv: int(np.sum(c["valid"])) for lv, c in text_bank.items()} if text_bank else None
    if text_bank:
        log.info("text bank: %s distinct targets (negatives per step: %s)", bank_sizes, cfg.loss.bank_size or "all")

    # ------------------------------------------------------------------- model
    embed_dim = factory.embed_dim_of(cfg, manifest)
    make_model = functools.partial(factory.build_model, cfg, embed_dim, cfg.seed, bank_sizes)
    abstract_model = nnx.eval_shape(make_model)
    graphdef, abstract_params = nnx.split(abstract_model, nnx.Param)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract_params))
    log.info("model: %s + TTM(m=%d, r=%d, %s), %.2fM parameters, embed dim %d", cfg.model.hiera.name,
                 cfg.model.ttm.memory_size, cfg.model.ttm.num_read, cfg.model.ttm.process if cfg.model.ttm.use_memory
                 else "off", n_params / 1e6, embed_dim)
    # Model FLOPs counted analytically: XLA's cost analysis counts the TTM's scan body once.
    # Padded bank entries are scored too (masked afterwards), so the bank's full length counts.
    bank_lengths = {lv: c["emb"].shape[0] for lv, c in text_bank.items()} if text_bank else 0
    model_flops = flops.train_step_flops(cfg, embed_dim, bank_lengths, model=abstract_model) / mesh.size

    # --------------------------------------------------------------- optimizer
    tx, schedule = factory.build_optimizer(cfg.optim, cfg.train.steps, factory.decay_mask(abstract_params))

    # --------------------------------------------------------------- shardings
    state_sh = factory.train_state_shardings(tx, abstract_params, mesh, cfg)

    @functools.partial(jax.jit, out_shardings=state_sh)
    def init_state():
        return factory.init_train_state(make_model(), tx, cfg.data.batch_size, cfg.data.stream_groups)

    # -------------------------------------------------------------------- step
    batch_sh = {k: sharding.batch_sharding(mesh, 1) for k in factory.step_fields(cfg)}  # leading dim; rest replicated
    train_step = jax.jit(
        make_train_step(graphdef, tx, schedule, cfg, mesh),
        in_shardings=(state_sh, batch_sh, jax.tree.map(lambda a: a.sharding, text_bank)),
        out_shardings=(state_sh, sharding.replicated(mesh)),
        donate_argnums=0,
    )

    # -------------------------------------------------------------- checkpoint
    ckpt = checkpoint.Checkpointer(workdir, keep=cfg.train.keep)
    abstract_state = checkpoint.abstract_with_shardings(factory.abstract_train_state(tx, abstract_params, cfg), state_sh)
    if ckpt.latest_step() is not None:
        state = ckpt.restore(None, abstract_state, train_iter)
        log.info("resumed from step %d", int(state["step"]))
    else:
        state = init_state()
        if cfg.model.hiera.init_from:
            state["params"]["encoder"] = factory.pretrained_encoder(cfg, state_sh["params"]["encoder"])
            log.info("encoder initialised from %s", cfg.model.hiera.init_from)
    start = int(state["step"])

    # -------------------------------------------------------------------- eval
    writer = metrics.MetricWriter(workdir)
    evaluator = evals.Evaluation(cfg, graphdef, mesh, state_sh["params"], list(cfg.evals.in_train), cfg.data.dir)

    def run_eval(step: int) -> None:
        results, _ = evaluator.run(state["params"], tag=f"eval@{step}")
        writer.write(step, {f"eval/{k}": v for k, v in results.items()})

    if start == 0 and cfg.evals.in_train:
        run_eval(0)

    # -------------------------------------------------------------------- loop
    preempt = checkpoint.Preemption(cfg.train.preempt_check_every)
    compiled, peak = None, metrics.peak_flops(jax.devices()[0])
    nonfinite_run, pending = 0, None
    bar = tqdm(total=cfg.train.steps, initial=start, disable=not sys.stderr.isatty(), desc="train")
    t_last, step_last = time.perf_counter(), start
    data_wait = 0.0  # host seconds spent getting batches since the last log line
    profile, tracing = tuple(cfg.train.profile_steps), False

    def check_finite(step_metrics: dict[str, Any]) -> None:
        nonlocal nonfinite_run
        if float(step_metrics["finite"]):
            nonfinite_run = 0
            return
        nonfinite_run += 1
        log.warning("non-finite loss or gradient: update skipped (%d in a row)", nonfinite_run)
        if nonfinite_run >= cfg.train.max_nonfinite:
            raise NonFiniteError(f"{nonfinite_run} consecutive non-finite steps (loss={float(step_metrics['loss'])},"
                                 f" grad_norm={float(step_metrics['grad_norm'])}); stopping. Lower optim.lr, check the"
                                 " data for NaN targets, or raise train.max_nonfinite.")

    try:
        for step in range(start + 1, cfg.train.steps + 1):
            if profile and step == profile[0]:
                jax.profiler.start_trace(str(workdir / "profile"))
                tracing = True
            t_data = time.perf_counter()
            local = next(train_iter)
            batch = sharding.global_batch({k: local[k] for k in factory.step_fields(cfg)}, mesh)
            data_wait += time.perf_counter() - t_data
            if compiled is None:  # compile once, ahead of time, to read XLA's FLOP count beside ours
                compiled = train_step.lower(state, batch, text_bank).compile()
                xla = flops.xla_flops(compiled)
                log.info("train step: %.3e model FLOPs per device per step (XLA's cost analysis: %.3e)",
                         model_flops, xla)
                writer.write(step, {"flops_per_device_step": model_flops, "xla_flops_per_device_step": xla,
                                    "devices": mesh.size}, log=False)
            state, step_metrics = compiled(state, batch, text_bank)
            if step == start + 1:  # keep compilation out of the timings
                jax.block_until_ready(state)
                t_last, step_last, data_wait = time.perf_counter(), step, 0.0
            if tracing and step == profile[1]:
                jax.block_until_ready(state)
                jax.profiler.stop_trace()
                tracing = False
                log.info("profile of steps %d-%d written to %s", *profile, workdir / "profile")
            if pending is not None:  # read the previous step's metrics: keeps dispatch one step ahead
                check_finite(pending)
            pending = step_metrics
            bar.update(1)
            if step % cfg.train.log_every == 0 or step == cfg.train.steps:
                host = jax.device_get(step_metrics)
                check_finite(host)
                pending = None
                now = time.perf_counter()
                if step > step_last:  # the first step's time is compilation, not throughput
                    dt = (now - t_last) / (step - step_last)
                    # Input stall: the host's time getting each batch. Dispatch runs one step ahead,
                    # so it hides behind the device's work unless the pipeline is the bottleneck;
                    # data_wait_s near step_time_s means an input-bound run.
                    host.update({"step_time_s": dt, "patches_per_s": host["patches"] / dt,
                                 "data_wait_s": data_wait / (step - step_last)})
                    if peak:
                        host["mfu"] = model_flops / dt / peak
                t_last, step_last, data_wait = now, step, 0.0
                writer.write(step, host)
            if cfg.evals.in_train and cfg.train.eval_every and step % cfg.train.eval_every == 0 and step != cfg.train.steps:
                run_eval(step)
            saved = step % cfg.train.ckpt_every == 0 and ckpt.save(step, state, train_iter)
            if preempt.requested(step):
                log.info("SIGTERM: saving step %d and exiting", step)
                if not saved:
                    ckpt.save(step, state, train_iter)
                break
        if pending is not None:
            check_finite(jax.device_get(pending))
        ckpt.wait()
        if int(state["step"]) not in ckpt.all_steps():
            ckpt.save(int(state["step"]), state, train_iter)
        if cfg.evals.in_train and start < int(state["step"]) == cfg.train.steps:
            run_eval(cfg.train.steps)
    except NonFiniteError as e:
        ckpt.wait()
        log.error("%s", e)
        sys.exit(f"error: {e}")
    finally:
        if tracing:  # stopped before the last profiled step
            jax.profiler.stop_trace()
        ckpt.wait()
        ckpt.close()
        writer.close()
        bar.close()
        preempt.restore_handler()
    log.info("done at step %d", int(state["step"]))


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=cli.parse_flags)

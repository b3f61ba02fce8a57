"""Stage 2: python -m docjepa.finetune --config configs/stage2_demo.py --workdir W [--eval].

A stage-1 run's encoder (`--config.stage1.workdir=DIR`, its parameters only) is frozen: it has no
gradient and no optimizer state, and it rides in the train state unchanged. A projector maps its
TTM tokens into a decoder LM (the embedded small one trained from scratch with its own tokenizer,
or `--config.lm.model_dir=DIR` of a Llama checkpoint), and the projector and the LM (`lm.finetune`:
"full", or "lora" adapters of its attention and MLP kernels) learn to answer the documents'
instructions in JSON. Mesh, shardings, orbax checkpoints (with the grain iterator position) and
resume are stage 1's. With `--eval`, the latest checkpoint answers the validation split by greedy
decoding and W/eval/step_N.json holds each task's JSON validity and metrics (docjepa/evals/answers.py),
for the model and two twins: the same projector and LM with the visual tokens removed (`blind`) and
fed by a random-initialised encoder of the stage-1 config (`random_encoder`). `bridge.blind=True`
trains (and evaluates) without visual tokens: the baseline a blind answer should be held to.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags
from tqdm import tqdm

from docjepa import checkpoint, cli, metrics, sharding
from docjepa.data import pipeline, stage2
from docjepa.evals import answers
from docjepa.stage2_state import Stage2, check

FLAGS = flags.FLAGS
log = logging.getLogger("docjepa.finetune")


def define_flags() -> None:
    """Command-line flags, defined only when this module is the program (not on import)."""
    config_flags.DEFINE_config_file("config", None, "Config file (ml_collections), e.g. configs/stage2_demo.py.")
    flags.DEFINE_string("workdir", None, "Where checkpoints, the tokenizer, metrics and eval/ go.")
    flags.DEFINE_bool("eval", False, "Answer the validation split with the latest checkpoint instead of training.")
    flags.mark_flags_as_required(["config", "workdir"])


def evaluate(setup: Stage2, state: dict[str, Any], workdir: str) -> dict[str, Any]:
    """Answer the validation split's pairs (`evals.max_examples` of them) and score them, with the
    twins `evals.blind` and `evals.random_encoder` turn on (the same pairs, the same trained
    projector and LM: without visual tokens; with a random-initialised encoder). Writes
    W/eval/step_N.json ({"tasks": the model's summary, and one per twin}) and each answer beside
    its truth (and the twins' answers) in W/eval/step_N_answers.jsonl."""
    cfg = setup.cfg
    examples = setup.examples(cfg.data.val_split)
    variants: dict[str, tuple[dict[str, Any], bool]] = {"tasks": (state, False)}
    if setup.blind:
        log.info("bridge.blind: the model reads no visual tokens; no twins to compare with")
    else:
        if cfg.evals.get("blind", True):
            variants["blind"] = (state, True)
        if cfg.evals.get("random_encoder", True):
            variants["random_encoder"] = (setup.with_random_encoder(state), False)
    scores: dict[str, list[tuple[str, dict[str, float]]]] = {name: [] for name in variants}
    rows = []
    limit = cfg.evals.max_examples or None
    total = len(examples.index) if limit is None else min(limit, len(examples.index))
    for batch, positions, real in tqdm(stage2.eval_batches(examples, cfg.evals.batch_size, limit),
                                       total=-(-total // cfg.evals.batch_size), disable=not sys.stderr.isatty(),
                                       desc="answer"):
        answered = {name: setup.answer(st, batch, cfg.lm.max_text_tokens, blind)[:real]
                    for name, (st, blind) in variants.items()}
        for k, pos in enumerate(positions[:real]):
            pair = examples.pair(int(pos))
            row = dict(pair)
            for name in variants:
                s = answers.score(pair["task"], answered[name][k], pair["answer"])
                scores[name].append((pair["task"], s))
                out = {"predicted": answered[name][k], **s}
                if name == "tasks":
                    row.update(out)
                else:
                    row[name] = out
            rows.append(row)
    step = int(state["step"])
    result = {"step": step, "split": cfg.data.val_split, **{name: answers.summarize(s) for name, s in scores.items()}}
    out = checkpoint.workdir_path(workdir) / "eval"
    if jax.process_index() == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"step_{step}.json").write_text(json.dumps(result, indent=2))
        (out / f"step_{step}_answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return result


def main(argv: list[str]) -> None:
    del argv
    metrics.setup_logging()

    # ------------------------------------------------------------------ config
    cfg = FLAGS.config
    workdir = checkpoint.workdir_path(FLAGS.workdir)
    try:
        check(cfg)
        pipeline.read_manifest(cfg.data.dir)
    except ValueError as e:
        cli.usage_error(e)

    # -------------------------------------------------------------------- mesh
    try:
        mesh = sharding.run_mesh(cfg, workdir)
    except ValueError as e:
        cli.usage_error(e)

    # ------------------------------------------------------- model, optimizer
    try:
        setup = Stage2(cfg, os.fspath(workdir), mesh)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")

    # -------------------------------------------------------------- checkpoint
    ckpt = checkpoint.Checkpointer(workdir, keep=cfg.train.keep)
    start_step = ckpt.latest_step()
    state = setup.init_state() if start_step is None else ckpt.restore(start_step, setup.abstract_state())
    if FLAGS.eval:
        ckpt.close()
        result = evaluate(setup, state, os.fspath(workdir))
        print(answers.table({"model" if k == "tasks" else k: result[k] for k in ("tasks", "blind", "random_encoder")
                             if k in result}), end="")
        return

    # -------------------------------------------------------------------- data
    local_batch = cfg.data.batch_size // jax.process_count()
    examples = setup.examples(cfg.data.train_split)
    if cfg.bridge.get("cache_visual", False):
        setup.cache_visual(state, examples, np.arange(len(examples.index))[jax.process_index()::jax.process_count()])
    data = stage2.train_dataset(examples, seed=cfg.seed, local_batch=local_batch,
                                process_index=jax.process_index(), process_count=jax.process_count())
    train_iter = iter(data)
    if start_step is not None:
        train_iter.set_state(checkpoint.data_states(ckpt.directory / str(start_step) / "data")[jax.process_index()])
        log.info("resumed from step %d", start_step)

    # -------------------------------------------------------------------- loop
    step_fn = setup.jit_train_step()
    writer = metrics.MetricWriter(workdir)
    preempt = checkpoint.Preemption(cfg.train.preempt_check_every)
    start = int(state["step"])
    try:
        for step in tqdm(range(start + 1, cfg.train.steps + 1), initial=start, total=cfg.train.steps,
                         disable=not sys.stderr.isatty(), desc="finetune"):
            batch = sharding.global_batch({k: v for k, v in next(train_iter).items() if k in setup.step_fields}, mesh)
            state, step_metrics = step_fn(state, batch)
            if step % cfg.train.log_every == 0 or step == cfg.train.steps:
                writer.write(step, jax.device_get(step_metrics))
            saved = step % cfg.train.ckpt_every == 0 and ckpt.save(step, state, train_iter)
            if preempt.requested(step):
                log.info("SIGTERM: saving step %d and exiting", step)
                if not saved:
                    ckpt.save(step, state, train_iter)
                break
        ckpt.wait()
        if int(state["step"]) not in ckpt.all_steps():
            ckpt.save(int(state["step"]), state, train_iter)
    finally:
        ckpt.wait()
        ckpt.close()
        writer.close()
        preempt.restore_handler()
    log.info("done at step %d", int(state["step"]))


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=cli.parse_flags)

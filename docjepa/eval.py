"""Evaluation: python -m docjepa.eval --config configs/X.py --workdir DIR [--step N] [--data DIR].

Loads a checkpoint, runs the frozen encoder over a prepared split, and reports:
retrieval (window, page, document; both directions; R@1/5/10 with pool size and chance),
a linear probe and a kNN classifier of the document category on page embeddings, and a
linear layout probe on frozen Hiera stage features (mean IoU). The same numbers are
computed for the random-initialised twin (step 0) and for any `--compare NAME=WORKDIR`
checkpoint (e.g. the no-memory ablation), so the gain of each is visible.

The evaluators live in `docjepa.evals` (one module each, registered by name) and are chosen
by `config.evals.names`; the report (JSON, Markdown, PNG) is `docjepa.evals.report`.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import jax
import ml_collections as mlc
from absl import app, flags
from flax import nnx
from ml_collections import config_flags

from docjepa import checkpoint, cli, evals, metrics, sharding, state as factory, validate
from docjepa.data import bank, pipeline
from docjepa.evals import report

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Command-line flags, defined only when this module is the program (not on import)."""
    config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/demo.py.")
    flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints/.")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
    flags.DEFINE_string("data", None, "Prepared data directory (default: config.data.dir).")
    flags.DEFINE_multi_string("compare", [], "NAME=WORKDIR of another run to evaluate alongside.")
    flags.DEFINE_bool("random_init", True, "Also evaluate the random-initialised twin (step 0).")
    flags.mark_flags_as_required(["config", "workdir"])


class Restored:
    """A model restored from a workdir: graphdef, params and the shardings they live on."""

    def __init__(self, cfg: mlc.ConfigDict, workdir: Path, embed_dim: int, mesh: jax.sharding.Mesh,
                 step: int | None):
        make_model = functools.partial(factory.build_model, cfg, embed_dim, cfg.seed)
        self.graphdef, abstract_params = nnx.split(nnx.eval_shape(make_model), nnx.Param)
        tx, _ = factory.build_optimizer(cfg.optim, cfg.train.steps, factory.decay_mask(abstract_params))
        state_sh = factory.train_state_shardings(tx, abstract_params, mesh, cfg)
        self.param_sh = state_sh["params"]
        self.init_params = jax.jit(lambda: nnx.to_pure_dict(nnx.state(make_model(), nnx.Param)),
                                   out_shardings=self.param_sh)
        self.params, self.step = None, 0
        ckpt = checkpoint.Checkpointer(workdir, keep=1, async_save=False)
        if ckpt.latest_step() is not None:
            abstract = checkpoint.abstract_with_shardings(factory.abstract_train_state(tx, abstract_params, cfg), state_sh)
            state = ckpt.restore(step, abstract)
            self.params, self.step = state["params"], int(state["step"])
        elif step is not None:
            raise FileNotFoundError(f"{workdir}: no checkpoint at step {step}")
        ckpt.close()


def load_config(workdir: Path) -> mlc.ConfigDict:
    """The resolved config a training run wrote to its workdir."""
    path = workdir / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing (is {workdir} a docjepa workdir?)")
    return mlc.ConfigDict(json.loads(path.read_text()))


def main(argv: list[str]) -> None:
    del argv
    metrics.setup_logging()
    cfg = FLAGS.config
    workdir = Path(FLAGS.workdir)
    data_dir = FLAGS.data or cfg.data.dir
    try:
        validate.check(cfg, "eval")
        evals.check_names(list(cfg.evals.names))
        manifest = pipeline.read_manifest(data_dir)
        bank.check(manifest, data_dir, center=cfg.data.center_targets, need_bank=False)
        compare = {}
        for item in FLAGS.compare:
            name, _, other = item.partition("=")
            if not name or not other:
                raise ValueError(f"--compare: expected NAME=WORKDIR, got {item!r}")
            compare[name] = (load_config(Path(other)), Path(other))
    except (validate.ConfigError, FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")

    sharding.maybe_initialize_distributed()
    mesh = sharding.make_mesh(cfg.mesh)
    embed_dim = factory.embed_dim_of(cfg, manifest)
    main_run = Restored(cfg, workdir, embed_dim, mesh, FLAGS.step)
    if main_run.params is None:
        sys.exit(f"error: {workdir}: no checkpoint to evaluate (train first, or pass --workdir of a run)")
    evaluation = evals.Evaluation(cfg, main_run.graphdef, mesh, main_run.param_sh, list(cfg.evals.names), data_dir)

    runs, feats = {}, {}
    runs["trained"], feats["trained"] = evaluation.run(main_run.params, tag="trained")
    if FLAGS.random_init:
        runs["random_init"], feats["random_init"] = evaluation.run(main_run.init_params(), tag="random_init")
    for name, (other_cfg, other_dir) in compare.items():
        other = Restored(other_cfg, other_dir, factory.embed_dim_of(other_cfg, manifest), mesh, None)
        if other.params is None:
            sys.exit(f"error: --compare {name}: {other_dir} has no checkpoint")
        ev = evals.Evaluation(cfg, other.graphdef, mesh, other.param_sh, list(cfg.evals.names), data_dir)
        runs[name], feats[name] = ev.run(other.params, tag=name)

    if jax.process_index() == 0:
        # The training data's report goes to DIR/eval; another corpus's to DIR/eval/<its name>.
        out = workdir / "eval"
        if os.path.abspath(data_dir) != os.path.abspath(cfg.data.dir):
            out = out / os.path.basename(os.path.normpath(data_dir))
        path = report.write_report(out, main_run.step, runs, feats, data_dir, evaluation.val_split)
        print(report.markdown_table(runs))
        print(f"wrote {path}")


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=cli.parse_flags)

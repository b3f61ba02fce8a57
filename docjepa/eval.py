"""Evaluation: python -m docjepa.eval --workdir DIR [--config configs/X.py] [--step N] [--data DIR].

Loads a checkpoint's parameters (with the run's own DIR/config.json unless --config is given),
runs the frozen encoder over a prepared split, and reports:
retrieval (window, page, document; both directions; R@1/5/10 with pool size and chance),
a linear probe and a kNN classifier of the document category on page embeddings, and a
linear layout probe on frozen Hiera stage features (mean IoU). The same numbers are
computed for the random-initialised twin (step 0) and for any `--compare NAME=WORKDIR`
checkpoint (e.g. the no-memory ablation), so the gain of each is visible.

The evaluators live in `docjepa.evals` (one module each, registered by name) and are chosen
by `config.evals.names`; the report (JSON, Markdown, PNG) is `docjepa.evals.report`.
"""

from __future__ import annotations

import os
import sys

import jax
import ml_collections as mlc
from absl import app, flags
from etils import epath
from ml_collections import config_flags

from docjepa import checkpoint, cli, evals, metrics, run_config, sharding, state as factory, validate
from docjepa.data import bank, pipeline
from docjepa.evals import report

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Command-line flags, defined only when this module is the program (not on import)."""
    config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/demo.py (default: the run's own "
                                    "WORKDIR/config.json, docjepa/run_config.py).")
    flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints/.")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
    flags.DEFINE_string("data", None, "Prepared data directory (default: config.data.dir).")
    flags.DEFINE_multi_string("compare", [], "NAME=WORKDIR of another run to evaluate alongside.")
    flags.DEFINE_bool("random_init", True, "Also evaluate the random-initialised twin (step 0).")
    flags.mark_flags_as_required(["workdir"])


def parse_flags(argv: list[str]) -> list[str]:
    """`cli.parse_flags`, with `--config` defaulting to the run's own config: the saved
    WORKDIR/config.json, loaded through docjepa/run_config.py so that overrides apply to it."""
    workdir = cli.flag_argument(argv[1:], "workdir")
    if cli.flag_argument(argv[1:], "config") is None and workdir:
        if not (checkpoint.workdir_path(workdir) / "config.json").exists():
            cli.usage_error(f"--config not given and {workdir}/config.json does not exist "
                            "(pass --config, or the --workdir of a training run)")
        argv = [argv[0], f"--config={run_config.__file__}:{workdir}", *argv[1:]]
    return cli.parse_flags(argv)


def restore(cfg: mlc.ConfigDict, workdir: epath.Path, embed_dim: int, mesh: jax.sharding.Mesh, step: int | None,
            prefix: str = "") -> factory.Restored:
    """`state.Restored`, or one line (after `prefix`) and exit: 2 for a missing workdir or step (a flag
    was wrong), 1 for a checkpoint that cannot be read or does not fit the config."""
    try:
        return factory.Restored(cfg, workdir, embed_dim, mesh, step)
    except FileNotFoundError as e:
        cli.usage_error(f"{prefix}{e}")
    except checkpoint.CheckpointError as e:
        sys.exit(f"error: {prefix}{e}")


def main(argv: list[str]) -> None:
    del argv
    metrics.setup_logging()
    cfg = FLAGS.config
    workdir = checkpoint.workdir_path(FLAGS.workdir)
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
            compare[name] = (run_config.load(other), checkpoint.workdir_path(other))
    except (validate.ConfigError, FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")

    sharding.maybe_initialize_distributed()
    mesh = sharding.make_mesh(cfg.mesh, dcn=cfg.get("mesh_dcn", ()))
    embed_dim = factory.embed_dim_of(cfg, manifest)
    main_run = restore(cfg, workdir, embed_dim, mesh, FLAGS.step)
    evaluation = evals.Evaluation(cfg, main_run.graphdef, mesh, main_run.param_sh, list(cfg.evals.names), data_dir)

    runs, feats = {}, {}
    runs["trained"], feats["trained"] = evaluation.run(main_run.params, tag="trained")
    if FLAGS.random_init:
        runs["random_init"], feats["random_init"] = evaluation.run(main_run.init_params(), tag="random_init")
    for name, (other_cfg, other_dir) in compare.items():
        other = restore(other_cfg, other_dir, factory.embed_dim_of(other_cfg, manifest), mesh, None,
                        f"--compare {name}: ")
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
    app.run(main, flags_parser=parse_flags)

"""Export a trained model for PyTorch users: python -m docjepa.export --workdir W --out DIR [--step N].

DIR/config.json + DIR/model.safetensors: the Hiera encoder as a Hugging Face checkpoint
(`transformers.HieraModel.from_pretrained(DIR)` loads it; its `last_hidden_state` is our
encoder's tokens before the final LayerNorm, which HF applies in its pooler).
DIR/docjepa.safetensors: every other parameter (box embedding, TTM, heads, SigLIP scales,
running means) under its path in the model ("ttm/read/..."), and DIR/docjepa_config.json the
run's config, so the whole model can be rebuilt. Only parameters are read from the checkpoint.
"""

from __future__ import annotations

import json
import sys

import jax
import numpy as np
from absl import app, flags
from flax import nnx
import safetensors.numpy

from docjepa import checkpoint, cli, metrics, run_config, sharding, state as factory
from docjepa.data import pipeline
from docjepa.models import hiera

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints/ and config.json.")
    flags.DEFINE_string("out", None, "Directory to write the export to.")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
    flags.DEFINE_integer("embed_dim", 0, "Text embedding width (default: model.embed_dim, else the corpus manifest's).")
    flags.mark_flags_as_required(["workdir", "out"])


def restore_model(workdir: str, step: int | None = None, embed_dim: int = 0) -> tuple[nnx.Module, int]:
    """The run's model (its own config.json) with the parameters of `step` (default: latest), on
    one device, and the step. Raises FileNotFoundError / checkpoint.CheckpointError / DataError."""
    cfg = run_config.load(workdir)
    embed_dim = embed_dim or cfg.model.embed_dim or int(pipeline.read_manifest(cfg.data.dir)["encoder"]["dim"])
    mesh = sharding.make_mesh((("data", 1), ("fsdp", 1), ("tensor", 1)), jax.devices()[:1])
    restored = factory.Restored(cfg, workdir, embed_dim, mesh, step)
    return nnx.merge(restored.graphdef, jax.device_get(restored.params)), restored.step


def export(workdir: str, out: str, step: int | None = None, embed_dim: int = 0) -> int:
    """Write the export of `workdir`'s checkpoint to `out` (see the module docstring); the step."""
    model, step = restore_model(workdir, step, embed_dim)
    out = checkpoint.workdir_path(out)
    out.mkdir(parents=True, exist_ok=True)
    encoder = model.encoder
    weights = hiera.meta_to_hf_names(hiera.meta_state_dict(encoder), encoder.config.stages)
    (out / "model.safetensors").write_bytes(safetensors.numpy.save(weights, metadata={"format": "pt"}))
    (out / "config.json").write_text(json.dumps(hiera.hf_config(encoder.config), indent=2))
    params = {k: v for k, v in nnx.to_pure_dict(nnx.state(model, nnx.Param)).items() if k != "encoder"}
    rest = {"/".join(str(getattr(key, "key", key)) for key in path): np.ascontiguousarray(np.asarray(v, np.float32))
            for path, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    (out / "docjepa.safetensors").write_bytes(safetensors.numpy.save(rest))
    (out / "docjepa_config.json").write_text(run_config.load(workdir).to_json_best_effort(indent=2))
    return step


def main(argv: list[str]) -> None:
    del argv
    metrics.setup_logging()
    try:
        step = export(FLAGS.workdir, FLAGS.out, FLAGS.step, FLAGS.embed_dim)
    except FileNotFoundError as e:
        cli.usage_error(e)
    except (checkpoint.CheckpointError, pipeline.DataError, ValueError) as e:
        sys.exit(f"error: {e}")
    print(f"exported step {step} of {FLAGS.workdir} to {FLAGS.out}")


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=cli.parse_flags)

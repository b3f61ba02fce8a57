"""What stage 2 builds from its config (`Stage2`): the frozen stage-1 encoder, the tokenizer, the
projector and the decoder LM, the optimizer of the trainable part, the train state and its
shardings, the train step and greedy answers. A library for the programs that train and evaluate
(`python -m docjepa.finetune`) and that answer about a file (`python -m docjepa.generate`).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from docjepa import checkpoint, run_config, sharding, state as factory
from docjepa.data import pipeline, stage2, tasks
from docjepa.models import bridge, decoder

log = logging.getLogger("docjepa.finetune")
STEP_FIELDS = (*stage2.ENCODER_FIELDS, "input_ids", "text_mask", "loss_mask")
CACHED_STEP_FIELDS = (*stage2.VISUAL_FIELDS, "input_ids", "text_mask", "loss_mask")  # bridge.cache_visual


def check(cfg: mlc.ConfigDict) -> None:
    """Raise ValueError naming the first bad stage-2 field, before anything is built."""
    if not cfg.stage1.workdir:
        raise ValueError("config.stage1.workdir: empty; name the stage-1 run whose encoder stage 2 reads")
    if cfg.lm.finetune not in ("full", "lora"):
        raise ValueError(f"config.lm.finetune: {cfg.lm.finetune!r} is not 'full' or 'lora'")
    if cfg.lm.finetune == "lora" and not cfg.lm.model_dir:
        raise ValueError("config.lm.finetune: 'lora' adapts a pretrained LM; set config.lm.model_dir "
                         "(the embedded LM starts from scratch and is trained in full)")
    unknown = [t for t in cfg.data.tasks if t not in tasks.TASKS]
    if unknown or not cfg.data.tasks:
        raise ValueError(f"config.data.tasks: {list(cfg.data.tasks)} must be a non-empty subset of {list(tasks.TASKS)}")
    if not isinstance(cfg.data.max_chunks, int) or cfg.data.max_chunks < 1:
        raise ValueError(f"config.data.max_chunks: must be an integer >= 1, got {cfg.data.max_chunks!r}")
    if cfg.lm.model_dir and not os.path.isfile(os.path.join(cfg.lm.model_dir, "tokenizer.json")):
        raise ValueError(f"config.lm.model_dir: {cfg.lm.model_dir}/tokenizer.json not found")


def _param_dict(module: nnx.Module) -> dict[str, Any]:
    return nnx.to_pure_dict(nnx.state(module, nnx.Param))


class Stage2:
    """What stage 2 builds from its config, shared by training, evaluation and the tests: the
    frozen encoder, the tokenizer, the LM and projector, the optimizer of the trainable part,
    and the train state's shardings.

    The train state is {params: trainable {projector, lm | lora}, frozen: {encoder (, lm with
    LoRA)}, opt: the optimizer state of `params` only, step}."""

    def __init__(self, cfg: mlc.ConfigDict, workdir: str, mesh: jax.sharding.Mesh):
        self.cfg, self.mesh = cfg, mesh
        self.rules = sharding.config_rules(cfg)
        cfg1 = run_config.load(cfg.stage1.workdir)
        if not cfg1.model.ttm.use_memory:
            raise ValueError(f"config.stage1.workdir: {cfg.stage1.workdir} trained the no-memory ablation; "
                             "stage 2 reads the TTM's tokens")
        embed_dim = factory.embed_dim_of(cfg1, pipeline.read_manifest(cfg.data.dir))
        encoder = factory.Restored(cfg1, cfg.stage1.workdir, embed_dim, mesh, cfg.stage1.step or None)
        self.encoder_graphdef = encoder.graphdef
        self.random_encoder = encoder.init_params  # the stage-1 run's parameters at step 0 (its seed)
        self.blind = bool(cfg.bridge.get("blind", False))
        self.width = int(encoder.params["ttm"]["memory_init"].shape[-1])
        log.info("encoder: %s step %d, frozen", cfg.stage1.workdir, encoder.step)

        self.codec, lm = self._language_model(workdir)
        self.lm_cfg = lm.cfg
        projector = bridge.Projector(self.width, cfg.bridge.hidden, lm.cfg.hidden_size,
                                     cfg.data.max_chunks * cfg.data.max_pages, rngs=nnx.Rngs(cfg.seed + 1))
        self.lm_graphdef, self.projector_graphdef = nnx.graphdef(lm), nnx.graphdef(projector)
        lm_sh = nnx.to_pure_dict(sharding.state_shardings(nnx.state(lm, nnx.Param), mesh, self.rules))
        projector_sh = nnx.to_pure_dict(sharding.state_shardings(nnx.state(projector, nnx.Param), mesh, self.rules))
        lm_params = _param_dict(lm)
        decay = {"projector": factory.decay_mask(nnx.state(projector, nnx.Param))}
        params, param_sh = {"projector": _param_dict(projector)}, {"projector": projector_sh}
        frozen, frozen_sh = {"encoder": encoder.params}, {"encoder": encoder.param_sh}
        if cfg.lm.finetune == "lora":
            params["lora"] = bridge.lora_init(lm_params, cfg.lm.lora_rank, jax.random.key(cfg.seed))
            param_sh["lora"] = jax.tree.map(lambda _: sharding.replicated(mesh), params["lora"])
            decay["lora"] = jax.tree.map(lambda _: False, params["lora"])
            frozen["lm"], frozen_sh["lm"] = lm_params, lm_sh
        else:
            params["lm"], param_sh["lm"], decay["lm"] = lm_params, lm_sh, factory.decay_mask(nnx.state(lm, nnx.Param))
        self.tx, self.schedule = factory.build_optimizer(cfg.optim, cfg.train.steps, decay)
        abstract_opt = jax.eval_shape(self.tx.init, params)
        self.state_sh = {"params": param_sh, "frozen": frozen_sh, "step": sharding.replicated(mesh),
                         "opt": factory.opt_shardings(self.tx, abstract_opt, param_sh, mesh)}
        self._initial = {"params": params, "frozen": frozen}
        n = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree)) / 1e6  # noqa: E731
        log.info("trainable %.2fM parameters (%s), frozen %.2fM; LM vocabulary %d", n(params),
                 ", ".join(params), n(frozen), lm.cfg.vocab_size)

    def _language_model(self, workdir: str) -> tuple[stage2.TextCodec, decoder.Decoder]:
        """The tokenizer and the LM: the checkpoint's, or the embedded small one, whose tokenizer is
        learnt from the training split's prompts and answers and kept in W/tokenizer.json (a
        resumed run reads it back)."""
        cfg = self.cfg.lm
        if cfg.model_dir:
            lm, lm_cfg = decoder.load_decoder(cfg.model_dir)
            eos = lm_cfg.eos_token_ids[0] if lm_cfg.eos_token_ids else None
            return stage2.load_tokenizer(os.path.join(cfg.model_dir, "tokenizer.json"), eos, lm_cfg.pad_token_id), lm
        path = checkpoint.workdir_path(workdir) / "tokenizer.json"
        if path.exists():
            codec = stage2.load_tokenizer(os.fspath(path))
        else:
            codec = stage2.train_tokenizer(stage2.texts(self.cfg.data.dir, self.cfg.data.train_split), cfg.vocab_size)
            if jax.process_index() == 0:
                path.parent.mkdir(parents=True, exist_ok=True)
                codec.tokenizer.save(os.fspath(path))
        lm_cfg = decoder.DecoderConfig(
            vocab_size=codec.vocab_size, hidden_size=cfg.width, intermediate_size=cfg.mlp_dim,
            num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads,
            head_dim=cfg.width // cfg.heads, max_position_embeddings=cfg.max_positions, tie_word_embeddings=True,
            eos_token_ids=(codec.eos_id,), pad_token_id=codec.pad_id)
        return codec, decoder.Decoder(lm_cfg, rngs=nnx.Rngs(self.cfg.seed))

    def init_state(self) -> dict[str, Any]:
        """The state before the first step, on its shardings, in buffers of its own (the step
        donates the state it is given)."""
        copy = lambda tree, sh: jax.jit(lambda t: jax.tree.map(jnp.copy, t), out_shardings=sh)(tree)  # noqa: E731
        params = copy(self._initial["params"], self.state_sh["params"])
        opt = jax.jit(self.tx.init, out_shardings=self.state_sh["opt"])(params)
        return {"params": params, "frozen": copy(self._initial["frozen"], self.state_sh["frozen"]), "opt": opt,
                "step": jax.device_put(jnp.int32(0), self.state_sh["step"])}

    def abstract_state(self) -> dict[str, Any]:
        """The train state as ShapeDtypeStructs on its shardings: what orbax restores onto."""
        tree = {**self._initial, "opt": jax.eval_shape(self.tx.init, self._initial["params"]),
                "step": jax.ShapeDtypeStruct((), jnp.int32)}
        return checkpoint.abstract_with_shardings(tree, self.state_sh)

    def modules(self, state: dict[str, Any]) -> tuple[nnx.Module, bridge.Projector, decoder.Decoder]:
        """The encoder, projector and LM (with the LoRA adapters folded in) of a state."""
        params, frozen = state["params"], state["frozen"]
        lm = params["lm"] if "lm" in params else bridge.lora_merge(
            frozen["lm"], params["lora"], self.cfg.lm.lora_alpha / self.cfg.lm.lora_rank)
        return (nnx.merge(self.encoder_graphdef, frozen["encoder"]),
                nnx.merge(self.projector_graphdef, params["projector"]), nnx.merge(self.lm_graphdef, lm))

    def visual(self, encoder: nnx.Module, batch: dict[str, jax.Array], blind: bool = False
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """`bridge.visual_tokens` of the batch; none at all (zero tokens, the encoder not run) with
        `blind` or `bridge.blind`: the LM then reads the prompt alone, at the positions it would
        have without a prefix."""
        data = self.cfg.data
        if blind or self.blind:
            b = batch["step_mask"].shape[0]
            return jnp.zeros((b, 0, self.width), jnp.float32), jnp.zeros((b, 0), bool), jnp.zeros((b, 0), jnp.int32)
        return bridge.visual_tokens(encoder, batch, max_pages=data.max_pages, pages=data.max_chunks * data.max_pages,
                                    memory=self.cfg.bridge.memory)

    @property
    def step_fields(self) -> tuple[str, ...]:
        """The batch fields the train step reads: pixels, or the cached visual tokens."""
        return CACHED_STEP_FIELDS if self.cfg.bridge.get("cache_visual", False) and not self.blind else STEP_FIELDS

    def cache_visual(self, state: dict[str, Any], examples: stage2.Examples, positions: np.ndarray) -> None:
        """Run the frozen encoder once over every (document, focus chunk) the index `positions`
        use and keep its tokens in `examples.visual`, so that training batches carry tokens, not
        pixels, and a step costs the projector and the LM alone. The encoder is frozen and stage 2
        does not augment, so the tokens are those the step would compute (up to the last bits of
        a different batch). Each process reads its own positions on its local devices, in
        batches of `evals.batch_size` rows per device."""
        if self.blind:
            return
        keys = sorted({(int(r), int(f)) for r, _, f in examples.index[positions]})
        devices = jax.local_devices()
        mesh = sharding.make_mesh((("data", len(devices)), ("fsdp", 1), ("tensor", 1)), devices)
        params = jax.device_put(jax.device_get(state["frozen"]["encoder"]), sharding.replicated(mesh))
        rows = self.cfg.evals.batch_size * len(devices)
        visual = jax.jit(lambda params, batch: self.visual(nnx.merge(self.encoder_graphdef, params), batch))

        cache = {}
        for lo in tqdm(range(0, len(keys), rows), desc="visual tokens", disable=not sys.stderr.isatty()):
            part = keys[lo:lo + rows]
            docs = [{**examples.document(r), "focus": np.int32(f)} for r, f in part]
            docs += [docs[0]] * (rows - len(docs))
            batch = {k: np.stack([d[k] for d in docs]) for k in stage2.ENCODER_FIELDS}
            out = jax.device_get(visual(params, sharding.global_batch(batch, mesh)))
            for i, key in enumerate(part):
                cache[key] = {k: np.asarray(v[i]) for k, v in zip(stage2.VISUAL_FIELDS, out)}
        log.info("visual tokens of %d (document, chunk) pairs cached", len(cache))
        examples.visual = cache

    def train_step(self, state: dict[str, Any], batch: dict[str, jax.Array]
                   ) -> tuple[dict[str, Any], dict[str, jax.Array]]:
        """One update of the trainable part; the encoder runs outside the differentiated function
        (or ran once before training: `cache_visual`) and `frozen` comes back as it went in.
        Non-finite updates are skipped, as in stage 1."""
        with sharding.activation_sharding(self.mesh, self.rules):
            if "visual" in batch:
                visual = tuple(batch[k] for k in stage2.VISUAL_FIELDS)
            else:
                visual = self.visual(self.modules(state)[0], batch)

            def loss_fn(params):
                _, projector, lm = self.modules({**state, "params": params})
                return bridge.answer_loss(projector, lm, visual, batch)

            (loss, count), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt = self.tx.update(grads, state["opt"], state["params"])
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
        new = {"params": keep(optax.apply_updates(state["params"], updates), state["params"]),
               "opt": keep(opt, state["opt"]), "frozen": state["frozen"], "step": state["step"] + 1}
        return new, {"loss": loss, "answer_tokens": count, "grad_norm": grad_norm, "lr": self.schedule(state["step"]),
                     "finite": finite.astype(jnp.float32)}

    def jit_train_step(self):
        batch_sh = {k: sharding.batch_sharding(self.mesh, 1) for k in self.step_fields}
        return jax.jit(self.train_step, in_shardings=(self.state_sh, batch_sh),
                       out_shardings=(self.state_sh, sharding.replicated(self.mesh)), donate_argnums=0)

    def examples(self, split: str) -> stage2.Examples:
        index, skipped = stage2.pair_index(self.cfg.data, split, self.codec, self.cfg.lm.max_text_tokens)
        log.info("%s: %d pairs (left out: %s)", split, len(index), skipped)
        return stage2.Examples(self.cfg.data, split, index, self.codec, self.cfg.lm.max_text_tokens)

    def answer(self, state: dict[str, Any], batch: dict[str, np.ndarray], max_new_tokens: int, blind: bool = False
               ) -> list[str]:
        """Greedy answers to the batch's prompts, decoded to text (`blind`: without visual tokens)."""
        prefix = self._prefix(state, {k: batch[k] for k in (*stage2.ENCODER_FIELDS, "prompt_ids", "prompt_mask")},
                              blind)
        out = decoder.generate(self.modules(state)[2], *prefix, max_new_tokens, eos_id=self.codec.eos_id,
                               pad_id=self.codec.pad_id)
        return [self.codec.decode(row) for row in np.asarray(out)]

    @functools.partial(jax.jit, static_argnums=(0, 3))
    def _prefix(self, state: dict[str, Any], batch: dict[str, jax.Array], blind: bool = False
                ) -> tuple[jax.Array, jax.Array]:
        encoder, projector, lm = self.modules(state)
        return bridge.prefix(projector, lm, self.visual(encoder, batch, blind), batch["prompt_ids"],
                             batch["prompt_mask"])

    def with_random_encoder(self, state: dict[str, Any]) -> dict[str, Any]:
        """`state` with the frozen encoder replaced by the stage-1 model at initialisation."""
        return {**state, "frozen": {**state["frozen"], "encoder": self.random_encoder()}}

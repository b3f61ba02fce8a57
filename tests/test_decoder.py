"""The Flax Llama decoder against transformers' PyTorch LlamaForCausalLM on the same files."""

import functools
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from safetensors.numpy import load_file, save_file

from docjepa import sharding
from docjepa.models import decoder

VOCAB = 97
PAD = 0
NEW = 8
PROMPTS = [[5, 17, 33, 2, 81, 44, 9], [12, 60], [70, 3, 3, 91, 28]]  # different lengths on purpose


def _hf_config(tie: bool) -> transformers.LlamaConfig:
    # No eos/bos in the config: each test chooses the eos it generates with. A wide init makes the
    # random model's next-token distribution peaked, so greedy choices are not near-ties.
    return transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, initializer_range=0.2,
        tie_word_embeddings=tie, bos_token_id=None, eos_token_id=None, pad_token_id=None,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0}, attn_implementation="eager")


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def ckpt(request, tmp_path_factory):
    """A random tiny Llama saved as one file and as several shards, and the torch model itself."""
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(_hf_config(request.param)).eval()
    root = tmp_path_factory.mktemp("tied" if request.param else "untied")
    model.save_pretrained(root / "single", safe_serialization=True)
    model.save_pretrained(root / "sharded", safe_serialization=True, max_shard_size="20KB")
    ours, cfg = decoder.load_decoder(root / "single")
    return {"dir": root / "single", "sharded": root / "sharded", "hf": model, "model": ours, "cfg": cfg}


def _pad(prompts, side: str) -> tuple[np.ndarray, np.ndarray]:
    t = max(map(len, prompts))
    ids, mask = np.full((len(prompts), t), PAD, np.int32), np.zeros((len(prompts), t), np.int32)
    for row, p in enumerate(prompts):
        cols = slice(t - len(p), t) if side == "left" else slice(0, len(p))
        ids[row, cols], mask[row, cols] = p, 1
    return ids, mask


@functools.partial(jax.jit, static_argnums=0)
def _logits(graphdef, state, ids, mask):
    return nnx.merge(graphdef, state)(ids, attention_mask=mask)


def _forward(model, ids, mask):
    return np.asarray(_logits(*nnx.split(model), jnp.asarray(ids), jnp.asarray(mask)))


def _hf_generate(hf, mask, eos, **inputs) -> np.ndarray:
    with torch.no_grad():
        out = hf.generate(**inputs, attention_mask=torch.from_numpy(mask).long(), max_new_tokens=NEW,
                          do_sample=False, eos_token_id=eos, pad_token_id=PAD).numpy()
    if "input_ids" in inputs:  # decoder-only generate returns the prompt too when given ids
        out = out[:, inputs["input_ids"].shape[1]:]
    return np.pad(out, ((0, 0), (0, NEW - out.shape[1])), constant_values=PAD)  # all rows stopped early


def test_config_and_sharded_checkpoint(ckpt):
    cfg, model = ckpt["cfg"], ckpt["model"]
    assert (cfg.num_key_value_heads, cfg.head_dim, cfg.rope_theta, cfg.rms_norm_eps) == (2, 8, 500.0, 1e-5)
    assert (model.lm_head is None) == cfg.tie_word_embeddings
    shards = sorted(p.name for p in ckpt["sharded"].glob("*.safetensors"))
    assert len(shards) > 1 and (ckpt["sharded"] / "model.safetensors.index.json").is_file()
    sharded, cfg2 = decoder.load_decoder(ckpt["sharded"])
    assert cfg2 == cfg
    ours = nnx.to_flat_state(nnx.state(model))
    theirs = dict(nnx.to_flat_state(nnx.state(sharded)))
    assert len(ours) == len(theirs)
    for path, var in ours:
        assert var[...].dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(var[...]), np.asarray(theirs[path][...]))
    hf = ckpt["hf"].state_dict()
    np.testing.assert_array_equal(np.asarray(model.layers[1].self_attn.k_proj.kernel[...]),
                                  hf["model.layers.1.self_attn.k_proj.weight"].numpy().T)


@pytest.mark.parametrize("side", ["left", "right"])
def test_logits_match_transformers(ckpt, side):
    ids, mask = _pad(PROMPTS, side)
    ours = _forward(ckpt["model"], ids, mask)
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)  # what HF generate passes for padded rows
    with torch.no_grad():
        theirs = ckpt["hf"](input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long(),
                            position_ids=torch.from_numpy(positions).long()).logits.numpy()
    real = mask.astype(bool)
    assert ours.shape == (3, 7, VOCAB) and ours.dtype == np.float32
    assert np.abs(ours - theirs)[real].max() < 1e-4
    assert np.abs(theirs[real]).max() > 1.0  # the comparison is not between near-zero logits
    # The embeddings entry point is the same computation.
    model = ckpt["model"]
    via_embeds = model(inputs_embeds=model.embed(jnp.asarray(ids)), attention_mask=jnp.asarray(mask))
    assert np.abs(np.asarray(via_embeds) - ours)[real].max() < 1e-5


def test_generate_matches_transformers(ckpt):
    model, hf = ckpt["model"], ckpt["hf"]
    left, mask = _pad(PROMPTS, "left")
    right, right_mask = _pad(PROMPTS, "right")
    theirs = _hf_generate(hf, mask, None, input_ids=torch.from_numpy(left).long())
    ours = np.asarray(decoder.generate(model, left, mask, NEW))
    assert ours.shape == (3, NEW) and ours.dtype == np.int32
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(np.asarray(decoder.generate(model, right, right_mask, NEW)), theirs)
    # Stop row 0 at its third token: afterwards it emits padding while the other rows go on.
    eos = int(theirs[0, 2])
    stop = int(np.argmax(theirs[0] == eos))
    theirs_eos = _hf_generate(hf, mask, eos, input_ids=torch.from_numpy(left).long())
    assert (theirs_eos[0, stop + 1:] == PAD).all() and (theirs_eos[0, :stop + 1] == theirs[0, :stop + 1]).all()
    assert (theirs_eos[:, -1] != PAD).any()  # the other rows went on to the end
    for ids, m in ((left, mask), (right, right_mask)):
        np.testing.assert_array_equal(np.asarray(decoder.generate(model, ids, m, NEW, eos_id=eos, pad_id=PAD)),
                                      theirs_eos)
    # Several eos ids, every row stops by its second token: the loop exits early, the rest is padding.
    eos_ids = sorted({int(x) for x in theirs[:, 1]})
    theirs_all = _hf_generate(hf, mask, eos_ids, input_ids=torch.from_numpy(left).long())
    ours_all = np.asarray(decoder.generate(model, left, mask, NEW, eos_id=eos_ids, pad_id=PAD))
    np.testing.assert_array_equal(ours_all, theirs_all)
    assert (ours_all[:, 2:] == PAD).all()
    with pytest.raises(ValueError, match="a row has no real token"):
        decoder.generate(model, left, mask * np.array([[1], [0], [1]], np.int32), NEW)


def test_generate_from_embeddings_with_visual_prefix(ckpt):
    """Stage 2's layout: a prefix of (visual) embeddings, then a left-padded prompt, so the
    padding sits between the two; transformers gets the same embeddings and mask."""
    model, hf = ckpt["model"], ckpt["hf"]
    ids, prompt_mask = _pad(PROMPTS, "left")
    prefix = np.random.default_rng(0).normal(0, 0.5, (3, 3, 32)).astype(np.float32)
    embeds = np.concatenate([prefix, np.asarray(model.embed(jnp.asarray(ids)))], axis=1)
    mask = np.concatenate([np.ones((3, 3), np.int32), prompt_mask], axis=1)
    theirs = _hf_generate(hf, mask, None, inputs_embeds=torch.from_numpy(embeds))
    np.testing.assert_array_equal(np.asarray(decoder.generate(model, embeds, mask, NEW)), theirs)


@pytest.mark.parametrize("ckpt", [False], ids=["untied"], indirect=True)
def test_kv_cache_equals_full_recompute(ckpt):
    model = ckpt["model"]
    ids, mask = _pad(PROMPTS, "left")
    b, t = ids.shape
    # Logits: prefill t tokens, then feed k more one at a time, vs one pass over all t + k.
    extra = np.random.default_rng(1).integers(1, VOCAB, (b, 4)).astype(np.int32)
    full = _forward(model, np.concatenate([ids, extra], 1), np.concatenate([mask, np.ones_like(extra)], 1))
    cache = decoder.init_cache(ckpt["cfg"], b, t + extra.shape[1])
    logits, cache = model(jnp.asarray(ids), attention_mask=jnp.asarray(mask), cache=cache)
    steps = [np.asarray(logits)]
    for j in range(extra.shape[1]):
        logits, cache = model(jnp.asarray(extra[:, j:j + 1]), cache=cache)
        steps.append(np.asarray(logits))
    cached = np.concatenate(steps, axis=1)
    real = np.concatenate([mask, np.ones_like(extra)], 1).astype(bool)
    assert np.abs(cached - full)[real].max() < 1e-5
    assert int(cache.index) == t + extra.shape[1] and np.asarray(cache.valid).sum() == real.sum()
    with pytest.raises(ValueError, match="overflow"):
        model(jnp.asarray(extra[:, :1]), cache=cache)
    # Tokens: greedy by recomputing the whole sequence each step (one fixed-shape buffer).
    buf = np.concatenate([ids, np.full((b, NEW), PAD, np.int32)], 1)
    buf_mask = np.concatenate([mask, np.zeros((b, NEW), np.int32)], 1)
    for i in range(NEW):
        logits = _forward(model, buf, buf_mask)
        buf[:, t + i] = logits[:, t + i - 1].argmax(-1)
        buf_mask[:, t + i] = 1
    np.testing.assert_array_equal(np.asarray(decoder.generate(model, ids, mask, NEW)), buf[:, t:])


def _corrupt(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    tensors = load_file(str(dst / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(dst / "model.safetensors"))
    return dst


def test_corrupt_checkpoints_name_the_tensor(ckpt, tmp_path):
    key = "model.layers.1.mlp.up_proj.weight"
    missing = _corrupt(ckpt["dir"], tmp_path / "missing", lambda t: t.pop(key))
    with pytest.raises(ValueError, match=rf"tensor '{key}' is missing"):
        decoder.load_decoder(missing)

    def reshape(t):
        t["model.norm.weight"] = np.ones(31, np.float32)

    with pytest.raises(ValueError, match=r"tensor 'model.norm.weight' has shape \(31,\), config.json implies \(32,\)"):
        decoder.load_decoder(_corrupt(ckpt["dir"], tmp_path / "shape", reshape))

    def extra(t):
        t["model.layers.2.mlp.up_proj.weight"] = t[key]

    with pytest.raises(ValueError, match=r"tensor 'model.layers.2.mlp.up_proj.weight' in the checkpoint is not"):
        decoder.load_decoder(_corrupt(ckpt["dir"], tmp_path / "extra", extra))


def test_config_refusals_and_transformers4_layout():
    base = json.loads(_hf_config(False).to_json_string())
    v4 = {k: v for k, v in base.items() if k != "rope_parameters"} | {"rope_theta": 123.0, "rope_scaling": None}
    assert decoder.DecoderConfig.from_hf(v4).rope_theta == 123.0
    assert decoder.DecoderConfig.from_hf(base | {"eos_token_id": [2, 7]}).eos_token_ids == (2, 7)
    bad = {
        "model_type 'gpt2'": base | {"model_type": "gpt2"},
        "architecture 'LlamaForSequenceClassification'": base | {"architectures": ["LlamaForSequenceClassification"]},
        "rope scaling": v4 | {"rope_scaling": {"rope_type": "llama3", "factor": 8.0}},
        "rope scaling .*linear": base | {"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}},
        "attention_bias": base | {"attention_bias": True},
        "num_key_value_heads 3": base | {"num_key_value_heads": 3},
    }
    for message, raw in bad.items():
        with pytest.raises(ValueError, match=message) as err:
            decoder.DecoderConfig.from_hf(raw)
        assert "\n" not in str(err.value)


def test_parameters_carry_logical_axes(ckpt):
    known = dict(sharding.LOGICAL_AXIS_RULES)
    axes = {path: var.get_metadata().get("out_sharding") for path, var in nnx.to_flat_state(nnx.state(ckpt["model"]))}
    assert all(a and all(n in known for n in a) for a in axes.values()), axes
    assert axes[("embed_tokens",)] == ("vocab", "embed")
    assert axes[("layers", 0, "self_attn", "k_proj", "kernel")] == ("embed", "heads")
    assert axes[("layers", 1, "mlp", "down_proj", "kernel")] == ("mlp", "embed")
    assert axes[("norm", "weight")] == ("norm",)
    if not ckpt["cfg"].tie_word_embeddings:
        assert axes[("lm_head", "kernel")] == ("embed", "vocab")


@pytest.mark.parametrize("ckpt", [False], ids=["untied"], indirect=True)
def test_bfloat16_compute_stays_close(ckpt):
    model, _ = decoder.load_decoder(ckpt["dir"], dtype=jnp.bfloat16)
    assert model.embed_tokens[...].dtype == jnp.float32  # parameters stay float32
    ids, mask = _pad(PROMPTS, "left")
    ref = _forward(ckpt["model"], ids, mask)
    low = _forward(model, ids, mask)
    real = mask.astype(bool)
    assert low.dtype == np.float32
    assert np.abs(low - ref)[real].max() < 0.1 * np.abs(ref[real]).max()

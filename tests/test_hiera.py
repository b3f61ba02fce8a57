"""Hiera: reference parity (Hugging Face's PyTorch HieraModel), sizes, layouts, compute options."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import docjepa  # noqa: F401  (flax config)
from docjepa import sharding
from docjepa.models import hiera

# Meta's image sizes without the classifier head (facebookresearch/hiera model zoo, minus
# dim*1000+1000 head parameters).
META_PARAMS = {
    "hiera_tiny_224": 27_141_216,
    "hiera_small_224": 34_239_072,
    "hiera_base_224": 50_755_968,
    "hiera_base_plus_224": 68_999_616,
    "hiera_large_224": 212_586_912,
    "hiera_huge_224": 670_730_752,
}


def _forward(model, x, **kw):
    return nnx.jit(lambda m, y: m(y, return_intermediates=True, **kw))(model, x)


@pytest.fixture(scope="module")
def tiny():
    return hiera.create("hiera_tiny_test", rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def images():
    return jax.random.normal(jax.random.key(1), (2, 224, 224, 3), jnp.float32)


@pytest.mark.parametrize("name", sorted(META_PARAMS))
def test_param_counts_match_meta(name):
    abstract = nnx.eval_shape(lambda: hiera.create(name, rngs=nnx.Rngs(0)))
    assert hiera.param_count(abstract) == META_PARAMS[name]


def test_base_shapes_abstract():
    abstract = nnx.eval_shape(lambda: hiera.create("hiera_base_224", rngs=nnx.Rngs(0)))
    out, inter = nnx.eval_shape(lambda m, x: m(x, return_intermediates=True), abstract,
                                jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32))
    assert out.shape == (2, 49, 768) and abstract.out_dim == 768
    assert [i.shape for i in inter] == [(2, 56, 56, 96), (2, 28, 28, 192), (2, 14, 14, 384), (2, 7, 7, 768)]


def test_tiny_test_shapes(tiny, images):
    out, inter = _forward(tiny, images)
    assert out.shape == (2, 49, tiny.out_dim) == (2, 49, 256)
    assert [i.shape for i in inter] == [(2, 56, 56, 32), (2, 28, 28, 64), (2, 14, 14, 128), (2, 7, 7, 256)]
    # The final tokens are the last stage map in raster order, LayerNorm'd per token.
    np.testing.assert_allclose(out, tiny.norm(inter[-1].reshape(2, 49, -1)), atol=1e-5)


def test_unroll_reroll_are_inverse_and_pool_2x2():
    x = jax.random.normal(jax.random.key(0), (2, 32, 16, 3))
    for levels in range(4):
        u = hiera.unroll(x, levels, (2, 2))
        np.testing.assert_array_equal(hiera.reroll(u, levels, (32, 16), (2, 2)), x)
    # A max over the leading stride axis of unrolled tokens is a 2x2 max-pool in image layout.
    u = hiera.unroll(x, 3, (2, 2))
    pooled = u.reshape(2, 4, -1, 3).max(axis=1)
    expected = x.reshape(2, 16, 2, 8, 2, 3).max(axis=(2, 4))
    np.testing.assert_array_equal(hiera.reroll(pooled, 2, (16, 8), (2, 2)), expected)


def test_logical_axes_on_every_param(tiny):
    params = nnx.state(tiny, nnx.Param)
    for path, var in nnx.to_flat_state(params):
        axes = var.get_metadata().get("out_sharding")
        assert axes is not None and len(axes) == var.ndim, path
    assert tiny.patch_embed.kernel.get_metadata()["out_sharding"] == ("conv", "conv", "conv", "embed")
    assert tiny.pos_embed.get_metadata()["out_sharding"] == ("pos", "embed")
    mesh = sharding.make_mesh([("data", 2), ("fsdp", 2), ("tensor", 2)])
    shardings = sharding.state_shardings(params, mesh)
    # The fused qkv splits whole heads over "tensor", not the q | k | v blocks.
    P = jax.sharding.PartitionSpec
    assert shardings["blocks"][1]["attn"]["qkv"]["kernel"].get_value().spec == P("fsdp", None, "tensor", None)


# ---------------------------------------------------------------------------------------------
# Parity with Hugging Face's PyTorch port of Meta's Hiera.

@pytest.fixture(scope="module")
def hf_ref():
    import torch
    from transformers import HieraConfig as HFHieraConfig, HieraModel

    torch.manual_seed(0)
    cfg = HFHieraConfig(embed_dim=32, depths=[1, 2, 2, 1], num_heads=[2, 4, 8, 16])
    model = HieraModel(cfg).eval()
    with torch.no_grad():  # re-randomise everything, LayerNorms and biases included
        for name, p in model.named_parameters():
            if "layernorm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_((0.5 if "position" in name else 0.1) * torch.randn_like(p))
    return model


def _meta_state_dict(model):
    return hiera.hf_to_meta_names({k: v.detach().numpy() for k, v in model.state_dict().items()})


def test_hf_to_meta_names_layout(hf_ref):
    names = set(_meta_state_dict(hf_ref))
    assert {"patch_embed.proj.weight", "pos_embed", "blocks.0.norm1.weight", "blocks.1.proj.weight",
            "blocks.5.mlp.fc2.bias", "norm.weight"} <= names
    assert not any(re.search(r"stages|layernorm|embeddings", n) for n in names)
    # The image-classification wrapper: "hiera." prefix, classifier -> Meta's head (ignored on load).
    classifier = {"hiera.encoder.stages.0.layers.0.mlp.fc1.bias": 0, "hiera.encoder.stages.1.layers.1.proj.weight": 0,
                  "hiera.encoder.stages.1.layers.0.proj.weight": 0, "classifier.weight": 0}
    assert set(hiera.hf_to_meta_names(classifier)) == {
        "blocks.0.mlp.fc1.bias", "blocks.2.proj.weight", "blocks.1.proj.weight", "head.projection.weight"}


def test_parity_with_hf_hiera(hf_ref, images):
    import torch

    with torch.no_grad():
        out = hf_ref(torch.tensor(np.asarray(images).transpose(0, 3, 1, 2)), output_hidden_states=True)
        ref_tokens = hf_ref.pooler.layernorm(out.last_hidden_state).numpy()
    ref_stages = [s.numpy() for s in out.reshaped_hidden_states[1:]]

    model = hiera.create("hiera_tiny_test", embed_dim=32, num_heads=2, stages=(1, 2, 2, 1), rngs=nnx.Rngs(0))
    hiera.load_torch_state_dict(model, _meta_state_dict(hf_ref))
    tokens, stages = _forward(model, images)
    assert len(stages) == len(ref_stages) == 4
    for ours, theirs in zip(stages, ref_stages):
        assert ours.shape == theirs.shape
        assert np.abs(np.asarray(ours) - theirs).max() < 1e-4
    np.testing.assert_allclose(np.asarray(stages[-1]).reshape(2, 49, -1), out.last_hidden_state.numpy(), atol=1e-4)
    assert np.abs(np.asarray(tokens) - ref_tokens).max() < 1e-4
    # Meta's classifier features: the final norm of the mean token.
    np.testing.assert_allclose(model.norm(stages[-1].mean(axis=(1, 2))), out.pooler_output.numpy(), atol=1e-4)


def test_load_safetensors_roundtrip_and_errors(hf_ref, tmp_path):
    from safetensors.numpy import save_file

    sd = _meta_state_dict(hf_ref)
    path = tmp_path / "hiera.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, str(path))
    cfg = dict(embed_dim=32, num_heads=2, stages=(1, 2, 2, 1))
    model = hiera.create("hiera_tiny_test", rngs=nnx.Rngs(0), **cfg)
    hiera.load_safetensors(model, path)
    np.testing.assert_array_equal(model.patch_embed.kernel[...], sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(model.blocks[1].attn.qkv.kernel[...].reshape(-1, sd["blocks.1.attn.qkv.weight"].shape[0]),
                                  sd["blocks.1.attn.qkv.weight"].T)
    np.testing.assert_array_equal(model.pos_embed[...], sd["pos_embed"][0])

    with pytest.raises(ValueError, match=r"safetensors\.torch\.save_file"):
        hiera.load_safetensors(model, tmp_path / "hiera_base_224.pth")
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        hiera.load_safetensors(model, tmp_path / "nope.safetensors")

    bad = dict(sd)
    del bad["blocks.2.mlp.fc1.bias"]
    bad["decoder_pred.weight"] = np.zeros((3, 3), np.float32)
    bad["blocks.0.attn.qkv.weight"] = np.zeros((5, 5), np.float32)
    bad["head.projection.weight"] = np.zeros((10, 256), np.float32)  # ignored
    before = np.asarray(model.blocks[0].attn.qkv.kernel[...])
    with pytest.raises(ValueError) as err:
        hiera.load_torch_state_dict(model, bad)
    msg = str(err.value)
    assert "1 missing: blocks.2.mlp.fc1.bias" in msg and "1 unexpected: decoder_pred.weight" in msg
    assert "blocks.0.attn.qkv.weight (5, 5) != (96, 32)" in msg and "head." not in msg
    np.testing.assert_array_equal(model.blocks[0].attn.qkv.kernel[...], before)  # untouched


# ---------------------------------------------------------------------------------------------
# Compute options and bad input.

def test_bf16_close_to_fp32(tiny, images):
    params = nnx.state(tiny, nnx.Param)
    bf16 = hiera.create("hiera_tiny_test", dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    nnx.update(bf16, params)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(bf16, nnx.Param)))
    ref, _ = _forward(tiny, images)
    out, inter = _forward(bf16, images)
    assert out.dtype == jnp.bfloat16 and inter[0].dtype == jnp.bfloat16
    # Final tokens are LayerNorm'd (unit scale); bf16 has ~3 significant digits.
    err = np.abs(np.asarray(out, np.float32) - np.asarray(ref))
    assert err.mean() < 0.03 and err.max() < 0.5, (err.mean(), err.max())


def test_remat_same_outputs_and_grads(tiny, images):
    remat = hiera.create("hiera_tiny_test", remat=True, rngs=nnx.Rngs(0))
    nnx.update(remat, nnx.state(tiny, nnx.Param))
    x = images[:1]
    # A random readout: sum(tokens**2) would be constant after the final LayerNorm.
    w = jax.random.normal(jax.random.key(2), (1, 49, tiny.out_dim))

    @nnx.jit
    def loss_and_grad(model):
        return nnx.value_and_grad(lambda m: jnp.sum(m(x) * w))(model)

    (l1, g1), (l2, g2) = loss_and_grad(tiny), loss_and_grad(remat)
    np.testing.assert_allclose(l1, l2, rtol=1e-6)
    leaves1, leaves2 = jax.tree.leaves(g1), jax.tree.leaves(g2)
    assert len(leaves1) == len(leaves2) and all(np.abs(a).max() > 0 for a in leaves1)
    for a, b in zip(leaves1, leaves2):  # equal up to float reassociation by XLA's fusions
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(a).max())


def test_drop_path_is_per_sample_and_off_when_deterministic(images):
    model = hiera.create("hiera_tiny_test", drop_path_rate=0.5, rngs=nnx.Rngs(0))
    plain = hiera.create("hiera_tiny_test", rngs=nnx.Rngs(0))
    nnx.update(plain, nnx.state(model, nnx.Param))
    run = nnx.jit(lambda m, y, det: m(y, deterministic=det), static_argnums=2)
    np.testing.assert_allclose(run(model, images, True), run(plain, images, True), atol=1e-6)
    a, b = run(model, images, False), run(model, images, False)
    assert not np.allclose(a, b)  # fresh randomness on every call


@pytest.mark.parametrize("size", [(225, 225), (240, 240)])
def test_bad_input_size_config(size):
    with pytest.raises(ValueError, match=r"HieraConfig\.input_size"):
        hiera.create("hiera_tiny_test", input_size=size, rngs=nnx.Rngs(0))


def test_bad_input_shape_and_names(tiny):
    with pytest.raises(ValueError, match=r"Hiera input: expected images \[B, 224, 224, 3\].*\(1, 225, 225, 3\)"):
        tiny(jnp.zeros((1, 225, 225, 3)))
    with pytest.raises(ValueError, match=r"Hiera input.*\(1, 3, 224, 224\)"):
        tiny(jnp.zeros((1, 3, 224, 224)))
    with pytest.raises(ValueError, match="hiera name"):
        hiera.create("hiera_gigantic", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"unknown HieraConfig field\(s\) \['depth'\]"):
        hiera.create("hiera_tiny_test", depth=3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"HieraConfig\.num_heads"):
        hiera.create("hiera_tiny_test", num_heads=3, rngs=nnx.Rngs(0))


def test_export_to_hf_hiera_gives_the_same_features(tmp_path, images):
    """Our weights under HF's names and config (what `python -m docjepa.export` writes) load
    into transformers' HieraModel, which then computes our encoder's features."""
    import json

    import torch
    from safetensors.numpy import save_file
    from transformers import HieraModel

    model = hiera.create("hiera_tiny_test", embed_dim=32, num_heads=2, stages=(1, 2, 2, 1), rngs=nnx.Rngs(3))
    meta = hiera.meta_state_dict(model)
    probe = hiera.create("hiera_tiny_test", embed_dim=32, num_heads=2, stages=(1, 2, 2, 1), rngs=nnx.Rngs(4))
    hiera.load_torch_state_dict(probe, meta)  # the inverse of the load: a round trip is exact
    for a, b in zip(jax.tree.leaves(nnx.state(model, nnx.Param)), jax.tree.leaves(nnx.state(probe, nnx.Param))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    save_file(hiera.meta_to_hf_names(meta, model.config.stages), str(tmp_path / "model.safetensors"),
              metadata={"format": "pt"})
    (tmp_path / "config.json").write_text(json.dumps(hiera.hf_config(model.config)))
    theirs = HieraModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        out = theirs(torch.tensor(np.asarray(images).transpose(0, 3, 1, 2)))
        ref = theirs.pooler.layernorm(out.last_hidden_state).numpy()
    tokens, stages = _forward(model, images)
    np.testing.assert_allclose(np.asarray(tokens), ref, atol=1e-4)
    np.testing.assert_allclose(model.norm(stages[-1].mean(axis=(1, 2))), out.pooler_output.numpy(), atol=1e-4)

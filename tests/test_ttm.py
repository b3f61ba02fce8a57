"""Token Turing Machine: scan-flat program size, step masking, causality, units, axis names."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from docjepa.models import ttm

DIM, MEM, READ, TOKENS = 16, 6, 3, 5


def _model(process: str = "transformer", **kw) -> ttm.TokenTuringMachine:
    return ttm.TokenTuringMachine(DIM, memory_size=MEM, num_read=READ, process=process, num_layers=2,
                                  num_heads=2, mlp_ratio=2.0, rngs=nnx.Rngs(0), **kw)


def _inputs(batch: int, steps: int, seed: int = 1) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), (batch, steps, TOKENS, DIM))


def _forward(model: ttm.TokenTuringMachine):
    graphdef, state = nnx.split(model)
    return jax.jit(lambda x, mask: nnx.merge(graphdef, state)(x, mask))


def test_program_size_flat_in_steps():
    model = _model()
    fwd = _forward(model)
    sizes = {}
    for steps in (8, 64):
        x, mask = jnp.zeros((2, steps, TOKENS, DIM)), jnp.ones((2, steps), bool)
        jaxpr = jax.make_jaxpr(lambda x, m: model(x, m))(x, mask)
        hlo = fwd.lower(x, mask).as_text()
        sizes[steps] = (len(jaxpr.jaxpr.eqns), len(hlo.splitlines()))
    # The step body is traced once: equation and HLO line counts are identical (an unrolled
    # Python loop would grow them 8x); only the shape literals in the text differ.
    assert sizes[8] == sizes[64], sizes


def test_trailing_padding_leaves_memory_and_zeroes_outputs():
    model = _model()
    fwd = _forward(model)
    x = _inputs(2, 6)
    full_out, full_mem = fwd(x[:, :4], jnp.ones((2, 4), bool))
    mask = jnp.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0]], bool)
    out, mem = fwd(x, mask)
    np.testing.assert_allclose(mem, full_mem, atol=1e-6)
    np.testing.assert_allclose(out[:, :4], full_out, atol=1e-6)
    assert not np.any(np.asarray(out[:, 4:]))


def test_fully_padded_example_keeps_initial_memory_exactly():
    model = _model()
    out, mem = _forward(model)(_inputs(2, 3), jnp.array([[0, 0, 0], [1, 1, 1]], bool))
    np.testing.assert_array_equal(mem[0], model.memory_init[...])
    assert not np.any(np.asarray(out[0]))
    assert not np.allclose(mem[1], model.memory_init[...])


def test_interior_masked_step_passes_memory_through():
    model = _model()
    fwd = _forward(model)
    x = _inputs(1, 4)
    masked_out, masked_mem = fwd(x, jnp.array([[1, 0, 1, 1]], bool))
    kept = jnp.array([0, 2, 3])
    removed_out, removed_mem = fwd(x[:, kept], jnp.ones((1, 3), bool))
    np.testing.assert_allclose(masked_mem, removed_mem, atol=1e-6)
    np.testing.assert_allclose(masked_out[:, kept], removed_out, atol=1e-6)
    assert not np.any(np.asarray(masked_out[:, 1]))


def test_causality_outputs_and_gradients():
    model = _model()
    fwd = _forward(model)
    x, mask, k = _inputs(2, 6), jnp.ones((2, 6), bool), 2
    out, _ = fwd(x, mask)
    noise = jax.random.normal(jax.random.key(9), x.shape) * (jnp.arange(6) > k)[None, :, None, None]
    out_perturbed, _ = fwd(x + noise, mask)
    np.testing.assert_array_equal(out[:, : k + 1], out_perturbed[:, : k + 1])
    assert not np.allclose(out[:, k + 1:], out_perturbed[:, k + 1:])

    grad = jax.grad(lambda x: jnp.sum(fwd(x, mask)[0][:, k] ** 2))(x)
    assert not np.any(np.asarray(grad[:, k + 1:]))
    assert np.abs(np.asarray(grad[:, : k + 1])).max() > 0


@pytest.mark.parametrize("process", sorted(ttm.PROCESS_UNITS))
def test_each_unit_runs_and_trains_memory_init(process):
    model = _model(process)
    x, mask = _inputs(2, 3), jnp.array([[1, 1, 0], [1, 1, 1]], bool)

    def loss(model):
        out, mem = model(x, mask)
        return jnp.mean(out ** 2) + jnp.mean(mem ** 2)

    value, grads = nnx.value_and_grad(loss)(model)
    assert np.isfinite(float(value))
    assert np.abs(np.asarray(grads.memory_init[...])).max() > 0
    assert np.abs(np.asarray(grads.read.mlp.fc1.kernel[...])).max() > 0
    assert np.abs(np.asarray(grads.blocks[0].norm1.scale[...] if process != "mlp"
                             else grads.blocks[0].norm.scale[...])).max() > 0


def test_bfloat16_compute_keeps_fp32_params_and_memory():
    model = _model(dtype=jnp.bfloat16)
    out, mem = model(_inputs(1, 2), jnp.ones((1, 2), bool))
    assert out.dtype == jnp.bfloat16
    assert mem.dtype == model.memory_init[...].dtype == jnp.float32  # the carry does not round to bf16
    out2, mem2 = model(_inputs(1, 2, seed=2), jnp.ones((1, 2), bool), mem, jnp.zeros((1,), bool))
    assert out2.dtype == jnp.bfloat16 and mem2.dtype == jnp.float32


def test_carried_memory_continues_the_document():
    """Reading a document in two chunks with the memory carried between them is reading it in
    one: outputs of the second chunk and the final memory equal those of one 8-step scan."""
    model = _model()
    graphdef, state = nnx.split(model)
    fwd = jax.jit(lambda x, m, mem, reset: nnx.merge(graphdef, state)(x, m, mem, reset))
    x = _inputs(3, 8)
    whole_out, whole_mem = _forward(model)(x, jnp.ones((3, 8), bool))
    out1, mem1 = _forward(model)(x[:, :5], jnp.ones((3, 5), bool))
    out2, mem2 = fwd(x[:, 5:], jnp.ones((3, 3), bool), mem1, jnp.zeros((3,), bool))
    np.testing.assert_allclose(out1, whole_out[:, :5], atol=1e-6)
    np.testing.assert_allclose(out2, whole_out[:, 5:], atol=1e-6)
    np.testing.assert_allclose(mem2, whole_mem, atol=1e-6)
    # A row flagged `reset` begins a new document: memory_init, whatever was carried in.
    fresh_out, fresh_mem = _forward(model)(x[:, 5:], jnp.ones((3, 3), bool))
    out3, mem3 = fwd(x[:, 5:], jnp.ones((3, 3), bool), mem1, jnp.array([True, False, True]))
    for row, reset in enumerate((True, False, True)):
        want_out, want_mem = (fresh_out, fresh_mem) if reset else (out2, mem2)
        np.testing.assert_array_equal(out3[row], want_out[row])
        np.testing.assert_array_equal(mem3[row], want_mem[row])
    # The carried memory must be the rows' own: a wrong shape is refused.
    with pytest.raises(ValueError, match="ttm memory"):
        model(x[:, 5:], jnp.ones((3, 3), bool), mem1[:2], jnp.zeros((2,), bool))


def test_parameters_carry_logical_axis_names():
    model = _model()
    params = nnx.state(model, nnx.Param)
    axes = {
        jax.tree_util.keystr(path): var.get_metadata().get("out_sharding")
        for path, var in jax.tree_util.tree_leaves_with_path(params, is_leaf=lambda v: isinstance(v, nnx.Variable))
    }
    assert all(a is not None and len(a) >= 1 for a in axes.values()), axes
    assert axes["['memory_init']"] == ("memory", "embed")
    assert axes["['read']['mlp']['fc2']['kernel']"] == ("mlp", "tokens")
    assert axes["['blocks'][0]['attn']['q']['kernel']"] == ("embed", "heads")
    assert axes["['blocks'][0]['attn']['out']['kernel']"] == ("heads", "embed")


def test_bad_config_and_inputs_fail_clearly():
    with pytest.raises(ValueError, match="model.ttm.process"):
        _model("lstm")
    with pytest.raises(ValueError, match="step_mask"):
        _model("mlp")(_inputs(1, 3), jnp.ones((1, 4), bool))

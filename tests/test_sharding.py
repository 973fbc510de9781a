"""A (fsdp=4, tensor=2) mesh on 8 host devices: the same logits, and shardings exactly as the rules say."""

import jax
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec as P

from azr_jax.formats import load_hf_checkpoint
from azr_jax.model import LOGICAL_AXIS_RULES, init_model, logical_to_spec, make_mesh, preset

from test_model_parity import _batch, our_logits


def test_eight_devices():
    assert len(jax.devices()) == 8


def test_sharded_logits_equal_single_device(tiny_checkpoints):
    path = tiny_checkpoints["qwen2-untied"]
    single = load_hf_checkpoint(path, make_mesh((1, 1, 1), jax.devices()[:1]), compute_dtype="float32")
    mesh = make_mesh({"data": 1, "fsdp": 4, "tensor": 2})
    sharded = load_hf_checkpoint(path, mesh, compute_dtype="float32")
    tokens, valid = _batch(single.cfg.vocab_size, seed=1)
    tokens, valid = np.concatenate([tokens] * 4)[:8], np.concatenate([valid] * 4)[:8]
    with jax.set_mesh(mesh):
        got = our_logits(sharded, tokens, valid)
    np.testing.assert_allclose(got, our_logits(single, tokens, valid), atol=1e-5)


def test_every_parameter_is_sharded_as_the_rules_table_says(tiny_checkpoints):
    mesh = make_mesh({"data": 1, "fsdp": 4, "tensor": 2})
    model = load_hf_checkpoint(tiny_checkpoints["qwen2-untied"], mesh)
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        expected = []
        for axis, size in zip(var.axes, var.get_value().shape):
            rule = [a for a in LOGICAL_AXIS_RULES[axis] if mesh.shape[a] > 1]
            expected.append(rule[0] if rule and size % mesh.shape[rule[0]] == 0 else None)
        assert var.get_value().sharding.spec == P(*expected), path
        assert var.get_value().sharding.spec == logical_to_spec(var.axes, mesh, var.get_value().shape)
    # Spot checks, written out: q is [layers, embed, heads, head_dim].
    assert model.q[...].sharding.spec == P(None, "fsdp", "tensor", None)
    assert model.embed[...].sharding.spec == P("tensor", "fsdp")
    assert model.down[...].sharding.spec == P(None, "tensor", "fsdp")
    shard_shapes = {s.data.shape for s in model.q[...].addressable_shards}
    assert shard_shapes == {(2, 16, 2, 16)}  # each device holds 1/8 of q, not a replicated copy


def test_indivisible_axes_are_replicated_and_minus_one_takes_the_rest():
    mesh = make_mesh({"data": -1, "fsdp": 2, "tensor": 2})
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    model = init_model(preset("tiny-llama", num_kv_heads=1, num_heads=3, head_dim=16, hidden_size=48), mesh)
    assert model.k[...].sharding.spec == P(None, "fsdp", None, None)  # 1 kv head cannot split over tensor=2
    assert model.q[...].sharding.spec == P(None, "fsdp", None, None)  # nor can 3 heads

"""A (fsdp=4, tensor=2) mesh on 8 host devices: the same logits, and each parameter's sharding as written out here."""

import jax
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec as P

from azr_jax.formats import load_hf_checkpoint
from azr_jax.model import init_model, make_mesh, preset

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


# The tiny Qwen2 (vocab 256, embed 64, 4 heads and 2 kv heads of 16, mlp 128, 2 layers) on fsdp=4 x tensor=2,
# written out rather than derived from LOGICAL_AXIS_RULES, so a wrong rule or a wrong axis name shows.
EXPECTED_SPECS = {
    "embed": P("tensor", "fsdp"),  # [vocab, embed]
    "attn_norm": P(None, None),  # [layers, norm]
    "q": P(None, "fsdp", "tensor", None),  # [layers, embed, heads, head_dim]
    "k": P(None, "fsdp", "tensor", None),  # [layers, embed, kv_heads, head_dim]: 2 kv heads split over tensor=2
    "v": P(None, "fsdp", "tensor", None),
    "q_bias": P(None, "tensor", None),  # [layers, heads, head_dim]
    "k_bias": P(None, "tensor", None),
    "v_bias": P(None, "tensor", None),
    "o": P(None, "tensor", None, "fsdp"),  # [layers, heads, head_dim, embed]
    "mlp_norm": P(None, None),
    "gate": P(None, "fsdp", "tensor"),  # [layers, embed, mlp]
    "up": P(None, "fsdp", "tensor"),
    "down": P(None, "tensor", "fsdp"),  # [layers, mlp, embed]
    "final_norm": P(None),  # [norm]
    "lm_head": P("fsdp", "tensor"),  # [embed, vocab]: untied
}


def test_every_parameter_is_sharded_as_written_out(tiny_checkpoints):
    mesh = make_mesh({"data": 1, "fsdp": 4, "tensor": 2})
    model = load_hf_checkpoint(tiny_checkpoints["qwen2-untied"], mesh)
    params = nnx.to_flat_state(nnx.state(model, nnx.Param))
    specs = {".".join(map(str, path)): var.get_value().sharding.spec for path, var in params}
    assert specs == EXPECTED_SPECS
    shard_shapes = {s.data.shape for s in model.q[...].addressable_shards}
    assert shard_shapes == {(2, 16, 2, 16)}  # each device holds 1/8 of q, not a replicated copy


def test_indivisible_axes_are_replicated_and_minus_one_takes_the_rest():
    mesh = make_mesh({"data": -1, "fsdp": 2, "tensor": 2})
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    model = init_model(preset("tiny-llama", num_kv_heads=1, num_heads=3, head_dim=16, hidden_size=48), mesh)
    assert model.k[...].sharding.spec == P(None, "fsdp", None, None)  # 1 kv head cannot split over tensor=2
    assert model.q[...].sharding.spec == P(None, "fsdp", None, None)  # nor can 3 heads

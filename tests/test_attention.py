"""Blockwise (flash) attention against the plain attention (`xla_attention`): outputs and gradients, GQA, left
padding, ragged blocks, a sharded mesh, and a structural check that no [T, T] array is ever built; the dispatch
and the plain attention itself against a float64 numpy reference."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from azr_jax.model import make_mesh
from azr_jax.model.attention import (
    attend,
    blockwise_attention,
    cudnn_attention,
    resolve_attention,
    splash_attention,
    xla_attention,
)


def _inputs(b, t, h, k, d, pads, seed=0, dtype=jnp.float32):
    r = np.random.default_rng(seed)
    q = jnp.asarray(r.normal(size=(b, t, h, d)), dtype)
    kk = jnp.asarray(r.normal(size=(b, t, k, d)), dtype)
    v = jnp.asarray(r.normal(size=(b, t, k, d)), dtype)
    valid = jnp.asarray(np.arange(t)[None, :] >= np.asarray(pads)[:, None])
    cot = jnp.asarray(r.normal(size=(b, t, h, d)), jnp.float32) * valid[:, :, None, None]
    return q, kk, v, valid, cot


def _loss(fn, valid, cot):
    """Output weighted by a random cotangent that is zero on padding queries (whose outputs are never read)."""
    return lambda q, k, v: jnp.sum(fn(q, k, v, valid).astype(jnp.float32) * cot)


def _rel(a, b, valid=None):
    """Max abs difference over max abs value, on real (valid) query rows when valid is given."""
    m = True if valid is None else np.asarray(valid)[:, :, None, None]
    a, b = np.where(m, np.asarray(a, np.float32), 0), np.where(m, np.asarray(b, np.float32), 0)
    return np.abs(a - b).max() / max(np.abs(a).max(), 1e-30)


def _value_and_grads(fn, q, k, v, valid, cot):
    """fn's output and the gradients of the weighted loss w.r.t. q, k, v, in one jitted call."""

    @jax.jit
    def run(q, k, v, valid, cot):  # the gradients of sum(fn(q, k, v) * cot)
        out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, valid), q, k, v)
        return out, vjp(cot.astype(out.dtype))

    return run(q, k, v, valid, cot)


def _check_parity(fn, b, t, h, k, d, pads, tol=1e-5, seed=0, dtype=jnp.float32):
    q, kk, v, valid, cot = _inputs(b, t, h, k, d, pads, seed, dtype)
    want, g_want = _value_and_grads(xla_attention, q, kk, v, valid, cot)
    got, g_got = _value_and_grads(fn, q, kk, v, valid, cot)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert np.isfinite(np.asarray(got)).all()
    assert _rel(want, got, valid) < tol
    for name, a, c in zip("qkv", g_want, g_got):
        assert c.dtype == a.dtype, name
        assert np.isfinite(np.asarray(c)).all(), name
        assert _rel(a, c) < tol, name  # all rows: both give zero gradient to padding queries and keys


@pytest.mark.parametrize(
    "t,h,k,bq,bk,pads",
    [
        (40, 4, 2, 16, 16, [0, 5, 23]),  # T not a multiple of the block
        (64, 4, 2, 16, 16, [0, 16, 33]),  # T a multiple of the block, padding on block edges
        (40, 6, 1, 16, 8, [3, 0, 39]),  # MQA, unequal query and key blocks, a row with a single real token
        (64, 6, 1, 8, 32, [0, 7, 50]),  # key blocks larger than query blocks
        (24, 4, 2, 512, 512, [0, 4, 11]),  # T smaller than the (default) blocks
    ],
)
def test_blockwise_matches_plain_attention(t, h, k, bq, bk, pads):
    fn = lambda q, kk, v, valid: blockwise_attention(q, kk, v, valid, block_q=bq, block_k=bk)  # noqa: E731
    _check_parity(fn, len(pads), t, h, k, 16, pads)


def test_padding_queries_and_padding_rows_are_finite():
    """Padding queries before a row's first real token (no visible key), and a row of padding only."""
    q, k, v, valid, _ = _inputs(3, 40, 4, 2, 16, [0, 25, 40])
    fn = lambda q, k, v, valid: blockwise_attention(q, k, v, valid, block_q=16, block_k=16)  # noqa: E731
    cot = jnp.ones(q.shape, jnp.float32)  # a cotangent on the padding queries too
    out, grads = _value_and_grads(fn, q, k, v, valid, cot)
    assert np.isfinite(np.asarray(out)).all()
    for g in grads:
        assert np.isfinite(np.asarray(g)).all()


def test_bfloat16_close_to_plain_attention():
    fn = lambda q, k, v, valid: blockwise_attention(q, k, v, valid, block_q=16, block_k=16)  # noqa: E731
    _check_parity(fn, 2, 48, 4, 2, 32, [0, 9], tol=3e-2, dtype=jnp.bfloat16)


@pytest.mark.parametrize("h,k", [(4, 2), (6, 1)])
def test_sharded_mesh_gives_the_same_result(h, k):
    """jit under a (data=2, fsdp=2, tensor=2) mesh: batch over data x fsdp, heads over tensor."""
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    q, kk, v, valid, cot = _inputs(4, 40, h, k, 16, [0, 3, 17, 30])
    fn = lambda q, k, v, valid: blockwise_attention(q, k, v, valid, block_q=16, block_k=16)  # noqa: E731

    def run(q, kk, v, valid, cot):
        return _value_and_grads(fn, q, kk, v, valid, cot)

    want = run(q, kk, v, valid, cot)
    batch = ("data", "fsdp")
    heads = NamedSharding(mesh, P(batch, None, "tensor", None))
    kv = NamedSharding(mesh, P(batch, None, "tensor" if k % 2 == 0 else None, None))
    rows = NamedSharding(mesh, P(batch, None))
    args = [jax.device_put(a, s) for a, s in zip((q, kk, v, valid, cot), (heads, kv, kv, rows, heads))]
    with jax.set_mesh(mesh):
        got = run(*args)
    assert got[0].sharding.spec[0] == batch
    for a, c in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
        np.testing.assert_allclose(np.asarray(c), np.asarray(a), rtol=1e-5, atol=1e-5)


_SHAPE = re.compile(r"\[([0-9, ]*)\]")


def _square_shapes(text: str, t: int) -> set[str]:
    """Array shapes in a jaxpr or HLO dump with two dimensions of size t."""
    return {m for m in _SHAPE.findall(text) if [s.strip() for s in m.split(",")].count(str(t)) >= 2}


def test_no_t_by_t_array_in_forward_and_backward():
    t = 1024
    q, k, v, valid, cot = _inputs(1, t, 2, 1, 16, [100])

    def grad_of(fn):
        return jax.grad(_loss(fn, valid, cot), argnums=(0, 1, 2))

    blockwise = grad_of(lambda q, k, v, valid: blockwise_attention(q, k, v, valid, block_q=128, block_k=128))
    assert _square_shapes(str(jax.make_jaxpr(grad_of(xla_attention))(q, k, v)), t)  # the check does see them
    assert not _square_shapes(str(jax.make_jaxpr(blockwise)(q, k, v)), t)
    assert not _square_shapes(jax.jit(blockwise).lower(q, k, v).compile().as_text(), t)


def _numpy_attention(q, k, v, valid):
    """Causal GQA softmax attention over the valid keys, written out in float64 numpy: a reference that shares
    no code with the implementations. Queries with no visible key get 0 (callers compare real rows only)."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    b, t, h, d = q.shape
    k, v = (np.repeat(x, h // x.shape[2], axis=2) for x in (k, v))  # query head i reads kv head i // G
    scores = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(d)
    visible = np.tril(np.ones((t, t), bool))[None, None] & np.asarray(valid)[:, None, None, :]
    scores = np.where(visible, scores, -np.inf)
    top = scores.max(-1, keepdims=True)
    p = np.exp(scores - np.where(np.isfinite(top), top, 0.0))
    total = p.sum(-1, keepdims=True)
    return np.einsum("bhts,bshd->bthd", p / np.where(total > 0, total, 1.0), v)


def test_dispatch_matches_a_numpy_reference():
    assert resolve_attention("auto", "tpu") == "splash"
    assert resolve_attention("auto", "gpu") == "cudnn"
    assert resolve_attention("auto", "cpu") == "blockwise"
    assert resolve_attention("xla", "tpu") == "xla"
    with pytest.raises(ValueError):
        resolve_attention("flash", "cpu")
    q, k, v, valid, _ = _inputs(2, 24, 4, 2, 16, [0, 7])
    want = _numpy_attention(q, k, v, valid)
    impls = ("xla", "blockwise", "auto")  # cudnn and splash: their own tests below
    outs = jax.jit(lambda *a: [attend(*a, impl) for impl in impls])(q, k, v, valid)
    for impl, out in zip(impls, outs):
        assert _rel(want, out, valid) < 1e-5, f"{impl} ({resolve_attention(impl)})"


def test_cudnn_falls_back_to_blockwise_where_its_kernel_cannot_run():
    """Off GPU, and on GPU for float32 (the kernel takes bfloat16/float16 only), cudnn_attention is blockwise."""
    q, k, v, valid, _ = _inputs(2, 24, 4, 2, 16, [0, 7])
    np.testing.assert_array_equal(
        np.asarray(cudnn_attention(q, k, v, valid)), np.asarray(blockwise_attention(q, k, v, valid))
    )


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="the cuDNN kernel runs on GPU only (elsewhere: blockwise)")
def test_cudnn_kernel_matches_plain_attention():
    _check_parity(cudnn_attention, 2, 48, 4, 2, 32, [0, 9], tol=3e-2, dtype=jnp.bfloat16)


def test_splash_in_pallas_interpreter():
    """The splash wrapper's segment ids, scaling, GQA and layouts, run by the Pallas TPU interpreter on CPU."""
    fn = lambda q, k, v, valid: splash_attention(q, k, v, valid, interpret=True)  # noqa: E731
    _check_parity(fn, 2, 128, 4, 2, 16, [0, 37])


@pytest.mark.slow
def test_model_with_blockwise_attention_equals_plain_attention_with_and_without_a_cache():
    """Through the whole model: training logits and parameter gradients with `attention="blockwise"` equal the
    plain attention's; prefill into a cache (new tokens only, blockwise) gives the logits and the cache of the
    plain path that attends over the empty cache, and decoding from either cache agrees."""
    from flax import nnx

    from azr_jax.model import KVCache, init_model, positions_from_mask, preset

    mesh = make_mesh((1, 1, 1), jax.devices()[:1])
    plain = init_model(preset("tiny-qwen2", compute_dtype="float32", attention="xla"), mesh, seed=3)
    graphdef, state = nnx.split(plain)
    flash = nnx.merge(
        nnx.split(init_model(preset("tiny-qwen2", compute_dtype="float32", attention="blockwise"), mesh))[0], state
    )
    r = np.random.default_rng(0)
    tokens = jnp.asarray(r.integers(1, 256, (3, 40)), jnp.int32)
    valid = jnp.asarray(np.arange(40)[None] >= np.array([0, 7, 33])[:, None])
    positions = positions_from_mask(valid)
    real = np.asarray(valid)[:, :, None]

    def loss(model):
        logits, _ = model(tokens, positions, valid)
        return jnp.sum(jax.nn.log_softmax(logits)[..., 5] * valid), logits

    (l_plain, logits_plain), g_plain = nnx.value_and_grad(loss, has_aux=True)(plain)
    (l_flash, logits_flash), g_flash = nnx.value_and_grad(loss, has_aux=True)(flash)
    np.testing.assert_allclose(np.asarray(logits_flash) * real, np.asarray(logits_plain) * real, atol=1e-4)
    np.testing.assert_allclose(float(l_flash), float(l_plain), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g_flash), jax.tree.leaves(g_plain)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4 * max(1.0, float(jnp.abs(b).max())))

    cache = KVCache.create(plain.cfg, 3, 48, jnp.float32)
    h_old, c_old = plain.hidden(tokens, positions, valid, cache)  # attends over the empty cache too
    h_new, c_new = flash.hidden(tokens, positions, valid, cache, prefill=True)
    np.testing.assert_allclose(np.asarray(h_new) * real, np.asarray(h_old) * real, atol=1e-4)
    slots = np.asarray(c_old.valid)[None, :, None, :, None]  # padding slots differ (never read: masked)
    for x, y in ((c_new.k, c_old.k), (c_new.v, c_old.v)):
        np.testing.assert_allclose(np.asarray(x) * slots, np.asarray(y) * slots, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(c_new.valid), np.asarray(c_old.valid))
    assert int(c_new.index) == int(c_old.index) == 40
    step = jnp.asarray([[7], [8], [9]], jnp.int32)
    nxt = positions[:, -1:] + 1
    a, _ = flash(step, nxt, jnp.ones((3, 1), bool), c_new)
    b, _ = plain(step, nxt, jnp.ones((3, 1), bool), c_old)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)

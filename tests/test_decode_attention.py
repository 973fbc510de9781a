"""Decode attention over the filled part of the cache (`ragged_decode_attention`) against the plain attention
(`xla_attention`) over the whole cache: T=1 and T=3, GQA and MQA, per-row valid prefixes, left padding, ragged
blocks, bfloat16, and checks that cache slots at or beyond `filled` are never read and that the trip count of its
loop follows `filled`."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from azr_jax.model.attention import ragged_decode_attention, xla_attention


def _inputs(t, h, kv, s, starts, ends, new_valid=None, d=16, seed=0, dtype=jnp.float32):
    """A batch of len(starts) rows; row b's cache holds real tokens in slots [starts[b], ends[b]) (left padding
    before, unwritten slots after; both filled with random values, masked invalid). new_valid: [B, T] bool."""
    b = len(starts)
    r = np.random.default_rng(seed)
    arr = lambda *shape: jnp.asarray(r.normal(size=shape), dtype)  # noqa: E731
    slots = np.arange(s)[None]
    cache_valid = jnp.asarray((slots >= np.asarray(starts)[:, None]) & (slots < np.asarray(ends)[:, None]))
    valid = jnp.ones((b, t), bool) if new_valid is None else jnp.asarray(new_valid)
    return arr(b, t, h, d), arr(b, t, kv, d), arr(b, t, kv, d), valid, arr(b, kv, s, d), arr(b, kv, s, d), cache_valid


def _ragged(block_size, per_row=None):
    return jax.jit(functools.partial(ragged_decode_attention, block_size=block_size, per_row=per_row))


def _reference(q, k, v, valid, ck, cv, cvalid):
    return jax.jit(xla_attention)(q, k, v, valid, ck, cv, cvalid)


def _seen(valid, cache_valid):
    """[B, T, 1, 1]: query rows with at least one visible key (the plain version averages everything on others)."""
    t = valid.shape[1]
    own = np.asarray(jnp.tril(jnp.ones((t, t), bool))[None] & valid[:, None, :]).any(-1)
    return (own | np.asarray(cache_valid).any(-1)[:, None])[:, :, None, None]


CASES = [
    # t, h, kv, s, block, starts, ends (filled = max(ends))
    (1, 4, 2, 64, 16, [0, 0, 0], [10, 37, 50]),  # per-row prefixes; filled 50 not a multiple of the block
    (3, 4, 2, 64, 16, [0, 5, 20], [30, 41, 44]),  # T=3; left-padded rows
    (1, 6, 1, 64, 16, [3, 0, 17], [64, 64, 64]),  # MQA; filled == S
    (3, 6, 1, 50, 16, [0, 9, 2], [50, 33, 47]),  # S not a multiple of the block, filled == S: clamped last block
    (1, 4, 2, 50, 16, [0, 9, 2], [40, 33, 47]),  # S not a multiple of the block, last block inside [filled, S)
    (3, 4, 2, 40, 256, [0, 12, 1], [29, 40, 7]),  # block larger than S
    (1, 6, 1, 48, 16, [0, 0, 0], [16, 32, 48]),  # filled == S, a multiple of the block, rows ending on block edges
    (1, 4, 2, 64, 8, [0, 60, 0], [5, 62, 8]),  # many blocks, the last ones skipped
]


@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("t,h,kv,s,block,starts,ends", CASES)
def test_matches_plain_attention(t, h, kv, s, block, starts, ends, per_row):
    """Both loop orders, with one `filled` for the batch (the largest end) and with each row's own end."""
    q, k, v, valid, ck, cv, cvalid = _inputs(t, h, kv, s, starts, ends)
    want = _reference(q, k, v, valid, ck, cv, cvalid)
    for filled in (jnp.int32(max(ends)), jnp.asarray(ends, jnp.int32)):
        got = _ragged(block, per_row)(q, k, v, valid, ck, cv, cvalid, filled)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=0)


def test_stacked_cache_read_at_a_layer():
    """The [layers, B, K, S, D] cache read at `layer` in place equals that layer's [B, K, S, D] cache."""
    q, k, v, valid, ck, cv, cvalid = _inputs(1, 4, 2, 64, [0, 3, 0], [10, 37, 50])
    stack = lambda c: jnp.stack([c * 0 + jnp.nan, c, c * 2])  # noqa: E731 - other layers must not leak in
    for per_row in (False, True):
        fn = jax.jit(functools.partial(ragged_decode_attention, block_size=16, per_row=per_row))
        want = fn(q, k, v, valid, ck, cv, cvalid, jnp.int32(50))
        got = jax.jit(functools.partial(ragged_decode_attention, block_size=16, per_row=per_row, layer=1))(
            q, k, v, valid, stack(ck), stack(cv), cvalid, jnp.asarray([10, 37, 50], jnp.int32)
        )
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6, rtol=0)


def test_padded_new_tokens_and_empty_rows():
    """Padding among the new tokens (valid False), an empty-cache row, and a query with no visible key at all:
    valid queries agree with the plain version, every output is finite."""
    new_valid = [[True, True, True], [False, True, True], [False, False, True], [False, False, False]]
    q, k, v, valid, ck, cv, cvalid = _inputs(3, 4, 2, 40, [0, 3, 0, 0], [20, 30, 0, 0], new_valid)
    got = _ragged(16)(q, k, v, valid, ck, cv, cvalid, jnp.int32(30))
    want = _reference(q, k, v, valid, ck, cv, cvalid)
    assert np.isfinite(np.asarray(got)).all()
    seen = _seen(valid, cvalid)
    assert not seen.all()  # the last row's first query sees nothing
    np.testing.assert_allclose(np.asarray(got) * seen, np.asarray(want) * seen, atol=1e-5, rtol=0)
    # filled == 0: the loop does not run, only the new tokens attend (the empty-cache row above, batch-wide)
    got0 = _ragged(16)(q, k, v, valid, ck, cv, jnp.zeros_like(cvalid), jnp.int32(0))
    want0 = _reference(q, k, v, valid, ck, cv, jnp.zeros_like(cvalid))
    seen0 = _seen(valid, jnp.zeros_like(cvalid))
    np.testing.assert_allclose(np.asarray(got0) * seen0, np.asarray(want0) * seen0, atol=1e-5, rtol=0)


@pytest.mark.parametrize("t,s,block,filled", [(1, 64, 16, 37), (3, 50, 16, 45), (1, 50, 16, 33), (3, 40, 256, 17)])
def test_slots_beyond_filled_are_never_read(t, s, block, filled):
    """NaN keys and values, and a True validity, in every slot >= filled: the output is finite and equals the plain
    attention over the first `filled` slots only."""
    q, k, v, valid, ck, cv, cvalid = _inputs(t, 4, 2, s, [0, 3, 11], [filled - 5, filled, filled - 1])
    beyond = np.arange(s) >= filled
    poison = lambda c: jnp.where(beyond[None, None, :, None], jnp.nan, c)  # noqa: E731
    got = _ragged(block)(q, k, v, valid, poison(ck), poison(cv), cvalid | beyond[None], jnp.int32(filled))
    assert np.isfinite(np.asarray(got)).all()
    want = _reference(q, k, v, valid, ck[:, :, :filled], cv[:, :, :filled], cvalid[:, :filled])
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=0)


@pytest.mark.parametrize("per_row", [False, True])
def test_blocks_read_follow_filled(monkeypatch, per_row):
    """The compiled loops read exactly the blocks below `filled`: counted by a debug callback put, in this test
    only, into the reader of the validity block (a 2-D `dynamic_slice`, once per block read). Batch-wide, every
    row's blocks up to the longest; per row, each row's own."""
    q, k, v, valid, ck, cv, cvalid = _inputs(1, 4, 2, 100, [0, 0], [100, 100])
    reads = []
    real = jax.lax.dynamic_slice

    def counting(x, starts, sizes, **kw):
        if x.ndim == 2:
            jax.debug.callback(
                lambda r, st, n: reads.append((int(r), int(st), int(n))), *starts, sizes[0], ordered=True
            )
        return real(x, starts, sizes, **kw)

    monkeypatch.setattr(jax.lax, "dynamic_slice", counting)
    fn = jax.jit(functools.partial(ragged_decode_attention, block_size=16, per_row=per_row))  # traced once
    clamp = lambda j: min(16 * j, 100 - 16)  # noqa: E731 - the last start clamped to S - block
    for filled in ([0, 0], [1, 0], [16, 3], [17, 50], [99, 100], [100, 40]):
        reads.clear()
        jax.block_until_ready(fn(q, k, v, valid, ck, cv, cvalid, jnp.asarray(filled, jnp.int32)))
        jax.effects_barrier()
        if per_row:
            want = [(r, clamp(j), 1) for r, f in enumerate(filled) for j in range(-(-f // 16))]
        else:
            want = [(0, clamp(j), 2) for j in range(-(-max(filled) // 16))]
        assert reads == want, filled


def test_bfloat16_close_to_float32():
    args = _inputs(3, 6, 1, 50, [0, 9, 2], [50, 33, 47], dtype=jnp.bfloat16)
    got = _ragged(16)(*args, jnp.int32(50))
    assert got.dtype == jnp.bfloat16
    want = _reference(*[a.astype(jnp.float32) if a.dtype == jnp.bfloat16 else a for a in args])
    got, want = np.asarray(got, np.float32), np.asarray(want)
    assert np.abs(got - want).max() / np.abs(want).max() < 2e-2
    ref_bf16 = np.asarray(_reference(*args), np.float32)  # the plain version in bf16 is no closer
    assert np.abs(got - want).max() <= 2 * np.abs(ref_bf16 - want).max() + 1e-2


def test_filled_as_python_int_and_traced_under_jit():
    args = _inputs(1, 4, 2, 64, [0, 4], [20, 40])
    want = np.asarray(_reference(*args))
    np.testing.assert_allclose(np.asarray(ragged_decode_attention(*args, 40, block_size=16)), want, atol=1e-5)
    step = jax.jit(lambda *a: ragged_decode_attention(*a, block_size=32))
    np.testing.assert_allclose(np.asarray(step(*args, jnp.int32(40))), want, atol=1e-5)


def test_sharded_mesh_gives_the_same_result():
    """Under a (data=2, fsdp=2, tensor=2) mesh, the cache split over batch and kv heads as the sampler lays it out."""
    from jax.sharding import NamedSharding, PartitionSpec as P

    from azr_jax.model import make_mesh

    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    args = _inputs(3, 4, 2, 50, [0, 9, 2, 30], [50, 33, 47, 31])
    fn = _ragged(16, per_row=False)
    rows = _ragged(16, per_row=True)
    want = fn(*args, jnp.int32(50))
    batch = ("data", "fsdp")
    specs = [P(batch, None, "tensor", None)] * 3 + [P(batch, None)] + [P(batch, "tensor", None, None)] * 2
    specs += [P(batch, None)]
    args = [jax.device_put(a, NamedSharding(mesh, s)) for a, s in zip(args, specs)]
    with jax.set_mesh(mesh):
        got = fn(*args, jnp.int32(50))
        got_rows = rows(*args, jnp.asarray([50, 33, 47, 31], jnp.int32))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6, rtol=0)
    np.testing.assert_allclose(np.asarray(got_rows), np.asarray(want), atol=1e-6, rtol=0)

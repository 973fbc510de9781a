"""Causal self-attention of a left-padded batch: the plain XLA reference (`xla_attention`, with or without a KV
cache); without a cache, blockwise (flash) attention in pure JAX and wrappers around the cuDNN (GPU) and splash
(TPU Pallas) kernels; and decode attention over the filled part of a KV cache (`ragged_decode_attention`).

Without a cache, all take q: [B,T,H,D], k, v: [B,T,K,D] (grouped-query: H = K*G, query head h reads kv head h // G),
valid: [B,T] bool (False on padding tokens), and return [B,T,H,D] in v's dtype. Key j is visible to query i iff
j <= i and valid[b, j]: the semantics of `xla_attention` called without a cache. A query with no visible
key (a padding token before a row's first real token) gets a finite output whose value is unspecified; outputs
at padding queries are never read.

`attend(..., impl)` dispatches by name; `resolve_attention("auto", backend)` picks splash on TPU, cuDNN on GPU
and blockwise on CPU.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from azr_jax.model.sharding import LOGICAL_AXIS_RULES, logical_to_spec

_MASK_VALUE = float(np.finfo(np.float32).min)

IMPLEMENTATIONS = ("xla", "blockwise", "cudnn", "splash", "auto")
_AUTO = {"tpu": "splash", "gpu": "cudnn", "cuda": "cudnn", "cpu": "blockwise"}
DECODE_LOOPS = ("auto", "per_row", "batch")  # `ragged_decode_attention`'s loop order; see `resolve_decode_loop`


# ---------------------------------------------------------------------------------------------------------------
# Plain attention (the reference)
# ---------------------------------------------------------------------------------------------------------------


def xla_attention(q, k, v, valid, cache_k=None, cache_v=None, cache_valid=None):
    """Grouped-query attention of new tokens over the cache and over themselves (causally), in plain XLA ops:
    the reference the other implementations are checked against ("xla" in `attend`; it builds the [T, T]
    float32 score matrix, so only small models and tests use it for training).

    q: [B,T,H,D]; k, v: [B,T,K,D] the new tokens; valid: [B,T]. The cache (k, v: [B,K,S,D], valid
    [B,S]) holds earlier tokens only, so every valid cache slot is visible to every query. The two
    score blocks share one softmax, which avoids writing the new keys into the cache before attending.
    """
    b, t, h, d = q.shape
    n_kv = k.shape[2]
    q = q.reshape(b, t, n_kv, h // n_kv, d) / np.sqrt(d).astype(q.dtype)
    causal = jnp.tril(jnp.ones((t, t), bool))[None] & valid[:, None, :]  # [B,T,T]
    scores = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=jnp.float32)
    scores = jnp.where(causal[:, None, None], scores, _MASK_VALUE)
    if cache_k is not None:
        past = jnp.einsum("btkgd,bksd->bkgts", q, cache_k.astype(q.dtype), preferred_element_type=jnp.float32)
        past = jnp.where(cache_valid[:, None, None, None, :], past, _MASK_VALUE)
        scores = jnp.concatenate([past, scores], axis=-1)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    s = 0 if cache_k is None else cache_k.shape[2]
    out = jnp.einsum("bkgts,bskd->btkgd", probs[..., s:], v)
    if cache_k is not None:
        out = out + jnp.einsum("bkgts,bksd->btkgd", probs[..., :s], cache_v.astype(v.dtype))
    return out.reshape(b, t, h, d)


# ---------------------------------------------------------------------------------------------------------------
# Blockwise (flash) attention
# ---------------------------------------------------------------------------------------------------------------
#
# The core works on block-major arrays: q [nq, B, K, G, bq, D] (already scaled), k, v [nk, B, K, bk, D], and
# key validity [nk, B, bk]. Query block i only visits key blocks 0 .. last(i), the blocks that reach the causal
# diagonal; key block j only visits query blocks first(j) .. nq-1. Nothing larger than one block of scores,
# [B, K, G, bq, bk] float32, is ever built.


def _visible(i, j, bq, bk, kvalid_j):
    """[B, 1, 1, bq, bk]: query block i may see key block j (causal and key-valid)."""
    qpos = i * bq + jnp.arange(bq)
    kpos = j * bk + jnp.arange(bk)
    return (qpos[:, None] >= kpos[None, :])[None, None, None] & kvalid_j[:, None, None, None, :]


def _num_key_blocks(i, bq, bk, nk):
    """How many key blocks query block i reaches: those starting at or before its last query position."""
    return jnp.minimum(nk, ((i + 1) * bq - 1) // bk + 1)


def _index(blocks, n):
    """Block n (traced) of a block-major array."""
    return jax.lax.dynamic_index_in_dim(blocks, n, keepdims=False)


def _scores(q, k):
    return jnp.einsum("bkgqd,bkcd->bkgqc", q, k, preferred_element_type=jnp.float32)


def _flash_forward(qb, kb, vb, kvalid):
    nq, bq = qb.shape[0], qb.shape[4]
    nk, bk = kb.shape[0], kb.shape[3]
    stats_shape = qb.shape[1:5]  # [B, K, G, bq]

    def q_block(_, xs):
        i, q = xs

        def k_block(j, carry):
            m, l, acc = carry
            k, v = _index(kb, j), _index(vb, j)
            mask = _visible(i, j, bq, bk, _index(kvalid, j))
            s = jnp.where(mask, _scores(q, k), _MASK_VALUE)
            m_new = jnp.maximum(m, s.max(-1))
            p = jnp.where(mask, jnp.exp(s - m_new[..., None]), 0.0)
            alpha = jnp.exp(m - m_new)
            pv = jnp.einsum("bkgqc,bkcd->bkgqd", p.astype(v.dtype), v, preferred_element_type=jnp.float32)
            return m_new, alpha * l + p.sum(-1), alpha[..., None] * acc + pv

        init = (
            jnp.full(stats_shape, _MASK_VALUE, jnp.float32),
            jnp.zeros(stats_shape, jnp.float32),
            jnp.zeros(q.shape, jnp.float32),
        )
        m, l, acc = jax.lax.fori_loop(0, _num_key_blocks(i, bq, bk, nk), k_block, init)
        seen = l > 0  # False only on a query with no visible key: output 0, and no gradient flows from it
        out = (acc / jnp.where(seen, l, 1.0)[..., None]).astype(vb.dtype)
        lse = jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)), 0.0)
        return None, (out, lse)

    _, (out, lse) = jax.lax.scan(q_block, None, (jnp.arange(nq), qb))
    return out, lse


@jax.custom_vjp
def _flash(qb, kb, vb, kvalid):
    return _flash_forward(qb, kb, vb, kvalid)[0]


def _flash_fwd(qb, kb, vb, kvalid):
    out, lse = _flash_forward(qb, kb, vb, kvalid)
    return out, (qb, kb, vb, kvalid, out, lse)


def _flash_bwd(res, dout):
    """FlashAttention-2 backward: probabilities recomputed per block from the saved logsumexp."""
    qb, kb, vb, kvalid, out, lse = res
    nq, bq = qb.shape[0], qb.shape[4]
    nk, bk = kb.shape[0], kb.shape[3]
    delta = jnp.sum(dout.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)  # [nq, B, K, G, bq]

    def probs(i, j, q, k, lse_i, kvalid_j):
        mask = _visible(i, j, bq, bk, kvalid_j)
        return jnp.where(mask, jnp.exp(_scores(q, k) - lse_i[..., None]), 0.0)

    def grad_scores(p, do, v, delta_i):
        dp = jnp.einsum("bkgqd,bkcd->bkgqc", do, v, preferred_element_type=jnp.float32)
        return p * (dp - delta_i[..., None])

    def dq_block(_, xs):  # pass 1: dq, outer over query blocks
        i, q, do, lse_i, delta_i = xs

        def k_block(j, dq):
            k, v = _index(kb, j), _index(vb, j)
            ds = grad_scores(probs(i, j, q, k, lse_i, _index(kvalid, j)), do, v, delta_i)
            return dq + jnp.einsum("bkgqc,bkcd->bkgqd", ds.astype(k.dtype), k, preferred_element_type=jnp.float32)

        dq = jax.lax.fori_loop(0, _num_key_blocks(i, bq, bk, nk), k_block, jnp.zeros(q.shape, jnp.float32))
        return None, dq.astype(qb.dtype)

    def dkv_block(_, xs):  # pass 2: dk and dv, outer over key blocks
        j, k, v, kvalid_j = xs

        def q_block(i, carry):
            dk, dv = carry
            q, do, lse_i, delta_i = _index(qb, i), _index(dout, i), _index(lse, i), _index(delta, i)
            p = probs(i, j, q, k, lse_i, kvalid_j)
            dv = dv + jnp.einsum("bkgqc,bkgqd->bkgcd", p.astype(do.dtype), do, preferred_element_type=jnp.float32)
            ds = grad_scores(p, do, v, delta_i)
            dk = dk + jnp.einsum("bkgqc,bkgqd->bkgcd", ds.astype(q.dtype), q, preferred_element_type=jnp.float32)
            return dk, dv

        # Per query head of the group, summed after the loop: when the mesh splits a group's query heads (kv heads
        # replicated), the cross-device sum then runs once per key block rather than once per block pair.
        zeros = jnp.zeros((*qb.shape[1:4], *k.shape[-2:]), jnp.float32)  # [B, K, G, bk, D]
        dk, dv = jax.lax.fori_loop((j * bk) // bq, nq, q_block, (zeros, zeros))
        return None, (dk.sum(2).astype(kb.dtype), dv.sum(2).astype(vb.dtype))

    _, dq = jax.lax.scan(dq_block, None, (jnp.arange(nq), qb, dout, lse, delta))
    _, (dk, dv) = jax.lax.scan(dkv_block, None, (jnp.arange(nk), kb, vb, kvalid))
    return dq, dk, dv, None


_flash.defvjp(_flash_fwd, _flash_bwd)


def _to_blocks(x, block):
    """[B, T, ...] -> [T'/block, B, ..., block, D], zero-padded along T to a multiple of block."""
    b, t = x.shape[:2]
    n = -(-t // block)
    x = jnp.pad(x, [(0, 0), (0, n * block - t)] + [(0, 0)] * (x.ndim - 2))
    x = x.reshape(b, n, block, *x.shape[2:])
    if x.ndim == 3:  # validity [B, n, block]
        return x.transpose(1, 0, 2)
    return jnp.moveaxis(x, 2, -2).swapaxes(0, 1)  # [n, B, ..., block, D]


def blockwise_attention(q, k, v, valid, *, block_q: int = 512, block_k: int = 512):
    """Causal GQA attention over the valid keys in query x key blocks (flash attention), with a custom VJP.

    Same semantics and numerics as `xla_attention(q, k, v, valid)` (no cache): q is scaled by 1/sqrt(D)
    in its own dtype, scores and the softmax statistics are float32, probabilities are cast to v's dtype before
    the PV product. Memory is O(B*T*H*D) plus one [B, H, block_q, block_k] float32 score block; key blocks
    entirely above the causal diagonal are skipped. Block sizes are clipped to T; T need not divide them.
    A query with no visible key gets output 0 and passes no gradient back.
    """
    b, t, h, d = q.shape
    n_kv = k.shape[2]
    bq, bk = min(block_q, t), min(block_k, t)
    q = q / np.sqrt(d).astype(q.dtype)
    qb = _to_blocks(q.reshape(b, t, n_kv, h // n_kv, d), bq)  # [nq, B, K, G, bq, D]
    out = _flash(qb, _to_blocks(k, bk), _to_blocks(v, bk), _to_blocks(valid, bk))
    out = jnp.moveaxis(out.swapaxes(0, 1), -2, 2)  # [B, nq, bq, K, G, D]
    return out.reshape(b, -1, h, d)[:, :t]


# ---------------------------------------------------------------------------------------------------------------
# Backend kernels
# ---------------------------------------------------------------------------------------------------------------


def cudnn_attention(q, k, v, valid):
    """cuDNN flash attention through `jax.nn.dot_product_attention(implementation="cudnn")`.

    Left padding is a boolean mask [B, 1, T, T] "key valid or key == query", and-ed with the kernel's own causal
    mask (`key_value_seq_lengths` would mask the end of a row, not its start). The diagonal term only touches
    padding queries, so none has an empty row. cuDNN turns the mask into a dense bf16/f16 bias (and computes its
    gradient in the backward pass): O(B*T^2) memory, far below the float32 score matrix of "xla" but not O(T).
    GQA is native (H a multiple of K). Falls back to `blockwise_attention` off GPU, for dtypes other than
    bfloat16/float16, head_dim not a multiple of 8 or above 128, or odd T (cuDNN's bias kernels need even T).
    Under a mesh, q, k and v must be sharded alike (batch and/or heads only): a mesh that shards query heads but
    replicates kv heads (kv heads not divisible by the tensor axis) is refused by cuDNN's partitioner.
    """
    t, d = q.shape[1], q.shape[3]
    if jax.default_backend() != "gpu" or q.dtype not in (jnp.bfloat16, jnp.float16) or d % 8 or d > 128 or t % 2:
        return blockwise_attention(q, k, v, valid)
    mask = valid[:, None, None, :] | jnp.eye(t, dtype=bool)  # [B, 1, T, T]
    out = jax.nn.dot_product_attention(
        q, k.astype(q.dtype), v.astype(q.dtype), mask=mask, is_causal=True, implementation="cudnn"
    )
    return out.astype(v.dtype)


def _splash_block(t: int) -> int | None:
    return next((b for b in (512, 256, 128) if t % b == 0), None)


def splash_attention(q, k, v, valid, *, interpret: bool = False):
    """TPU Pallas splash attention (jax.experimental.pallas.ops.tpu.splash_attention), causal, per batch row.

    Left padding via segment ids: real tokens are segment 1, padding tokens segment 0, so a real query sees
    exactly the real keys at or before it and a padding query sees padding keys only (itself at least: no empty
    row; its output is unused). GQA is native in the MHA kernel (H a multiple of K). q is scaled by 1/sqrt(D)
    here (the kernel does not scale). Constraints: T a multiple of 128 (blocks of 512, 256 or 128, the largest
    dividing T); otherwise this falls back to `blockwise_attention`. It always builds the TPU kernel (so the
    planner can compile it for a TPU slice from a CPU host); `interpret` runs it in the Pallas interpreter
    (tests), and "auto" picks it only on TPU. Under a mesh (`jax.set_mesh`) the kernel runs in a shard_map over the batch axes
    (and over "tensor" for heads when both H and K divide it); a T-sharded layout is not supported.
    """
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    b, t, h, d = q.shape
    block = _splash_block(t)
    if block is None:
        return blockwise_attention(q, k, v, valid)
    sizes = splash.BlockSizes(
        block_q=block,
        block_kv=block,
        block_kv_compute=block,
        block_q_dkv=block,
        block_kv_dkv=block,
        block_kv_dkv_compute=block,
        block_q_dq=block,
        block_kv_dq=block,
    )

    def local(q, k, v, segments):  # [b, T, h, D] on one shard
        heads = q.shape[2]
        mask = splash.MultiHeadMask([splash.CausalMask((t, t)) for _ in range(heads)])
        kernel = splash.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)
        q = (q / np.sqrt(d).astype(q.dtype)).swapaxes(1, 2)
        k, v = k.astype(q.dtype).swapaxes(1, 2), v.astype(q.dtype).swapaxes(1, 2)
        out = jax.vmap(lambda q, k, v, s: kernel(q, k, v, splash.SegmentIds(q=s, kv=s)))(q, k, v, segments)
        return out.swapaxes(1, 2)

    segments = valid.astype(jnp.int32)
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        out = local(q, k, v, segments)
    else:
        qs = logical_to_spec(("batch", None, "heads", None), mesh, q.shape)
        ks = logical_to_spec(("batch", None, "kv_heads", None), mesh, k.shape)
        if qs[2] != ks[2]:  # query and kv heads must be split alike, or the GQA grouping breaks
            qs, ks = jax.P(qs[0], None, None, None), jax.P(ks[0], None, None, None)
        out = jax.shard_map(local, mesh=mesh, in_specs=(qs, ks, ks, jax.P(qs[0], None)), out_specs=qs, check_vma=False)(
            q, k, v, segments
        )
    return out.astype(v.dtype)


# ---------------------------------------------------------------------------------------------------------------
# Decode attention over the filled part of the KV cache
# ---------------------------------------------------------------------------------------------------------------


def _cache_block(cache, layer, row, start, size):
    """Slots start .. start+size of the cache [B, K, S, D] or of the stacked [layers, B, K, S, D] at `layer`:
    [B, K, size, D], or [K, size, D] of one `row`. Read in place: slicing a layer (or row) out first would copy
    the whole of it every decode step."""
    lead = () if layer is None else (layer,)
    b, k, _, d = cache.shape[len(lead) :]
    block = jax.lax.dynamic_slice(
        cache, (*lead, 0 if row is None else row, 0, start, 0), (*(1,) * len(lead), b if row is None else 1, k, size, d)
    )
    return block.reshape(block.shape[len(lead) + (row is not None) :])


def ragged_decode_attention(
    q, k, v, valid, cache_k, cache_v, cache_valid, filled, *, layer=None, per_row=None, block_size: int = 256
):
    """Attention of a few new tokens over the filled part of the cache and, causally, over themselves.

    Same inputs and result as `xla_attention(q, k, v, valid, cache_k, cache_v, cache_valid)`:
    q: [B,T,H,D] (T small: 1 when decoding), k, v: [B,T,K,D] the new tokens, valid: [B,T], cache_k, cache_v:
    [B,K,S,D] (or the stacked [layers,B,K,S,D] with `layer` the index to read), cache_valid: [B,S] (H a multiple
    of K). `filled`: int32, possibly traced, a scalar for every row or [B] one per row: the number of leading
    cache slots of the row that may hold valid keys (its write index). Slots at or beyond it contribute nothing,
    whatever their values or validity (NaN there is harmless), and are never read: a `fori_loop` with a traced
    trip count reads the cache one block of `block_size` slots at a time with `dynamic_slice` and folds it into a
    float32 online softmax (flash decoding), started from the new tokens' own causal scores. When S is not a
    multiple of block_size the last block's start is clamped to S - block_size and the slots it has already seen
    are masked; block_size is clipped to S.

    Two loop orders, the same result:
    - per_row=False: one loop over blocks of all rows at once, ceil(max(filled) / block_size) of them; the work
      is B x the longest row. Wide, few steps: for accelerators, where a loop over rows would serialise the batch.
    - per_row=True: a loop over rows, each over its own ceil(filled[b] / block_size) blocks; the work is the sum
      of the rows' lengths, so a continuous batch's short rows do not pay for its longest. Many small steps: the
      better order on CPU (2x faster for 8 rows of mixed length up to 1024 slots, `benchmarks/decode_attention.py`).
    - None (default): `resolve_decode_loop("auto")`: per-row on one CPU device, batch-wide elsewhere.

    Numerics as `xla_attention`: q is scaled by 1/sqrt(D) in its own dtype, the cache is cast to q's
    (keys) and v's (values) dtype, scores and softmax statistics are float32, probabilities are cast to v's dtype
    before the PV product (accumulated in float32); the result is in v's dtype. A query with no visible key
    (padding: the plain version averages over every masked key there) gets output 0. Decode only: the loop
    with a traced trip count has no reverse-mode derivative. On CPU, XLA computes bfloat16 in float32 and hoists
    the conversion of the whole cache out of the loop, so a bfloat16 cache costs O(S) there again (float32 does
    not).

    On TPU the Pallas kernels `jax.experimental.pallas.ops.tpu.ragged_paged_attention` (per-row lengths over a
    paged cache, mixed prefill/decode) and `...tpu.paged_attention` (decode, per-row lengths) would do this
    with per-row skipping at full width; both need a paged [pages, page_size, ...] cache layout and
    right-aligned rows (lengths, not a left-padding mask), so they are not wired here. On GPU,
    `jax.experimental.pallas.ops.gpu.decode_attention` (split-k flash decoding) is the analogue.
    """
    b, t, h, d = q.shape
    n_kv = k.shape[2]
    s = cache_k.shape[-2]
    bs = max(1, min(block_size, s))
    if per_row is None:
        per_row = resolve_decode_loop("auto") == "per_row"
    q = (q / np.sqrt(d).astype(q.dtype)).reshape(b, t, n_kv, h // n_kv, d).transpose(0, 2, 3, 1, 4)  # [B,K,G,T,D]
    filled = jnp.broadcast_to(jnp.clip(jnp.asarray(filled, jnp.int32), 0, s), (b,))

    def fold(carry, scores, mask, values):
        """One online-softmax step: scores [(B,)K,G,T,C] float32, mask broadcastable to it, values [(B,)K,C,D]."""
        m, l, acc = carry
        scores = jnp.where(mask, scores, _MASK_VALUE)
        m_new = jnp.maximum(m, scores.max(-1))
        p = jnp.where(mask, jnp.exp(scores - m_new[..., None]), 0.0)
        alpha = jnp.exp(m - m_new)
        pv = jnp.einsum("...gtc,...cd->...gtd", p.astype(values.dtype), values, preferred_element_type=jnp.float32)
        return m_new, alpha * l + p.sum(-1), alpha[..., None] * acc + pv

    def block(j, carry, q, filled, row=None):
        """Fold in cache block j of every row (row None) or of one row: q [(B,)K,G,T,D], filled [(B,)]."""
        begin = j * bs
        start = jnp.minimum(begin, s - bs)  # the last block of a ragged S: clamped, its seen slots masked below
        slots = start + jnp.arange(bs)
        keys = _cache_block(cache_k, layer, row, start, bs).astype(q.dtype)
        values = _cache_block(cache_v, layer, row, start, bs).astype(v.dtype)
        kvalid = jax.lax.dynamic_slice(cache_valid, (0 if row is None else row, start), (b if row is None else 1, bs))
        inside = (slots >= begin) & (slots < filled[..., None])  # new to this block, and within the filled part
        kvalid = (kvalid if row is None else kvalid[0]) & inside  # [(B,) bs]
        values = jnp.where(inside[..., None, :, None], values, 0)  # 0 * garbage beyond `filled` could be NaN
        scores = jnp.einsum("...gtd,...cd->...gtc", q, keys, preferred_element_type=jnp.float32)
        return fold(carry, scores, kvalid[..., None, None, None, :], values)

    # The new tokens over themselves, causally: key j visible to query i iff j <= i and valid[b, j].
    causal = (jnp.tril(jnp.ones((t, t), bool))[None] & valid[:, None, :])[:, None, None]  # [B,1,1,T,T]
    self_scores = jnp.einsum("bkgtd,bskd->bkgts", q, k.astype(q.dtype), preferred_element_type=jnp.float32)
    stats = q.shape[:4]  # [B, K, G, T]
    init = (jnp.full(stats, _MASK_VALUE, jnp.float32), jnp.zeros(stats, jnp.float32), jnp.zeros(q.shape, jnp.float32))
    carry = fold(init, self_scores, causal, v.swapaxes(1, 2))
    blocks = (filled + bs - 1) // bs

    if per_row:

        def row(r, acc):
            take = lambda x: jax.lax.dynamic_index_in_dim(x, r, keepdims=False)  # noqa: E731
            own = functools.partial(block, q=take(q), filled=take(filled), row=r)
            _, l, a = jax.lax.fori_loop(0, take(blocks), own, jax.tree.map(take, carry))
            return jax.lax.dynamic_update_index_in_dim(acc, a / jnp.where(l > 0, l, 1.0)[..., None], r, 0)

        out = jax.lax.fori_loop(0, b, row, jnp.zeros(q.shape, jnp.float32))
    else:
        _, l, acc = jax.lax.fori_loop(0, jnp.max(blocks), functools.partial(block, q=q, filled=filled), carry)
        out = acc / jnp.where(l > 0, l, 1.0)[..., None]  # [B,K,G,T,D]
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, h, d).astype(v.dtype)


# ---------------------------------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------------------------------


def resolve_attention(impl: str, backend: str | None = None) -> str:
    """The concrete implementation for a name: "auto" is splash on TPU, cudnn on GPU, blockwise elsewhere."""
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation {impl!r}: expected one of {IMPLEMENTATIONS}")
    if impl != "auto":
        return impl
    return _AUTO.get(backend or jax.default_backend(), "blockwise")


def _batch_split_of_current_mesh() -> int:
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return 1
    sizes = dict(zip(mesh.axis_names, mesh.axis_sizes))
    return math.prod(sizes.get(a, 1) for a in LOGICAL_AXIS_RULES["batch"])


def resolve_decode_loop(loop: str, backend: str | None = None, batch_split: int | None = None) -> str:
    """The loop order of decode attention for a name: "auto" is per-row only on a CPU whose rows are not split
    over devices, batch-wide otherwise.

    The per-row loop indexes the batch axis with a traced row. Where the mesh splits the rows (the KV cache's
    batch axis is sharded over data x fsdp), XLA can only serve that index by gathering every device's rows of
    the cache onto each device, a copy of the whole cache per layer read: that made a 14B plan's sampler
    temporaries 5x its KV cache. The backend is the compile target's: the planner, compiling for a TPU slice on a
    CPU host, passes "tpu" (`jax.default_backend()` there is the host's). `batch_split` defaults to the mesh
    set with `jax.set_mesh` at trace time."""
    if loop not in DECODE_LOOPS:
        raise ValueError(f"decode loop {loop!r}: expected one of {DECODE_LOOPS}")
    if loop != "auto":
        return loop
    split = _batch_split_of_current_mesh() if batch_split is None else batch_split
    return "per_row" if (backend or jax.default_backend()) == "cpu" and split == 1 else "batch"


def attend(q, k, v, valid, impl: str = "auto"):
    """Causal self-attention without a cache by the named implementation (see the module docstring)."""
    impl = resolve_attention(impl)
    fn = {
        "xla": xla_attention,
        "blockwise": blockwise_attention,
        "cudnn": cudnn_attention,
        "splash": splash_attention,
    }[impl]
    return fn(q, k, v, valid)


__all__ = [
    "DECODE_LOOPS",
    "IMPLEMENTATIONS",
    "attend",
    "blockwise_attention",
    "cudnn_attention",
    "ragged_decode_attention",
    "resolve_attention",
    "resolve_decode_loop",
    "splash_attention",
    "xla_attention",
]

"""Continuous batching: a fixed set of decode slots, refilled from a queue as rows finish.

A static batch decodes until its slowest row is done, so with AZR's long-tailed response lengths most of
the device time goes to rows that have already finished. Here every request of a phase waits in one queue;
`slots` rows decode together, and whenever a prompt's rows fit in the free slots it is prefilled (once,
its cache copied into each of its slots) and joins the running batch. A prompt's rows are its n samples and
those of every identical prompt in the call (a task's learnability rollouts are sent as repeats), and the
prompts joining at once are prefilled in groups of one prompt bucket, so a short prompt is not padded to a
long one. Each slot has its own cache write index and
RoPE position (`KVCache.index` per row), and decode attention reads only the filled part of the cache.

Randomness belongs to the request, not to the slot: token t of request row r is drawn with
`fold_in(fold_in(key, r), t)`, so the samples are the same whatever slot a row lands in and whatever ran
beside it. Greedy decoding gives today's static sampler's tokens.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from azr_jax import distributed
from azr_jax.model import KVCache, Transformer, batch_split, positions_from_mask
from azr_jax.model.transformer import constrain
from azr_jax.sampling import stops
from azr_jax.sampling.core import Samples, sample_logits
from azr_jax.shapes import bucket


class _Slots(NamedTuple):
    cache: KVCache  # index [S]: each slot's next cache slot
    tok: jax.Array  # [S] int32 the last sampled token
    pos: jax.Array  # [S] int32 the RoPE position of the next token
    step: jax.Array  # [S] int32 tokens generated so far
    live: jax.Array  # [S] bool: decoding (False: free, or finished and not yet read)
    stopped: jax.Array  # [S] bool: ended by a stop token (not by max_new_tokens)
    row: jax.Array  # [S] int32 the request row in the slot (its randomness derives from it)
    tokens: jax.Array  # [S, max_new_tokens] int32
    logp: jax.Array  # [S, max_new_tokens] float32
    stop_state: jax.Array  # [S, stop strings] int32: each stop string's automaton state (`stops.py`)
    limit: jax.Array  # [S] int32: the row's token budget (<= max_new_tokens)


_AXES = _Slots(KVCache.logical_axes()._replace(index=("batch",)), *[("batch",)] * 6, *[("batch", None)] * 3, ("batch",))


@dataclasses.dataclass(frozen=True)
class _Shape:
    slots: int
    cache_len: int  # the longest prompt's bucket + max_new_tokens
    sampling: object  # sampler._Static: max_new_tokens, temperature, top_p, top_k, n, stop_ids, cache_dtype


def _constrain(slots: _Slots) -> _Slots:
    return jax.tree.map(constrain, slots, _AXES, is_leaf=lambda x: type(x) is tuple)


def _pick(key, rows, steps, logits, st):
    """One token per row, drawn with the row's own key for this position; log p under softmax(logits / T)."""
    if st.temperature == 0.0:
        tok = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    else:
        keys = jax.vmap(lambda r, s: jax.random.fold_in(jax.random.fold_in(key, r), s))(rows, steps)
        tok = jax.vmap(lambda k, x: sample_logits(k, x[None], st.temperature, st.top_p, st.top_k)[0])(keys, logits)
    scaled = logits / st.temperature if st.temperature > 0.0 else logits
    logp = jnp.take_along_axis(jax.nn.log_softmax(scaled, axis=-1), tok[:, None], axis=-1)[:, 0]
    return tok, logp


def _stop(tables, state, tok, stop_ids):
    """(new automaton state, stopped): a stop token, or a stop string completed by this token."""
    hit = jnp.isin(tok, stop_ids)
    if tables is None:
        return state, hit
    state, stopped = stops.advance(tables, state, tok)
    return state, hit | stopped


@functools.partial(jax.jit, static_argnames=("cfg", "shape", "num_stops"))
def _empty(*, cfg, shape: _Shape, num_stops: int) -> _Slots:
    s, new = shape.slots, shape.sampling.max_new_tokens
    cache = KVCache.create(cfg, s, shape.cache_len, jnp.dtype(shape.sampling.cache_dtype))
    cache = cache._replace(index=jnp.zeros((s,), jnp.int32))
    zeros, false = jnp.zeros((s,), jnp.int32), jnp.zeros((s,), bool)
    out = jnp.zeros((s, new), jnp.int32)
    stop_state = jnp.zeros((s, num_stops), jnp.int32)
    return _constrain(
        _Slots(cache, zeros, zeros, zeros, false, false, zeros - 1, out, out.astype(jnp.float32), stop_state, zeros)
    )


@functools.partial(jax.jit, static_argnames=("graphdef", "shape"), donate_argnames=("slots",))
def _insert(
    graphdef, state, slots: _Slots, tokens, valid, src, limits, where, rows, key, tables, *, shape: _Shape
) -> _Slots:
    """Prefills u distinct prompts ([u, P], left-padded) once and places rows in slots `where` ([r]; an index
    >= slots marks a filler row, dropped): row j continues prompt `src[j]` with its token budget `limits[j]`
    and its request row `rows[j]`, starting from its first token."""
    model: Transformer = nnx.merge(graphdef, state)
    st = shape.sampling
    p = tokens.shape[1]
    r = where.shape[0]
    positions = positions_from_mask(valid)
    h, k, v = model.prefill(tokens, positions, valid)  # [layers, u, p, K, D]: placed straight into the slots
    tok, logp = _pick(key, rows, jnp.zeros_like(rows), model.logits(h[:, -1:])[src, 0], st)
    fresh = slots.stop_state[:1].repeat(r, 0) if tables is None else stops.initial_state(tables, r)
    stop_state, stop = _stop(tables, fresh, tok, jnp.asarray(st.stop_ids, jnp.int32))
    c = slots.cache
    row_valid = jnp.zeros((r, shape.cache_len), bool).at[:, :p].set(valid[src])
    put = lambda x, value: x.at[where].set(value, mode="drop")  # noqa: E731
    # Each slot takes its prompt's keys and values or keeps its own: a select over the slot axis, where a scatter
    # at traced slots would make XLA gather every device's share of the batch-sharded cache (the whole cache).
    slot_row = jnp.full((shape.slots,), r, jnp.int32).at[where].set(jnp.arange(r, dtype=jnp.int32), mode="drop")
    fills, prompt_of_slot = slot_row < r, src[jnp.minimum(slot_row, r - 1)]

    def place(cache, new):  # cache [layers, S, K, C, D]; new [layers, u, p, K, D]
        mine = constrain(new[:, prompt_of_slot].swapaxes(2, 3).astype(cache.dtype), KVCache.logical_axes().k)
        return cache.at[:, :, :, :p, :].set(jnp.where(fills[None, :, None, None, None], mine, cache[:, :, :, :p, :]))

    cache = KVCache(place(c.k, k), place(c.v, v), put(c.valid, row_valid), put(c.index, p))
    first = lambda x, dtype: jnp.zeros((r, st.max_new_tokens), dtype).at[:, 0].set(x)  # noqa: E731
    return _constrain(
        _Slots(
            cache,
            put(slots.tok, tok),
            put(slots.pos, positions[src, -1] + 1),
            put(slots.step, 1),
            put(slots.live, ~stop & (limits > 1)),
            put(slots.stopped, stop),
            put(slots.row, rows),
            put(slots.tokens, first(tok, jnp.int32)),
            put(slots.logp, first(logp, jnp.float32)),
            put(slots.stop_state, stop_state),
            put(slots.limit, limits),
        )
    )


@functools.partial(jax.jit, static_argnames=("graphdef", "shape"), donate_argnames=("slots",))
def _decode(graphdef, state, slots: _Slots, key, target_free, tables, *, shape: _Shape) -> _Slots:
    """Decodes every live slot until at least `target_free` slots are not live (or none is)."""
    model: Transformer = nnx.merge(graphdef, state)
    st = shape.sampling
    s = shape.slots
    stop_ids = jnp.asarray(st.stop_ids, jnp.int32)
    ar = jnp.arange(s)

    def cond(c: _Slots):
        return jnp.any(c.live) & (jnp.sum(~c.live) < target_free)

    def body(c: _Slots):
        h, cache = model.hidden(c.tok[:, None], c.pos[:, None], c.live[:, None], c.cache)
        tok, logp = _pick(key, c.row, c.step, model.logits(h)[:, 0], st)
        at = jnp.where(c.live, c.step, st.max_new_tokens)  # finished rows write nowhere
        stop_state, stop = _stop(tables, c.stop_state, tok, stop_ids)
        stop = c.live & stop
        step = c.step + c.live
        return _constrain(
            _Slots(
                cache._replace(index=jnp.where(c.live, cache.index, c.cache.index)),
                tok,
                c.pos + 1,
                step,
                c.live & ~stop & (step < c.limit),
                c.stopped | stop,
                c.row,
                c.tokens.at[ar, at].set(tok, mode="drop"),
                c.logp.at[ar, at].set(logp, mode="drop"),
                jnp.where(c.live[:, None], stop_state, c.stop_state),
                c.limit,
            )
        )

    return jax.lax.while_loop(cond, body, slots)


@jax.jit
def _take(slots: _Slots, idx):
    return slots.tokens[idx], slots.logp[idx], slots.step[idx], slots.stopped[idx], slots.row[idx]


class _Request(NamedTuple):
    prompt: int  # index of the prompt in the call
    rows: list[int]  # the request rows it fills (prompt i's n samples are rows i*n .. i*n+n-1)
    limit: int


def requests(prompts: Sequence[Sequence[int]], limits: Sequence[int], n: int, slots: int) -> list[_Request]:
    """The queue: each distinct (prompt, token budget) once, in order of first appearance, with every row
    asking for it, so identical prompts (a task's learnability rollouts, sent as repeats, and its solver
    prompt) share one prefill. A request has at most `slots` rows, so it always fits an empty batch."""
    rows: dict[tuple, list[int]] = {}
    first: dict[tuple, int] = {}
    for i, (p, limit) in enumerate(zip(prompts, limits)):
        key = (tuple(p), limit)
        first.setdefault(key, i)
        rows.setdefault(key, []).extend(range(i * n, i * n + n))
    return [_Request(first[key], r[j : j + slots], key[1]) for key, r in rows.items() for j in range(0, len(r), slots)]


def slot_count(sampler, total_rows: int, longest_bucket: int, params) -> int:
    """The decode slots of a call of `total_rows` rows whose longest prompt is in `longest_bucket`: the rows'
    bucket, at most `Sampler.rows_per_call`, a multiple of the batch mesh axes (so the slots are split)."""
    split = batch_split(sampler._mesh())
    slots = bucket(total_rows, 1)
    cap = sampler.rows_per_call(longest_bucket, params)
    if cap is not None:
        slots = min(slots, cap)
    slots = max(split, -(-slots // split) * split if cap is None else slots // split * split)
    if slots < params.n or (cap is not None and slots > cap):
        raise ValueError(
            f"one prompt's {params.n} samples do not fit the sampler's bound of {cap} rows (sampling.max_rows="
            f"{sampler.max_rows}, sampling.kv_cache_gib={sampler.kv_cache_gib}, batch axes {split})"
        )
    return slots


def prefill_prompts(sampler, prompt_bucket: int) -> int | None:
    """The most distinct prompts one prefill takes at this bucket under `sampling.prefill_tokens` (a power of two,
    at least one; None: no bound). A prefill's activations and its copy of the prompts' keys and values grow with
    its tokens: a slot count's worth of 6k-token prompts at once was a 14B plan's peak."""
    if not sampler.prefill_tokens:
        return None
    return 1 << max(0, (sampler.prefill_tokens // prompt_bucket).bit_length() - 1)


def generate(sampler, prompts: Sequence[Sequence[int]], params, key, limits: Sequence[int]) -> Samples:
    """`Sampler.generate` with continuous batching: every prompt's n samples, in request order."""
    st, n = sampler.static(params), params.n
    total = len(prompts) * n
    prompt_bucket = sampler.prompt_bucket
    longest = prompt_bucket(max(map(len, prompts)))
    mesh = sampler._mesh()
    slots = slot_count(sampler, total, longest, params)
    shape = _Shape(slots, longest + params.max_new_tokens, st)
    graphdef, state = nnx.split(sampler.model)
    replicated = None if mesh is None else NamedSharding(mesh, P())

    def put(x):
        return x if replicated is None else distributed.put(x, replicated)

    def insert(device, batch: list[_Request], free: list[int]):
        """One prefill of the batch's prompts (all of one prompt bucket) into slots `free`."""
        p = prompt_bucket(max(len(prompts[q.prompt]) for q in batch))
        u, r = bucket(len(batch), 1), bucket(sum(len(q.rows) for q in batch), 1)  # few shapes
        tokens, valid = np.zeros((u, p), np.int32), np.zeros((u, p), bool)
        for j, q in enumerate(batch + [batch[0]] * (u - len(batch))):
            ids = prompts[q.prompt]
            tokens[j, p - len(ids) :], valid[j, p - len(ids) :] = ids, True
        src, budget, rows = np.zeros(r, np.int32), np.ones(r, np.int32), np.zeros(r, np.int32)
        where = np.full(r, slots, np.int32)
        j = 0
        for u_index, q in enumerate(batch):
            for row in q.rows:
                src[j], budget[j], rows[j], where[j] = u_index, q.limit, row, free[j]
                j += 1
        arrays = map(put, (tokens, valid, src, budget, where, rows))
        return _insert(graphdef, state, device, *arrays, key, tables, shape=shape)

    tables = sampler.stop_tables(params.stop_strings, replicated)
    num_stops = 0 if tables is None else int(tables.init.shape[0])
    with jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext():
        device = _empty(cfg=sampler.model.cfg, shape=shape, num_stops=num_stops)
        queue = collections.deque(requests(prompts, limits, n, slots))
        free, busy = list(range(slots)), set()
        out_tokens = np.zeros((total, params.max_new_tokens), np.int32)
        out_logp = np.zeros((total, params.max_new_tokens), np.float32)
        lengths, done = np.zeros(total, np.int32), np.zeros(total, bool)
        while queue or busy:
            joining, taken = [], 0  # in queue order, while the next request's rows fit in the free slots
            while queue and taken + len(queue[0].rows) <= len(free):
                taken += len(queue[0].rows)
                joining.append(queue.popleft())
            by_bucket: dict[int, list[_Request]] = {}  # a short prompt is not padded to a long one's bucket
            for q in joining:
                by_bucket.setdefault(prompt_bucket(len(prompts[q.prompt])), []).append(q)
            for bucket_, group in by_bucket.items():
                size = prefill_prompts(sampler, bucket_) or len(group)
                for batch in (group[i : i + size] for i in range(0, len(group), size)):
                    used = sum(len(q.rows) for q in batch)
                    device = insert(device, batch, free[:used])
                    busy.update(free[:used])
                    free = free[used:]
            # Refill as soon as the next request fits; at the end, drain.
            target = len(queue[0].rows) if queue else slots
            device = _decode(graphdef, state, device, key, put(np.int32(target)), tables, shape=shape)
            live = distributed.to_host(device.live)
            finished = sorted(s for s in busy if not live[s])
            if finished:
                idx = np.zeros(bucket(len(finished), 1), np.int32)
                idx[: len(finished)] = finished
                toks, logp, steps, stopped, rows = distributed.to_host(_take(device, put(idx)))
                for j in range(len(finished)):
                    r = rows[j]
                    out_tokens[r], out_logp[r], lengths[r], done[r] = toks[j], logp[j], steps[j], stopped[j]
                busy.difference_update(finished)
                free = sorted(free + finished)
    return sampler.samples(out_tokens, out_logp, lengths, done, params)

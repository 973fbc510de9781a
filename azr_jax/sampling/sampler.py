"""Prefill + decode with a KV cache: the `Sampler` API and the static engine (the settings, results, token
sampling and host-side stop-string cut both engines share are in `core.py`).

`Sampler.generate` runs the continuous engine by default (`continuous.py`: decode slots refilled from the
request queue as rows finish; stop strings checked on device by `stops.py`). The static engine, kept as the
baseline, samples a request in fixed batches; one jitted function does a batch's generation: prefill of
left-padded prompts into a cache sized
`prompt bucket + max_new_tokens`, then a `lax.while_loop` of one-token steps that stops as soon as every
row is done. The cache lives in the loop carry, so XLA updates it in place (no copy per step). Prompt
lengths (half octaves, `shapes.prompt_bucket`) and batch sizes (powers of two) are rounded up to buckets,
so a run compiles a bounded number of shapes.

The model's parameter arrays are passed in as they are (sharded, fp32 masters cast to the compute
dtype inside the step), so sampling and training share one copy of the weights.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from azr_jax import distributed
from azr_jax.model import KVCache, batch_split, Transformer, logical_sharding, positions_from_mask
from azr_jax.model.transformer import constrain
from azr_jax.sampling import continuous
from azr_jax.sampling.core import Samples, SamplingParams, StopString, TokenBytes, cut_at_stop, sample_logits
from azr_jax.sampling.stops import StopAutomaton
from azr_jax.shapes import bucket, prompt_bucket


@dataclasses.dataclass(frozen=True)
class _Static:
    max_new_tokens: int
    temperature: float
    top_p: float
    top_k: int
    n: int
    stop_ids: tuple[int, ...]
    cache_dtype: str


@functools.partial(jax.jit, static_argnames=("graphdef", "static"))
def _generate(graphdef, state, tokens, valid, limits, key, *, static: _Static):
    model: Transformer = nnx.merge(graphdef, state)
    b, p = tokens.shape
    cfg = model.cfg
    cache = KVCache.create(cfg, b, p + static.max_new_tokens, jnp.dtype(static.cache_dtype))
    cache = jax.tree.map(constrain, cache, KVCache.logical_axes())
    positions = positions_from_mask(valid)
    h, cache = model.hidden(tokens, positions, valid, cache, prefill=True)
    last_logits = model.logits(h[:, -1:])[:, 0]
    next_pos = positions[:, -1] + 1
    if static.n > 1:  # n samples share the prefill: repeat the prompt's cache rows
        rep = lambda x: jnp.repeat(x, static.n, axis=0)  # noqa: E731
        cache = KVCache(
            rep(cache.k.swapaxes(0, 1)).swapaxes(0, 1),
            rep(cache.v.swapaxes(0, 1)).swapaxes(0, 1),
            rep(cache.valid),
            cache.index,
        )
        last_logits, next_pos, limits = rep(last_logits), rep(next_pos), rep(limits)
    rows = b * static.n
    stop_ids = jnp.asarray(static.stop_ids, jnp.int32)

    def pick(step, logits):
        k = jax.random.fold_in(key, step)
        tok = sample_logits(k, logits, static.temperature, static.top_p, static.top_k)
        scaled = logits / static.temperature if static.temperature > 0.0 else logits  # the update divides by T too
        logp = jnp.take_along_axis(jax.nn.log_softmax(scaled, axis=-1), tok[:, None], axis=-1)[:, 0]
        return tok, logp

    tok, logp = pick(0, last_logits)
    out_tokens = jnp.zeros((rows, static.max_new_tokens), jnp.int32).at[:, 0].set(tok)
    out_logp = jnp.zeros((rows, static.max_new_tokens), jnp.float32).at[:, 0].set(logp)
    done = jnp.isin(tok, stop_ids)
    lengths = jnp.ones((rows,), jnp.int32)
    finished = lambda done, lengths: done | (lengths >= limits)  # noqa: E731 - a stop, or the row's token budget

    def cond(carry):
        step, _, _, _, done, lengths, *_ = carry
        return (step < static.max_new_tokens) & ~jnp.all(finished(done, lengths))

    def body(carry):
        step, cache, tok, pos, done, lengths, out_tokens, out_logp = carry
        over = finished(done, lengths)  # finished rows keep their shape but read no cache
        h, cache = model.hidden(tok[:, None], pos[:, None], ~over[:, None], cache)
        tok, logp = pick(step, model.logits(h)[:, 0])
        tok = jnp.where(over, 0, tok)
        out_tokens = out_tokens.at[:, step].set(tok)
        out_logp = out_logp.at[:, step].set(jnp.where(over, 0.0, logp))
        lengths = lengths + (~over).astype(jnp.int32)
        done = done | (~over & jnp.isin(tok, stop_ids))
        return step + 1, cache, tok, pos + 1, done, lengths, out_tokens, out_logp

    carry = (jnp.int32(1), cache, tok, next_pos, done, lengths, out_tokens, out_logp)
    _, _, _, _, done, lengths, out_tokens, out_logp = jax.lax.while_loop(cond, body, carry)
    return out_tokens, out_logp, lengths, done


ENGINES = ("continuous", "static")


class Sampler:
    """Generates from a model with a tokenizer; `generate` for token ids, `generate_text` for strings."""

    def __init__(
        self,
        model: Transformer,
        tokenizer,
        *,
        cache_dtype: str | None = None,
        max_rows: int = 0,
        kv_cache_gib: float = 0.0,
        engine: str = "continuous",
        prefill_tokens: int = 0,
    ):
        """`max_rows` (rows = prompts x n) and `kv_cache_gib` (the KV cache of one call, per device) bound
        the rows decoded at once (0: no bound). `engine`: "continuous" keeps that many decode slots busy,
        refilling them from the request queue as rows finish (`continuous.py`); "static" samples the request
        in fixed batches, each decoding until its slowest row is done (kept as the benchmark's baseline).
        `prefill_tokens` bounds the prompt tokens (prompts x their bucket) of one continuous prefill (0: none)."""
        if engine not in ENGINES:
            raise ValueError(f"sampler engine {engine!r}; choose from {ENGINES}")
        self.engine = engine
        self.model, self.tokenizer = model, tokenizer
        self.cache_dtype = cache_dtype or model.cfg.compute_dtype
        self.max_rows, self.kv_cache_gib, self.prefill_tokens = max_rows, kv_cache_gib, prefill_tokens
        special = {getattr(tokenizer, "eos_token_id", None), getattr(tokenizer, "pad_token_id", None)}
        self.default_stop_ids = tuple(sorted(special - {None}))

    def prompt_bucket(self, n: int) -> int:
        """The prompt length a call compiles for: a half-octave step (`shapes.prompt_bucket`: at most 50%
        padding, which a prefill computes)."""
        return prompt_bucket(n)

    def _mesh(self):
        leaf = jax.tree.leaves(nnx.state(self.model))[0]
        return getattr(leaf.sharding, "mesh", None)

    def _padded_batch(self, n_prompts: int) -> int:
        """The batch a call of n_prompts prompts compiles for: its bucket, rounded up to what the batch mesh
        axes divide (so rows are split, not replicated)."""
        split = batch_split(self._mesh())
        return -(-bucket(n_prompts, 1) // split) * split

    def rows_per_call(self, prompt_bucket: int, params: SamplingParams) -> int | None:
        """The most rows (prompts x n) one call may have under `max_rows` and `kv_cache_gib`; None: no bound."""
        bounds = [self.max_rows] if self.max_rows else []
        if self.kv_cache_gib:
            cfg, mesh = self.model.cfg, self._mesh()
            kv_split = 1
            if mesh is not None and cfg.num_kv_heads % mesh.shape["tensor"] == 0:
                kv_split = mesh.shape["tensor"]
            slots = prompt_bucket + params.max_new_tokens
            row_bytes = (
                2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * slots * jnp.dtype(self.cache_dtype).itemsize
            )
            per_device = int(self.kv_cache_gib * 2**30 * kv_split // row_bytes)  # rows of the cache one device holds
            bounds.append(per_device * batch_split(mesh))
        return min(bounds) if bounds else None

    def call_shape(self, n_prompts: int, longest: int, params: SamplingParams) -> tuple[int, int, int]:
        """(prompts per call, the batch a full call compiles for, the prompt bucket) of a request of n_prompts
        prompts whose longest has `longest` tokens, under `rows_per_call`."""
        p = self.prompt_bucket(longest)
        cap = self.rows_per_call(p, params)
        per_call = n_prompts
        if cap is not None:
            per_call = min(per_call, cap // params.n)
            while per_call and self._padded_batch(per_call) * params.n > cap:
                per_call -= 1
            if not per_call:
                raise ValueError(
                    f"one prompt's {params.n} samples (padded to {self._padded_batch(1) * params.n} rows) exceed the "
                    f"sampler's bound of {cap} rows per call (sampling.max_rows={self.max_rows}, "
                    f"sampling.kv_cache_gib={self.kv_cache_gib})"
                )
        return per_call, self._padded_batch(per_call), p

    def static(self, params: SamplingParams) -> "_Static":
        """The compile-time settings of a call with these parameters."""
        return _Static(
            params.max_new_tokens,
            float(params.temperature),
            float(params.top_p),
            int(params.top_k),
            params.n,
            tuple(self.default_stop_ids if params.stop_token_ids is None else params.stop_token_ids),
            self.cache_dtype,
        )

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams,
        seed: int | jax.Array = 0,
        limits: Sequence[int] | None = None,
    ) -> Samples:
        """n samples of every prompt (`limits`: each prompt's token budget, at most max_new_tokens; a request's
        own `max_tokens`). The static engine splits the request into calls of at most `rows_per_call` rows (the
        samples of one prompt always share a call; the call that starts at prompt i > 0 draws with
        `fold_in(key, i)`); the continuous engine decodes that many rows at a time (`continuous.py`)."""
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        limits = [params.max_new_tokens] * len(prompts) if limits is None else [int(x) for x in limits]
        if len(limits) != len(prompts) or not all(1 <= x <= params.max_new_tokens for x in limits):
            raise ValueError(f"limits: one per prompt, each in [1, max_new_tokens={params.max_new_tokens}]")
        key = jax.random.key(seed) if isinstance(seed, int) else seed
        if self.engine == "continuous":
            return continuous.generate(self, prompts, params, key, limits)
        per_call, _, _ = self.call_shape(len(prompts), max(map(len, prompts)), params)
        parts = [
            self._generate_call(
                prompts[i : i + per_call],
                params,
                key if i == 0 else jax.random.fold_in(key, i),
                limits[i : i + per_call],
            )
            for i in range(0, len(prompts), per_call)
        ]
        if len(parts) == 1:
            return parts[0]
        return Samples(
            *(np.concatenate([getattr(x, f) for x in parts]) for f in ("tokens", "lengths", "done", "logprobs")),
            np.repeat(np.arange(len(prompts)), params.n),
            [t for x in parts for t in x.texts],
        )

    def _generate_call(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams, key: jax.Array, limits: Sequence[int]
    ) -> Samples:
        n_prompts = len(prompts)
        p = self.prompt_bucket(max(map(len, prompts)))
        mesh = self._mesh()
        b = self._padded_batch(n_prompts)
        tokens = np.zeros((b, p), np.int32)
        valid = np.zeros((b, p), bool)
        for i, ids in enumerate(prompts):
            tokens[i, p - len(ids) :], valid[i, p - len(ids) :] = ids, True
        tokens[n_prompts:, -1], valid[n_prompts:, -1] = tokens[0, -1], True  # filler rows, dropped below
        budget = np.ones(b, np.int32)
        budget[:n_prompts] = limits
        static = self.static(params)
        graphdef, state = nnx.split(self.model)
        if mesh is not None:
            batch = logical_sharding(("batch", None), mesh, tokens.shape)
            tokens, valid = distributed.put(tokens, batch), distributed.put(valid, batch)
            budget = distributed.put(budget, logical_sharding(("batch",), mesh, budget.shape))
            with jax.set_mesh(mesh):
                out = _generate(graphdef, state, tokens, valid, budget, key, static=static)
        else:
            out = _generate(graphdef, state, tokens, valid, budget, key, static=static)
        out_tokens, out_logp, lengths, done = (np.array(x) for x in distributed.to_host(out))
        keep = n_prompts * params.n
        return self.samples(out_tokens[:keep], out_logp[:keep], lengths[:keep], done[:keep], params)

    def samples(self, tokens, logprobs, lengths, done, params: SamplingParams) -> Samples:
        """Decoded rows (prompt-major, n per prompt) as `Samples`, each cut after its earliest stop string on the
        host (linear per row; authoritative where the device check does not apply) and zeroed past its end."""
        texts = []
        for row in range(len(tokens)):
            text, cut = self._apply_stop_strings(tokens[row, : lengths[row]], params.stop_strings)
            if cut is not None:
                lengths[row], done[row] = cut, True
            tokens[row, lengths[row] :], logprobs[row, lengths[row] :] = 0, 0.0
            texts.append(text)
        return Samples(tokens, lengths, done, logprobs, np.repeat(np.arange(len(tokens) // params.n), params.n), texts)

    @functools.cached_property
    def token_bytes(self) -> "TokenBytes | None":
        return TokenBytes.build(self.tokenizer)

    def stop_tables(self, stop_strings: Sequence[StopString], sharding=None):
        """The device tables of `stop_strings` for checking them inside the decode loop (`stops.py`), built once
        per set; None when there are none or the tokenizer's bytes are unknown (the host cut then does it all)."""
        if not stop_strings or self.token_bytes is None:
            return None
        cache = self.__dict__.setdefault("_stop_tables", {})
        if stop_strings not in cache:
            automaton = StopAutomaton.build(stop_strings, self.token_bytes)
            cache[stop_strings] = automaton.arrays(sharding) if automaton.stops else None
        return cache[stop_strings]

    def _apply_stop_strings(self, ids: np.ndarray, stop_strings: Sequence[StopString]) -> tuple[str, int | None]:
        """(text, cut): text up to and including the earliest-ending stop; cut = the tokens that produce it."""
        return cut_at_stop(self.tokenizer, ids, stop_strings, self.token_bytes if stop_strings else None)

    def generate_text(self, prompts: Sequence[str], params: SamplingParams, seed: int = 0) -> list[list[str]]:
        """n completions per prompt string (the prompt is tokenized as is, no special tokens added)."""
        ids = [self.tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
        samples = self.generate(ids, params, seed)
        return [samples.texts[i * params.n : (i + 1) * params.n] for i in range(len(prompts))]

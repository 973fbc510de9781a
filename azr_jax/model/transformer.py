"""The decoder-only transformer of the Qwen2.5 and Llama families, in Flax NNX.

Layers are stacked along a leading "layers" axis and run with `jax.lax.scan`, so a 48-layer model
compiles as fast as a 1-layer one. Weights are stored as `x @ W` with the heads split out
(q: [embed, heads, head_dim]), which is what the sharding rules name.

Attention without a cache (training, and prefill into an empty cache) is `cfg.attention`: a memory-efficient
kernel that never builds the [T, T] score matrix (model/attention.py). Attention of decoded tokens covers the
valid cache slots and, causally, the new tokens themselves; the new keys and values are written into the
cache once, after the layer loop, so the large cache is
only read inside the loop (no per-layer copies). Left padding is handled by the validity mask, and rotary
positions are passed in explicitly, so padded and unpadded rows give the same numbers.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from azr_jax.model.attention import attend, ragged_decode_attention
from azr_jax.model.config import ModelConfig
from azr_jax.model.sharding import logical_to_spec


class KVCache(NamedTuple):
    k: jax.Array  # [layers, batch, kv_heads, slots, head_dim]: (batch, head) leading, as attention reads it
    v: jax.Array
    valid: jax.Array  # [batch, slots] bool: the slot holds a real (not padding) token
    # The next slot to write: an int32 scalar (every row writes at the same slot), or [batch] int32, a slot
    # per row (continuous batching: rows start and end independently; one new token per row per call).
    index: jax.Array

    @classmethod
    def create(cls, cfg: ModelConfig, batch: int, slots: int, dtype=jnp.bfloat16) -> "KVCache":
        shape = (cfg.num_layers, batch, cfg.num_kv_heads, slots, cfg.head_dim)
        return cls(
            jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((batch, slots), bool), jnp.zeros((), jnp.int32)
        )

    @staticmethod
    def logical_axes() -> "KVCache":
        kv = ("layers", "batch", "kv_heads", "cache_seq", "head_dim")
        return KVCache(kv, kv, ("batch", "cache_seq"), ())


def constrain(x: jax.Array, axes: tuple[str | None, ...]) -> jax.Array:
    """Sharding constraint by logical axes, when a mesh is set (`jax.set_mesh`); a no-op otherwise."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_spec(axes, mesh, x.shape))


def rope_frequencies(cfg: ModelConfig) -> np.ndarray:
    """Inverse frequencies, float32 as Hugging Face computes them (with Llama 3.1 scaling if set)."""
    d = cfg.head_dim
    inv = 1.0 / (np.float32(cfg.rope_theta) ** (np.arange(0, d, 2, dtype=np.float32) / np.float32(d)))
    inv = inv.astype(np.float32)
    if cfg.rope_scaling:
        s = dict(cfg.rope_scaling)
        old = s["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old / s["low_freq_factor"], old / s["high_freq_factor"]
        wavelen = 2 * np.pi / inv
        scaled = np.where(wavelen > low_wavelen, inv / s["factor"], inv)
        smooth = (old / wavelen - s["low_freq_factor"]) / (s["high_freq_factor"] - s["low_freq_factor"])
        smoothed = (1 - smooth) * scaled / s["factor"] + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        inv = np.where(medium, smoothed, scaled).astype(np.float32)
    return inv


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: np.ndarray) -> jax.Array:
    """Rotary embedding in the rotate-half layout. x: [B, T, N, D], positions: [B, T]."""
    freqs = positions[..., None].astype(jnp.float32) * inv_freq  # [B, T, D/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]
    cos, sin = jnp.cos(emb).astype(x.dtype), jnp.sin(emb).astype(x.dtype)
    x1, x2 = jnp.split(x, 2, axis=-1)
    return x * cos + jnp.concatenate([-x2, x1], axis=-1) * sin


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return scale.astype(x.dtype) * y.astype(x.dtype)


def _remat(fn, policy: str):
    if policy == "none":
        return fn
    saveable = {
        "full": jax.checkpoint_policies.nothing_saveable,
        "save_dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    }[policy]
    return jax.checkpoint(fn, policy=saveable)


class Transformer(nnx.Module):
    """Token ids -> logits. `__call__` returns (logits, cache); `hidden` + `logits` split the two."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        pdt = jnp.dtype(cfg.param_dtype)
        e, h, k, d, m, v, n = (
            cfg.hidden_size,
            cfg.num_heads,
            cfg.num_kv_heads,
            cfg.head_dim,
            cfg.intermediate_size,
            cfg.vocab_size,
            cfg.num_layers,
        )
        normal = nnx.initializers.normal(0.02)

        def param(shape, axes, init=normal):
            return nnx.Param(init(rngs.params(), shape, pdt), axes=axes)

        ones, zeros = nnx.initializers.ones, nnx.initializers.zeros
        self.embed = param((v, e), ("vocab", "embed"))
        self.attn_norm = param((n, e), ("layers", "norm"), ones)
        self.q = param((n, e, h, d), ("layers", "embed", "heads", "head_dim"))
        self.k = param((n, e, k, d), ("layers", "embed", "kv_heads", "head_dim"))
        self.v = param((n, e, k, d), ("layers", "embed", "kv_heads", "head_dim"))
        if cfg.qkv_bias:
            self.q_bias = param((n, h, d), ("layers", "heads", "head_dim"), zeros)
            self.k_bias = param((n, k, d), ("layers", "kv_heads", "head_dim"), zeros)
            self.v_bias = param((n, k, d), ("layers", "kv_heads", "head_dim"), zeros)
        self.o = param((n, h, d, e), ("layers", "heads", "head_dim", "embed"))
        self.mlp_norm = param((n, e), ("layers", "norm"), ones)
        self.gate = param((n, e, m), ("layers", "embed", "mlp"))
        self.up = param((n, e, m), ("layers", "embed", "mlp"))
        self.down = param((n, m, e), ("layers", "mlp", "embed"))
        self.final_norm = param((e,), ("norm",), ones)
        if not cfg.tie_word_embeddings:
            self.lm_head = param((e, v), ("embed", "vocab"))

    LAYER_PARAMS = ("attn_norm", "q", "k", "v", "q_bias", "k_bias", "v_bias", "o", "mlp_norm", "gate", "up", "down")

    def _layer_weights(self) -> dict[str, jax.Array]:
        return {name: getattr(self, name)[...] for name in self.LAYER_PARAMS if hasattr(self, name)}

    def _block(self, x, w, positions, valid, cache_kv=None, cache_valid=None, filled=None, layer=None):
        """One decoder layer; returns the new activations and this layer's new keys and values."""
        cfg, cdt = self.cfg, jnp.dtype(self.cfg.compute_dtype)
        w = jax.tree.map(lambda a: a.astype(cdt), w)
        inv_freq = rope_frequencies(cfg)
        hn = rms_norm(x, w["attn_norm"], cfg.rms_norm_eps)
        q = jnp.einsum("bte,ehd->bthd", hn, w["q"])
        k = jnp.einsum("bte,ekd->btkd", hn, w["k"])
        v = jnp.einsum("bte,ekd->btkd", hn, w["v"])
        if cfg.qkv_bias:
            q, k, v = q + w["q_bias"], k + w["k_bias"], v + w["v_bias"]
        q, k = apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq)
        if cache_kv is None:  # training, or prefill into an empty cache: the configured implementation
            attn = attend(q, k, v, valid, cfg.attention)
        else:  # decoding: a few new tokens over the filled part of the cache only
            per_row = {"per_row": True, "batch": False, "auto": None}[cfg.decode_loop]
            attn = ragged_decode_attention(q, k, v, valid, *cache_kv, cache_valid, filled, layer=layer, per_row=per_row)
        x = x + jnp.einsum("bthd,hde->bte", attn, w["o"])
        hn = rms_norm(x, w["mlp_norm"], cfg.rms_norm_eps)
        mlp = jax.nn.silu(jnp.einsum("bte,em->btm", hn, w["gate"])) * jnp.einsum("bte,em->btm", hn, w["up"])
        x = x + jnp.einsum("btm,me->bte", constrain(mlp, ("batch", "seq", "mlp")), w["down"])
        return constrain(x, ("batch", "seq", None)), (k, v)

    def hidden(
        self,
        tokens: jax.Array,
        positions: jax.Array,
        token_valid: jax.Array | None = None,
        cache: KVCache | None = None,
        *,
        prefill: bool = False,
    ) -> tuple[jax.Array, KVCache | None]:
        """Final-norm hidden states [B, T, E] (compute dtype) and the updated cache.

        tokens, positions: [B, T] int; token_valid: [B, T] bool (False on padding; default all True).
        prefill: the cache holds nothing yet, so the new tokens attend only to themselves, with the
        configured memory-efficient attention (`cfg.attention`), and are then written into it.
        """
        cfg = self.cfg
        cdt = jnp.dtype(cfg.compute_dtype)
        if token_valid is None:
            token_valid = jnp.ones(tokens.shape, bool)
        x = constrain(self.embed[...].astype(cdt)[tokens], ("batch", "seq", None))
        weights = self._layer_weights()
        if cache is None:

            def body(x, w):
                return self._block(x, w, positions, token_valid)[0], None

            x, _ = jax.lax.scan(_remat(body, cfg.remat), x, weights)
        else:
            if prefill:
                x, (k, v) = self._prefill_layers(x, weights, positions, token_valid)
            else:

                # Each row's written slots; none for a row with no new token (finished or free: its output is unread).
                filled = jnp.where(token_valid.any(-1), cache.index, 0)

                def body(x, layer):  # the stacked cache is read in place, block by block, never sliced per layer
                    w, i = layer
                    return self._block(x, w, positions, token_valid, (cache.k, cache.v), cache.valid, filled, i)

                x, (k, v) = jax.lax.scan(body, x, (weights, jnp.arange(cfg.num_layers)))
            cache = self._write_cache(cache, k, v, token_valid)
        return rms_norm(x, self.final_norm[...], cfg.rms_norm_eps), cache

    def _prefill_layers(self, x, weights, positions, token_valid):
        return jax.lax.scan(lambda x, w: self._block(x, w, positions, token_valid), x, weights)

    def prefill(self, tokens: jax.Array, positions: jax.Array, token_valid: jax.Array):
        """(final-norm hidden states [B, T, E], keys, values [layers, B, T, K, D]) of prompts that attend only to
        themselves: the prompt's cache entries as the layer loop makes them, for a caller that places them
        itself (the continuous engine copies them into its slots) without an intermediate cache."""
        cdt = jnp.dtype(self.cfg.compute_dtype)
        x = constrain(self.embed[...].astype(cdt)[tokens], ("batch", "seq", None))
        x, (k, v) = self._prefill_layers(x, self._layer_weights(), positions, token_valid)
        return rms_norm(x, self.final_norm[...], self.cfg.rms_norm_eps), k, v

    @staticmethod
    def _write_cache(cache: KVCache, k, v, token_valid) -> KVCache:
        """One in-place write of every layer's new keys and values ([layers, B, T, K, D]), after the layer loop."""
        t = k.shape[2]
        if cache.index.ndim == 0:
            write = lambda c, new: jax.lax.dynamic_update_slice_in_dim(  # noqa: E731
                c, new.swapaxes(2, 3).astype(c.dtype), cache.index, axis=3
            )
            valid = jax.lax.dynamic_update_slice_in_dim(cache.valid, token_valid, cache.index, axis=1)
            return KVCache(write(cache.k, k), write(cache.v, v), valid, cache.index + t)
        if t != 1:
            raise ValueError(f"a cache with a write index per row takes one token per row per call, got {t}")
        rows = jnp.arange(k.shape[1])
        # Advanced indices (rows, slot) around a slice put the row axis first: values are [B, layers, K, D].
        write = lambda c, new: c.at[:, rows, :, cache.index, :].set(  # noqa: E731
            new[:, :, 0].swapaxes(0, 1).astype(c.dtype), mode="drop"
        )
        valid = cache.valid.at[rows, cache.index].set(token_valid[:, 0], mode="drop")
        return KVCache(write(cache.k, k), write(cache.v, v), valid, cache.index + 1)

    def logits(self, h: jax.Array) -> jax.Array:
        """float32 logits from hidden states."""
        cdt = jnp.dtype(self.cfg.compute_dtype)
        if self.cfg.tie_word_embeddings:
            return jnp.einsum("bte,ve->btv", h, self.embed[...].astype(cdt), preferred_element_type=jnp.float32)
        return jnp.einsum("bte,ev->btv", h, self.lm_head[...].astype(cdt), preferred_element_type=jnp.float32)

    def __call__(self, tokens, positions, token_valid=None, cache=None):
        h, cache = self.hidden(tokens, positions, token_valid, cache)
        return self.logits(h), cache


def positions_from_mask(token_valid: jax.Array) -> jax.Array:
    """Rotary positions for a left-padded batch: 0 at each row's first real token."""
    return jnp.maximum(jnp.cumsum(token_valid.astype(jnp.int32), axis=-1) - 1, 0)

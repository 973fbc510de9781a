"""Policy-gradient loss pieces (docs/algorithm.md section 5): PPO clip, token-mean, entropy bonus, k3 KL.

Token-mean aggregation divides token sums by `num_tokens`, the number of response tokens in the
whole batch. When a batch is split into microbatches, pass the full batch's count to every
microbatch: the microbatch losses (and metrics) then sum exactly to the full-batch values, so
accumulated gradients equal the full-batch gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_sum_mean(x: jax.Array, mask: jax.Array, num_tokens=None) -> jax.Array:
    """sum(x * mask) / num_tokens; num_tokens defaults to mask.sum() (this batch alone)."""
    mask = mask.astype(jnp.float32)
    if num_tokens is None:
        num_tokens = mask.sum()
    return (x.astype(jnp.float32) * mask).sum() / jnp.maximum(num_tokens, 1.0)


def token_logprobs(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """log pi(token) [B, T] from logits [B, T, V] (logits at t already predict tokens[t])."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]


def entropy_from_logits(logits: jax.Array) -> jax.Array:
    """Per-token entropy [B, T] of softmax(logits [B, T, V]): logsumexp(z) - sum(p * z)."""
    z = logits.astype(jnp.float32)
    p = jax.nn.softmax(z, axis=-1)
    return jax.nn.logsumexp(z, axis=-1) - (p * z).sum(-1)


def kl_k3(logprobs: jax.Array, ref_logprobs: jax.Array) -> jax.Array:
    """Per-token low-variance KL(pi || ref) estimate: exp(d) - d - 1 with d = log ref - log pi.

    Unbiased and always >= 0 under samples from pi; d is clamped to [-20, 20] to keep exp finite.
    """
    d = jnp.clip(ref_logprobs.astype(jnp.float32) - logprobs.astype(jnp.float32), -20.0, 20.0)
    return jnp.exp(d) - d - 1.0


def policy_loss(
    logprobs: jax.Array,
    old_logprobs: jax.Array,
    advantages: jax.Array,
    mask: jax.Array,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    num_tokens=None,
) -> tuple[jax.Array, dict]:
    """PPO clipped surrogate, token-mean aggregated. All inputs [B, T].

    The ratio is clipped to [1 - clip_low, 1 + clip_high] (asymmetric clip-higher, e.g.
    0.2 / 0.28, lets low-probability tokens grow further). Returns (loss, metrics) with metrics
    `pg_loss`, `clip_frac` (tokens where the clipped branch is taken) and `approx_kl`
    (mean of old - new logprob), each token-mean aggregated like the loss.
    """
    log_ratio = logprobs.astype(jnp.float32) - jax.lax.stop_gradient(old_logprobs).astype(jnp.float32)
    ratio = jnp.exp(log_ratio)
    adv = jax.lax.stop_gradient(advantages).astype(jnp.float32)
    unclipped = -adv * ratio
    clipped = -adv * jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
    per_token = jnp.maximum(unclipped, clipped)
    loss = token_sum_mean(per_token, mask, num_tokens)
    metrics = {
        "pg_loss": loss,
        "clip_frac": token_sum_mean((clipped > unclipped).astype(jnp.float32), mask, num_tokens),
        "approx_kl": token_sum_mean(jax.lax.stop_gradient(-log_ratio), mask, num_tokens),
    }
    return loss, metrics


def ppo_loss(
    logprobs: jax.Array,
    old_logprobs: jax.Array,
    advantages: jax.Array,
    mask: jax.Array,
    *,
    entropy: jax.Array | None = None,
    ref_logprobs: jax.Array | None = None,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    entropy_coef: float = 0.001,
    kl_coef: float = 0.0,
    num_tokens=None,
) -> tuple[jax.Array, dict]:
    """Total loss = pg - entropy_coef * entropy + kl_coef * KL_k3, all token-mean aggregated.

    `entropy` is the per-token entropy [B, T] (from `entropy_from_logits`, which the caller may
    compute in chunks to avoid holding [B, T, V] probabilities); needed when entropy_coef != 0.
    `ref_logprobs` is needed when kl_coef != 0. Metrics add `entropy` and `kl` when available.
    """
    loss, metrics = policy_loss(
        logprobs,
        old_logprobs,
        advantages,
        mask,
        clip_low=clip_low,
        clip_high=clip_high,
        num_tokens=num_tokens,
    )
    if entropy is not None:
        ent = token_sum_mean(entropy, mask, num_tokens)
        loss = loss - entropy_coef * ent
        metrics["entropy"] = ent
    elif entropy_coef != 0.0:
        raise ValueError("entropy_coef != 0 needs the per-token entropy")
    if ref_logprobs is not None:
        kl = token_sum_mean(kl_k3(logprobs, ref_logprobs), mask, num_tokens)
        loss = loss + kl_coef * kl
        metrics["kl"] = kl
    elif kl_coef != 0.0:
        raise ValueError("kl_coef != 0 needs ref_logprobs")
    metrics["loss"] = loss
    return loss, metrics
